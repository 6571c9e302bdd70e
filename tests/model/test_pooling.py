"""The sparse max-projection pooling against autograd through the full logits."""

from __future__ import annotations

import pytest
import torch

from splade_es.model import SparseEncoder
from splade_es.model.pooling import VocabHead, pool_full_logits, pool_pooled_positions


def _case(seed: int = 0, vocab: int = 300, hidden_size: int = 16):
    """Hidden states for 4 texts of different lengths (one with no pooled position), a head
    with a real transform and a bias shifted so some terms are active and most are not."""
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(4, 9, hidden_size, generator=generator)
    lengths = [9, 3, 0, 6]
    pool_mask = torch.zeros(4, 9, dtype=torch.bool)
    for text, length in enumerate(lengths):
        pool_mask[text, 9 - length:] = True
    torch.manual_seed(seed)
    projection = torch.nn.Linear(hidden_size, vocab)
    transform = torch.nn.Sequential(torch.nn.Linear(hidden_size, hidden_size), torch.nn.LayerNorm(hidden_size))
    with torch.no_grad():
        projection.weight.mul_(3.0)
        projection.bias.sub_(1.5)
    upstream = torch.rand(4, vocab, generator=generator)  # a different gradient for every output
    return hidden, pool_mask, VocabHead(projection, transform), upstream


def _grads(pool, hidden, head: VocabHead, upstream):
    hidden = hidden.clone().requires_grad_(True)
    modules = [head.projection, head.transform]
    for module in modules:
        module.zero_grad()
    pooled = pool(hidden, head)
    (pooled * upstream).sum().backward()
    params = {f"{i}.{name}": p.grad.clone() for i, m in enumerate(modules) for name, p in m.named_parameters()}
    return pooled.detach(), hidden.grad, params


def _reference(pool_mask):
    def pool(hidden, head):
        return pool_full_logits(head.projection(head.transform(hidden)), pool_mask)
    return pool


@pytest.mark.parametrize("chunk_tokens", [1, 4, 7, 1000])
def test_values_and_gradients_equal_full_logit_autograd(chunk_tokens):
    hidden, pool_mask, head, upstream = _case()
    expected, expected_hidden, expected_params = _grads(_reference(pool_mask), hidden, head, upstream)
    pooled, grad_hidden, params = _grads(
        lambda h, hd: pool_pooled_positions(h, pool_mask, hd, chunk_tokens), hidden, head, upstream)
    active = (expected > 0).sum(dim=1)
    assert active[2] == 0 and active[[0, 1, 3]].min() > 10 and active.max() < 300, "case exercises both sides of relu"
    torch.testing.assert_close(pooled, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grad_hidden, expected_hidden, atol=1e-6, rtol=1e-5)
    assert grad_hidden[~pool_mask].abs().max() == 0, "unpooled positions get no gradient"
    with torch.no_grad():  # encoding takes the path without arg-max bookkeeping: same values
        torch.testing.assert_close(pool_pooled_positions(hidden, pool_mask, head, chunk_tokens), pooled, atol=0, rtol=0)
    assert expected_params.keys() == params.keys()
    for name, grad in expected_params.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(params[name], grad, atol=1e-5, rtol=1e-5, msg=name)


def test_frozen_head_gets_no_gradient_and_low_precision_keeps_dtypes():
    hidden, pool_mask, head, upstream = _case(seed=1)
    head.projection.requires_grad_(False)
    states = hidden.to(torch.bfloat16).requires_grad_(True)
    bf16_head = VocabHead(head.projection.to(torch.bfloat16), head.transform.to(torch.bfloat16))
    pooled = pool_pooled_positions(states, pool_mask, bf16_head, 5)
    (pooled * upstream).sum().backward()
    assert pooled.dtype == torch.float32
    assert states.grad.dtype == torch.bfloat16 and states.grad.abs().max() > 0
    assert head.projection.weight.grad is None and head.projection.bias.grad is None


