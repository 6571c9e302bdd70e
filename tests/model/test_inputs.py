"""Pooled positions are exactly the right tokens in every mode."""

from __future__ import annotations

import pytest

from splade_es.errors import InputError
from splade_es.model.config import SpladeConfig
from splade_es.model.inputs import InputBuilder, plan_batches

TEXT = "Boundary layer transition on a flat plate at Mach 3."


def _pooled_ids(encoded):
    return [i for i, keep in zip(encoded.ids, encoded.pooled) if keep]


def _span(encoded):
    positions = [i for i, keep in enumerate(encoded.pooled) if keep]
    assert positions == list(range(positions[0], positions[-1] + 1)), "pooled positions must be contiguous"
    return positions[0], positions[-1] + 1


@pytest.mark.parametrize("is_query", [False, True])
def test_echo_pools_exactly_the_second_copy(mistral_tokenizer, is_query):
    builder = InputBuilder(mistral_tokenizer, SpladeConfig(mode="echo"))
    encoded = builder.encode([TEXT], is_query=is_query)[0]
    text_ids = mistral_tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    start, end = _span(encoded)
    assert _pooled_ids(encoded) == text_ids
    assert encoded.ids[0] == mistral_tokenizer.bos_token_id and not encoded.pooled[0]
    assert encoded.ids[-1] == mistral_tokenizer.eos_token_id and not encoded.pooled[-1]
    assert end == len(encoded.ids) - 1, "only </s> follows the pooled copy"
    before = mistral_tokenizer.decode(encoded.ids[1:start])
    assert before.rstrip().endswith("Query again:" if is_query else "Document again:")
    assert TEXT in before, "the first copy is present and not pooled"
    if is_query:
        assert before.lstrip().startswith("Instruct:")


def test_echo_truncates_each_copy(mistral_tokenizer):
    long_text = " ".join(["supersonic flow over a cone"] * 40)
    builder = InputBuilder(mistral_tokenizer, SpladeConfig(mode="echo", max_length=16))
    encoded = builder.encode([long_text], is_query=False)[0]
    kept = mistral_tokenizer(long_text, add_special_tokens=False)["input_ids"][:16]
    start, end = _span(encoded)
    assert _pooled_ids(encoded) == kept
    first_copy = encoded.ids.index(kept[0], 1)
    assert encoded.ids[first_copy : first_copy + 16] == kept
    assert first_copy + 16 < start
    assert mistral_tokenizer.decode(encoded.ids[first_copy + 16 : start]).strip() == "Document again:"


@pytest.mark.parametrize("mode", ["causal", "bidirectional"])
def test_decoder_modes_pool_every_text_token(mistral_tokenizer, mode):
    builder = InputBuilder(mistral_tokenizer, SpladeConfig(mode=mode))
    encoded = builder.encode([TEXT], is_query=True)[0]
    text_ids = mistral_tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert encoded.ids == [mistral_tokenizer.bos_token_id, *text_ids]
    assert encoded.pooled == [False] + [True] * len(text_ids)


def test_mlm_pools_every_position_and_truncates(tiny_bert_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    builder = InputBuilder(tokenizer, SpladeConfig(mode="mlm", max_length=8))
    short, long = builder.encode(["flow", "the boundary layer flow on the flat plate wing"], is_query=False)
    assert short.ids[0] == tokenizer.cls_token_id and short.ids[-1] == tokenizer.sep_token_id
    assert all(short.pooled) and len(short.ids) == 3
    assert len(long.ids) == 8 and all(long.pooled) and long.ids[-1] == tokenizer.sep_token_id


def test_collate_right_pads_and_masks(mistral_tokenizer):
    builder = InputBuilder(mistral_tokenizer, SpladeConfig(mode="causal"))
    items = builder.encode(["a", "a much longer text here"], is_query=False)
    batch = builder.collate(items)
    n0 = len(items[0])
    assert batch.attention_mask[0].tolist() == [1] * n0 + [0] * (batch.input_ids.shape[1] - n0)
    assert not batch.pool_mask[0, n0:].any()
    assert batch.pool_mask.sum().item() == sum(sum(i.pooled) for i in items)


def test_plan_batches_respects_budget_and_covers_everything():
    lengths = [5, 50, 7, 300, 12, 12, 1, 49]
    batches = plan_batches(lengths, batch_tokens=100, max_batch_size=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 100
    assert batches[0] == [3], "an over-budget text gets a batch of its own"


@pytest.mark.parametrize("mode", ["echo", "causal", "bidirectional"])
@pytest.mark.parametrize("is_query", [False, True])
def test_token_ids_in_give_what_text_in_gives(mistral_tokenizer, mode, is_query):
    builder = InputBuilder(mistral_tokenizer, SpladeConfig(mode=mode, max_length=8))
    texts = [TEXT, "supersonic flow over a slender cone with heat transfer at the wall"]
    ids = [mistral_tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    assert builder.encode_ids(ids, is_query) == builder.encode(texts, is_query)


def test_token_ids_in_is_refused_for_a_masked_lm(mistral_tokenizer):
    with pytest.raises(InputError, match="decoder mode"):
        InputBuilder(mistral_tokenizer, SpladeConfig(mode="mlm")).encode_ids([[5, 6]], is_query=False)
