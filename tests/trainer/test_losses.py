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


def test_the_adaptation_loss_adds_the_relu_term():
    logits = torch.randn(2, 5, 11)
    ids = torch.randint(0, 11, (2, 5))
    mask = torch.ones(2, 5, dtype=torch.long)
    total, clm, relu = losses.adaptation_loss(logits, ids, mask, lambda_relu=0.5)
    expected_clm = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), ids[:, 1:].reshape(-1))
    assert float(clm) == pytest.approx(float(expected_clm), rel=1e-5)
    assert float(total) == pytest.approx(float(clm) + 0.5 * float(relu), rel=1e-5)
