"""SparseEncoder against a straightforward reference, and its contract with users."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from splade_es.errors import ConfigError, EncodingError, InputError, ModelLoadError
from splade_es.model import Pruning, SparseEncoder
from splade_es.model.vectors import MIN_WEIGHT, prune_rows

NO_PRUNING = Pruning()


def reference_vector(model_dir, encoded, mode: str, special_ids) -> np.ndarray:
    """Full logits for every position of one unpadded text, mask, log1p-relu, max.

    Independent of the encoder's forward path: the plain HF model with eager
    attention; bidirectional through transformers' own ``is_causal=False``.
    """
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    if mode == "mlm":
        model = AutoModelForMaskedLM.from_pretrained(model_dir)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager")
        model.config.is_causal = mode != "bidirectional"
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([encoded.ids])).logits[0]
    pooled = logits[torch.tensor(encoded.pooled)]
    weights = torch.log1p(torch.relu(pooled)).max(dim=0).values
    weights[list(special_ids)] = 0
    return weights.numpy()


@pytest.fixture(scope="module")
def encoders(tiny_mistral_dir, tiny_bert_dir):
    out = {mode: SparseEncoder.from_pretrained(tiny_mistral_dir, mode=mode) for mode in ("echo", "causal", "bidirectional")}
    out["mlm"] = SparseEncoder.from_pretrained(tiny_bert_dir)
    return out


@pytest.mark.parametrize("mode", ["echo", "causal", "bidirectional", "mlm"])
@pytest.mark.parametrize("is_query", [False, True])
def test_vectors_equal_full_logit_reference(encoders, tiny_mistral_dir, tiny_bert_dir, mode, is_query):
    encoder = encoders[mode]
    texts = ["the boundary layer flow on a flat plate", "shock wave", "heat transfer at mach 3 in a laminar jet"]
    encode = encoder.encode_queries if is_query else encoder.encode_documents
    vectors = encode(texts, pruning=NO_PRUNING)
    model_dir = tiny_bert_dir if mode == "mlm" else tiny_mistral_dir
    for text, vector in zip(texts, vectors):
        encoded = encoder.inputs.encode([text], is_query)[0]
        expected = reference_vector(model_dir, encoded, mode, encoder.tokenizer.all_special_ids)
        assert len(vector) > 0.5 * np.count_nonzero(expected), "no pruning: every positive weight kept"
        np.testing.assert_allclose(vector.to_dense(), expected, atol=1e-5, rtol=0)


def test_reference_modes_really_differ(encoders):
    """Guards the reference itself: echo, causal and bidirectional give different vectors."""
    text = "supersonic flow over a cone"
    dense = {m: encoders[m].encode_documents(text, pruning=NO_PRUNING).to_dense() for m in ("echo", "causal", "bidirectional")}
    assert not np.allclose(dense["echo"], dense["causal"], atol=1e-4)
    assert not np.allclose(dense["causal"], dense["bidirectional"], atol=1e-4)


@pytest.mark.parametrize("mode", ["echo", "causal", "bidirectional", "mlm"])
def test_batch_invariance(encoders, cranfield_texts, mode):
    encoder = encoders[mode]
    texts = [cranfield_texts[0][:40], cranfield_texts[1], "lift", cranfield_texts[2][:300], cranfield_texts[3]]
    together = encoder.encode_documents(texts, pruning=NO_PRUNING)
    for text, vector in zip(texts, together):
        alone = encoder.encode_documents(text, pruning=NO_PRUNING)
        np.testing.assert_allclose(vector.to_dense(), alone.to_dense(), atol=1e-5, rtol=0)


def test_small_token_budget_and_head_chunks_change_nothing(tiny_mistral_dir, cranfield_texts):
    big = SparseEncoder.from_pretrained(tiny_mistral_dir, batch_tokens=1 << 20, head_chunk_tokens=4096)
    small = SparseEncoder.from_pretrained(tiny_mistral_dir, batch_tokens=300, head_chunk_tokens=7)
    texts = cranfield_texts[:6]
    for a, b in zip(big.encode_documents(texts, pruning=NO_PRUNING), small.encode_documents(texts, pruning=NO_PRUNING)):
        np.testing.assert_allclose(a.to_dense(), b.to_dense(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode, depends", [("bidirectional", True), ("causal", False)])
def test_first_token_sees_later_tokens_only_when_bidirectional(encoders, mode, depends):
    backbone = encoders[mode].backbone
    ids = torch.tensor([[1, 1500, 1600, 1700], [1, 1500, 1600, 1800]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        hidden = backbone.hidden_states(ids, mask, bidirectional=mode == "bidirectional")
    changed = not torch.allclose(hidden[0, 1], hidden[1, 1], atol=1e-6)
    assert changed is depends
    assert torch.allclose(hidden[0, :3], hidden[1, :3], atol=1e-6) is not depends


def test_outputs_exclude_special_ids_and_are_lucene_safe(encoders, mistral_tokenizer):
    vector = encoders["echo"].encode_documents("the pressure distribution on a wing", pruning=NO_PRUNING)
    assert len(mistral_tokenizer.all_special_ids) == 771
    assert len(vector) > 5000, "a random model is dense, so the special-id check below means something"
    assert not set(vector.indices.tolist()) & set(mistral_tokenizer.all_special_ids)
    assert vector.values.dtype == np.float32 and vector.indices.dtype == np.int64
    assert np.all(np.isfinite(vector.values)) and vector.values.min() >= MIN_WEIGHT
    assert np.all(np.diff(vector.values) <= 0), "heaviest first"


def test_default_pruning_comes_from_config(encoders):
    encoder = encoders["echo"]
    assert len(encoder.encode_documents("laminar flow")) == 512
    assert len(encoder.encode_queries("laminar flow")) == 128


def test_pruning_rules(encoders):
    encoder = encoders["causal"]
    full = encoder.encode_documents("heat transfer in a turbulent boundary layer", pruning=NO_PRUNING)
    dense = full.to_dense()
    top = encoder.encode_documents("heat transfer in a turbulent boundary layer", pruning=Pruning(top_k=10))
    assert top.indices.tolist() == full.indices[:10].tolist()
    cut = float(np.median(full.values))
    by_weight = encoder.encode_documents("heat transfer in a turbulent boundary layer", pruning=Pruning(min_weight=cut))
    assert set(by_weight.indices.tolist()) == set(np.flatnonzero(dense >= cut).tolist())
    by_ratio = encoder.encode_documents("heat transfer in a turbulent boundary layer", pruning=Pruning(max_ratio=0.5))
    assert set(by_ratio.indices.tolist()) == set(np.flatnonzero(dense >= 0.5 * dense.max()).tolist())


@pytest.mark.parametrize("pruning", [Pruning(top_k=10), Pruning(min_weight=0.5), Pruning(max_ratio=0.4),
                                     Pruning(top_k=25, min_weight=0.2, max_ratio=0.1)])
def test_pruning_a_feature_map_matches_pruning_the_pooled_row(encoders, pruning):
    """Precomputed vectors (ingest --vectors) are pruned by the same rules as encoded ones."""
    encoder = encoders["causal"]
    text = "heat transfer in a turbulent boundary layer"
    full = encoder.encode_documents(text, pruning=NO_PRUNING).to_features()
    assert len(full) > 100
    pruned = pruning.apply(full)
    assert pruned == encoder.encode_documents(text, pruning=pruning).to_features()
    assert list(pruned.values()) == sorted(pruned.values(), reverse=True)


def test_pruning_a_feature_map_breaks_ties_by_name_and_drops_subnormal_weights():
    features = {"b": 0.5, "a": 0.5, "c": 0.1, "tiny": 1e-39}
    assert Pruning(top_k=1).apply(features) == {"a": 0.5}
    assert Pruning().apply(features) == {"a": 0.5, "b": 0.5, "c": 0.1}
    assert Pruning(min_weight=0.2).apply(features) == {"a": 0.5, "b": 0.5}
    assert Pruning(top_k=3).apply({}) == {}


def test_prune_rows_rejects_non_finite(encoders):
    dense = torch.zeros(2, encoders["echo"].vocab_size)
    dense[1, 5] = float("nan")
    with pytest.raises(EncodingError, match=r"row\(s\) \[1\]"):
        prune_rows(dense, NO_PRUNING, encoders["echo"].namer)


def test_features_and_decode(encoders):
    encoder = encoders["echo"]
    vector = encoder.encode_queries("drag of a cylinder", pruning=Pruning(top_k=20))
    features = vector.to_features()
    assert len(features) == 20 and all("." not in name and name for name in features)
    assert [encoder.namer.id(name) for name in features] == vector.indices.tolist()
    assert encoder.decode(vector, top_k=3) == list(features.items())[:3]
    assert vector.dot(vector) == pytest.approx(float(np.sum(vector.values.astype(np.float64) ** 2)))


def test_save_load_round_trip(tiny_mistral_dir, tmp_path, cranfield_texts):
    import shutil

    source = tmp_path / "source"
    shutil.copytree(tiny_mistral_dir, source)
    options = {"mode": "bidirectional", "max_length": 64, "document_pruning": {"top_k": 40}}
    (source / "splade_config.json").write_text(json.dumps(options))
    encoder = SparseEncoder.from_pretrained(source)
    bundle = encoder.save_pretrained(tmp_path / "bundle")
    stored = json.loads((bundle / "splade_config.json").read_text())
    assert stored["mode"] == "bidirectional" and stored["document_pruning"]["top_k"] == 40
    loaded = SparseEncoder.from_pretrained(bundle)
    assert loaded.config == encoder.config and loaded.config.max_length == 64
    for a, b in zip(encoder.encode_documents(cranfield_texts[:4]), loaded.encode_documents(cranfield_texts[:4])):
        assert len(a) == 40
        assert a.indices.tolist() == b.indices.tolist() and np.array_equal(a.values, b.values)


def test_lora_adapter_changes_output_and_merging_agrees(tiny_mistral_dir, lora_adapter_dir, tmp_path):
    text = "the lift and drag of a delta wing"
    base = SparseEncoder.from_pretrained(tiny_mistral_dir).encode_documents(text, pruning=NO_PRUNING).to_dense()
    adapted = SparseEncoder.from_pretrained(tiny_mistral_dir, adapter=str(lora_adapter_dir))
    unmerged = adapted.encode_documents(text, pruning=NO_PRUNING).to_dense()
    assert np.abs(unmerged - base).max() > 1e-3
    bundle = adapted.save_pretrained(tmp_path / "adapter-bundle")
    assert (bundle / "adapter_config.json").is_file() and not (bundle / "model.safetensors").exists()
    reloaded = SparseEncoder.from_pretrained(bundle).encode_documents(text, pruning=NO_PRUNING).to_dense()
    np.testing.assert_array_equal(reloaded, unmerged)
    over_full_model = adapted.save_pretrained(SparseEncoder.from_pretrained(tiny_mistral_dir).save_pretrained(tmp_path / "reused"))
    assert not (over_full_model / "config.json").exists(), "stale full-model files would hide the adapter"
    np.testing.assert_array_equal(SparseEncoder.from_pretrained(over_full_model).encode_documents(text, pruning=NO_PRUNING).to_dense(), unmerged)
    adapted.merge_adapter()
    assert not adapted.backbone.is_peft
    merged = adapted.encode_documents(text, pruning=NO_PRUNING).to_dense()
    np.testing.assert_allclose(merged, unmerged, atol=1e-5, rtol=0)


def test_empty_texts_get_empty_vectors_in_place(encoders):
    vectors = encoders["echo"].encode_documents(["lift", "", "   \n", "drag"])
    assert [len(v) > 0 for v in vectors] == [True, False, False, True]
    assert vectors[1].to_features() == {}


def test_non_string_input_is_named(encoders):
    with pytest.raises(InputError, match=r"texts\[1\] is int, expected str"):
        encoders["echo"].encode_documents(["ok", 3])
    with pytest.raises(InputError, match="sequence of strings"):
        encoders["echo"].encode_documents(42)


def test_bad_model_paths_give_one_line_errors(tmp_path, tiny_mistral_dir):
    with pytest.raises(ModelLoadError, match="does not exist"):
        SparseEncoder.from_pretrained(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="not a model directory"):
        SparseEncoder.from_pretrained(str(tmp_path / "empty"))
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="is a file"):
        SparseEncoder.from_pretrained(str(tmp_path / "file.bin"))
    with pytest.raises(ModelLoadError, match="needs a masked-LM model"):
        SparseEncoder.from_pretrained(tiny_mistral_dir, mode="mlm")
    with pytest.raises(ModelLoadError, match="needs a CUDA GPU|needs bitsandbytes"):
        SparseEncoder.from_pretrained(tiny_mistral_dir, quantization="4bit", device="cpu")


def test_bad_splade_config_names_the_key(tmp_path, tiny_mistral_dir):
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_mistral_dir, bundle)
    (bundle / "splade_config.json").write_text(json.dumps({"mode": "echo", "top_k": 5}))
    with pytest.raises(ConfigError, match="unknown key\\(s\\) top_k"):
        SparseEncoder.from_pretrained(bundle)
    (bundle / "splade_config.json").write_text(json.dumps({"document_pruning": {"top_k": 0}}))
    with pytest.raises(ConfigError, match="top_k must be a positive integer"):
        SparseEncoder.from_pretrained(bundle)
    (bundle / "splade_config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="invalid JSON at line 1"):
        SparseEncoder.from_pretrained(bundle)


@pytest.mark.parametrize("head", ["split", "full"])
def test_encoding_keeps_no_key_value_cache(encoders, head):
    """A decoder's default KV cache would cost a 7B model 128 KiB per token and is never read."""
    encoder = encoders["echo"]
    outputs = []
    module = encoder.backbone.body if head == "split" else encoder.backbone.lm
    hook = module.register_forward_hook(lambda _module, _args, output: outputs.append(output))
    saved = encoder.backbone.head
    try:
        if head == "full":
            encoder.backbone.head = None
        encoder.encode_documents(["a flat plate in supersonic flow"])
    finally:
        encoder.backbone.head = saved
        hook.remove()
    assert outputs and all(getattr(o, "cache", None) is None and getattr(o, "past_key_values", None) is None
                           for o in outputs)