@pytest.mark.parametrize("model", ["mistral", "bert"])
def test_encoder_training_gradients_equal_full_forward(model, tiny_mistral_dir, tiny_bert_dir):
    """The split head (BERT's transform + decoder, Mistral's lm_head) trains exactly like
    the model's own full forward pass."""
    encoder = SparseEncoder.from_pretrained(tiny_bert_dir if model == "bert" else tiny_mistral_dir)
    texts = ["the boundary layer flow on a flat plate", "shock wave", "heat transfer at mach 3 in a laminar jet"]
    batch = encoder.inputs.collate(encoder.inputs.encode(texts, False))
    upstream = torch.rand(len(texts), encoder.vocab_size, generator=torch.Generator().manual_seed(0))
    results = []
    for head in (encoder.backbone.head, None):
        encoder.backbone.head = head
        encoder.backbone.model.zero_grad()
        pooled = encoder.forward(batch)
        (pooled * upstream).sum().backward()
        grads = {n: p.grad.clone() for n, p in encoder.backbone.model.named_parameters() if p.grad is not None}
        results.append((pooled.detach(), grads))
    (pooled, grads), (expected, expected_grads) = results
    torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=1e-5)
    assert grads.keys() == expected_grads.keys() and len(grads) > 5
    # float32 sums in another order: errors relative to each tensor's largest gradient, plus a
    # floor for tensors whose true gradient is zero (attention key biases) and holds only noise
    floor = 1e-7 * max(float(grad.abs().max()) for grad in expected_grads.values())
    for name, grad in expected_grads.items():
        atol = 1e-5 * float(grad.abs().max()) + floor
        torch.testing.assert_close(grads[name], grad, atol=atol, rtol=1e-4, msg=name)


def test_a_wrapped_head_takes_the_full_forward(tiny_mistral_dir):
    """A LoRA adapter on lm_head adds to its output: applying only its weight would drop that."""
    from peft import LoraConfig, get_peft_model

    from splade_es.model.backbone import Backbone

    encoder = SparseEncoder.from_pretrained(tiny_mistral_dir)
    batch = encoder.inputs.collate(encoder.inputs.encode(["shock wave", "heat transfer in a laminar jet"], False))
    with torch.no_grad():
        plain = encoder.forward(batch)
    torch.manual_seed(2)
    model = get_peft_model(encoder.backbone.model, LoraConfig(r=4, target_modules=["lm_head"], init_lora_weights=False))
    encoder.backbone = Backbone(model, is_mlm=False)
    assert encoder.backbone.head is None
    with torch.no_grad():
        adapted = encoder.forward(batch)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    expected = pool_full_logits(logits, batch.pool_mask).index_fill(1, encoder._special_ids, 0.0)
    torch.testing.assert_close(adapted, expected, atol=1e-5, rtol=1e-5)
    assert (adapted - plain).abs().max() > 1e-2


@pytest.mark.parametrize("chunk_tokens", [1, 2, 1000])  # the tied rows in one chunk, or in two
def test_a_tied_maximum_sends_the_whole_gradient_to_its_first_position(chunk_tokens):
    """The documented subgradient: where autograd's amax splits the gradient evenly between
    tied positions, the sparse backward gives it all to the first; the sums agree."""
    hidden, pool_mask, head, upstream = _case()
    hidden[0, 4] = hidden[0, 3]  # text 0: positions 3 and 4 tie on every term
    expected, expected_hidden, _ = _grads(_reference(pool_mask), hidden, head, upstream)
    pooled, grad_hidden, _ = _grads(lambda h, hd: pool_pooled_positions(h, pool_mask, hd, chunk_tokens), hidden, head,
                                    upstream)
    torch.testing.assert_close(pooled, expected, atol=1e-6, rtol=1e-5)
    first, second = grad_hidden[0, 3], grad_hidden[0, 4]
    reference = expected_hidden[0, 3] + expected_hidden[0, 4]
    assert expected_hidden[0, 3].abs().sum() > 0
    torch.testing.assert_close(expected_hidden[0, 3], expected_hidden[0, 4])  # amax: split evenly
    torch.testing.assert_close(first + second, reference, atol=1e-5, rtol=1e-5)
    assert second.abs().max() == 0 and first.abs().sum() > 0
    torch.testing.assert_close(grad_hidden[1:], expected_hidden[1:], atol=1e-6, rtol=1e-5)  # other texts: exact
