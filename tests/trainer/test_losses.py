"""InfoNCE, FLOPS and the lambda schedule against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from splade_es.trainer import losses


def test_info_nce_is_cross_entropy_over_in_batch_documents():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    d = torch.tensor([[1.0, 1.0], [0.0, 1.0], [3.0, 0.0]])  # two positives, then one explicit negative
    scores = [[1.0, 0.0, 3.0], [2.0, 2.0, 0.0]]
    expected = sum(-s[i] + math.log(sum(math.exp(x) for x in s)) for i, s in enumerate(scores)) / 2
    assert float(losses.info_nce(q, d)) == pytest.approx(expected)
    assert float(losses.info_nce(q, d, temperature=0.5)) == pytest.approx(
        sum(-2 * s[i] + math.log(sum(math.exp(2 * x) for x in s)) for i, s in enumerate(scores)) / 2)


def test_flops_is_the_squared_mean_activation_summed_over_the_vocabulary():
    reps = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    assert float(losses.flops(reps)) == pytest.approx(2.0**2 + 0.0 + 1.0**2)
    halves = float(losses.flops(reps[:1])) + float(losses.flops(reps[1:]))
    assert halves != pytest.approx(float(losses.flops(reps)))  # not additive: needs the whole batch


def test_lambda_warms_up_quadratically_then_stays():
    assert losses.lambda_at(0, 0.03, 100) == 0.0
    assert losses.lambda_at(50, 0.03, 100) == pytest.approx(0.0075)
    assert losses.lambda_at(100, 0.03, 100) == pytest.approx(0.03) == losses.lambda_at(10_000, 0.03, 100)


def _cross_entropy_by_hand(rows: list[list[float]], targets: list[int]) -> float:
    return sum(math.log(sum(math.exp(x) for x in row)) - row[t] for row, t in zip(rows, targets))


def test_the_adaptation_sums_are_both_cross_entropies_summed_over_tokens():
    torch.manual_seed(0)
    logits, targets = torch.randn(7, 11) * 3, torch.randint(0, 11, (7,))
    clm, relu = losses.adaptation_sums(logits, targets).tolist()
    rows = logits.tolist()
    assert clm == pytest.approx(_cross_entropy_by_hand(rows, targets.tolist()), rel=1e-5)
    activated = [[math.log1p(max(x, 0.0)) for x in row] for row in rows]
    assert relu == pytest.approx(_cross_entropy_by_hand(activated, targets.tolist()), rel=1e-5)


@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_chunked_adaptation_sums_match_one_pass_in_value_and_gradient(chunk):
    from splade_es.model.pooling import VocabHead

    torch.manual_seed(0)
    projection = torch.nn.Linear(6, 13)
    head = VocabHead(projection, post=lambda x: torch.tanh(x / 2) * 2)
    states = torch.randn(10, 6, requires_grad=True)
    targets = torch.randint(0, 13, (10,))
    reference = losses.adaptation_sums(torch.tanh(projection(states) / 2) * 2, targets)
    (reference[0] + 0.5 * reference[1]).backward()
    expected_grad, states.grad = states.grad.clone(), None
    got = losses.chunked_adaptation_sums(states, targets, head, chunk)
    (got[0] + 0.5 * got[1]).backward()
    torch.testing.assert_close(got, reference)
    torch.testing.assert_close(states.grad, expected_grad)