# ---------------------------------------------------------------- long documents in windows
@pytest.mark.parametrize("mode", ["echo", "bidirectional", "mlm"])
def test_a_long_text_is_the_max_over_its_windows(encoders, tiny_mistral_dir, tiny_bert_dir, cranfield_texts, mode):
    """Windows of 12 tokens overlapping by 4 (starts 0, 8, 16, ... until the end is covered), each
    scored by the plain HF model: the encoder's chunked vector is their element-wise max. A token
    budget of one window per batch makes a text's windows arrive in different forward passes."""
    from splade_es.model.inputs import Encoded

    encoder = encoders[mode]
    budget = encoder.batch_tokens
    encoder.batch_tokens = 1  # every window its own batch
    try:
        long_text, short_text = " ".join(cranfield_texts[:2]), "shock wave"
        chunked = encoder.encode_documents([long_text, short_text], pruning=NO_PRUNING, chunk_tokens=12, chunk_overlap=4)
    finally:
        encoder.batch_tokens = budget
    ids = encoder.inputs.tokenize(long_text)
    assert len(ids) > 40
    starts = [0]
    while starts[-1] + 12 < len(ids):
        starts.append(starts[-1] + 8)
    model_dir = tiny_bert_dir if mode == "mlm" else tiny_mistral_dir
    windows = []
    for start in starts:
        piece = ids[start:start + 12]
        if mode == "mlm":
            tokenizer = encoder.tokenizer
            full = [tokenizer.cls_token_id, *piece, tokenizer.sep_token_id]
            windows.append(Encoded(full, [True] * len(full)))
        else:
            windows.append(encoder.inputs.encode_ids([piece], False)[0])
    expected = np.max([reference_vector(model_dir, w, mode, encoder.tokenizer.all_special_ids) for w in windows], axis=0)
    np.testing.assert_allclose(chunked[0].to_dense(), expected, atol=1e-5, rtol=0)
    whole = encoder.encode_documents(long_text, pruning=NO_PRUNING)
    assert not np.allclose(chunked[0].to_dense(), whole.to_dense(), atol=1e-3), "windows see other context"
    # A text that fits one window is encoded exactly as without chunking.
    plain = encoder.encode_documents(short_text, pruning=NO_PRUNING)
    np.testing.assert_array_equal(chunked[1].to_dense(), plain.to_dense())


def test_chunking_prunes_the_merged_vector_and_checks_its_settings(encoders, cranfield_texts, tiny_bert_dir, tmp_path):
    encoder = encoders["causal"]
    text = " ".join(cranfield_texts[:3])
    full = encoder.encode_documents(text, pruning=NO_PRUNING, chunk_tokens=32, chunk_overlap=8)
    top = encoder.encode_documents(text, pruning=Pruning(top_k=20), chunk_tokens=32, chunk_overlap=8)
    assert [name for name, _ in top.top()] == [name for name, _ in full.top(20)]
    with pytest.raises(InputError, match=r"chunk_tokens must be 1\.\.256"):
        encoder.encode_documents(text, chunk_tokens=300)
    with pytest.raises(InputError, match=r"chunk_overlap must be 0\.\.31"):
        encoder.encode_documents(text, chunk_tokens=32, chunk_overlap=32)
    mlm = encoders["mlm"]
    with pytest.raises(InputError, match=r"chunk_tokens must be 1\.\.254 \(.* less its special tokens\)"):
        mlm.encode_documents(text, chunk_tokens=255)
    from dataclasses import replace

    summing = SparseEncoder(mlm.backbone, mlm.tokenizer, replace(mlm.config, pooling="sum"))
    with pytest.raises(InputError, match="this model pools by 'sum'"):
        summing.encode_documents(text, chunk_tokens=32)
