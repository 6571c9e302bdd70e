"""Inference-free queries: the weight table, corpus IDF, bundles that carry them."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch

from splade_es.errors import ModelLoadError
from splade_es.model import Pruning, SparseEncoder
from splade_es.model.static import WEIGHTS_NAME, StaticQueryEncoder, corpus_idf, load_query_encoder

ALL = Pruning()


def test_a_query_is_its_distinct_tokens_weighted_by_the_table(tiny_bert_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    weights = torch.arange(len(tokenizer), dtype=torch.float32) / 10 + 0.05
    encoder = SparseEncoder.from_pretrained(str(tiny_bert_dir), device="cpu")
    static = StaticQueryEncoder(tokenizer, weights, encoder.config)
    vector = static.encode_queries("wing [CLS] wing of the wing", pruning=ALL)
    ids = {tokenizer.convert_tokens_to_ids(t) for t in ("wing", "of", "the")}
    assert vector.to_dict() == pytest.approx({i: float(weights[i]) for i in ids}), "no tf, no [CLS]"
    pruned = static.encode_queries("wing of the", pruning=Pruning(top_k=2))
    assert list(pruned.to_dict()) == sorted(ids, key=lambda i: -float(weights[i]))[:2]
    assert len(static.encode_queries(["  "])[0]) == 0
    assert static.text_features("lift of a wing") >= set(vector.to_features()) - {"the"}


def test_corpus_idf_matches_an_independent_count(tiny_bert_dir):
    from transformers import AutoTokenizer

    texts = ["the flow of the wing", "a wing of the plate", "boundary layer flow", "lift and drag", "the lift"]
    static, documents = corpus_idf(str(tiny_bert_dir), iter(texts), batch_size=2)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    df = Counter(i for text in texts for i in set(tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))))
    assert documents == 5 and static.config.static_queries
    for token_id in range(static.vocab_size):
        expected = math.log(1 + (5 - df[token_id] + 0.5) / (df[token_id] + 0.5))
        assert float(static.weights[token_id]) == pytest.approx(expected, rel=1e-6)
    flow, wing, lift = (tokenizer.convert_tokens_to_ids(t) for t in ("flow", "wing", "lift"))
    assert static.weights[tokenizer.convert_tokens_to_ids("the")] < static.weights[flow]  # the: 3 docs, flow: 2
    assert static.weights[wing] == static.weights[lift]


def test_decoder_bundle_round_trips_its_table_and_documents_are_unchanged(tiny_mistral_dir, tmp_path, cranfield_texts):
    encoder = SparseEncoder.from_pretrained(str(tiny_mistral_dir), device="cpu")
    before = encoder.encode_documents(cranfield_texts[:3], pruning=ALL)
    static, _ = corpus_idf(str(tiny_mistral_dir), iter(cranfield_texts))
    encoder.use_static_queries(static)
    bundle = encoder.save_pretrained(tmp_path / "bundle")
    assert (bundle / WEIGHTS_NAME).is_file() and not (bundle / "modules.json").exists(), "decoders keep our format"
    assert json.loads((bundle / "splade_config.json").read_text())["query_encoder"] == "static"
    loaded = SparseEncoder.from_pretrained(str(bundle), device="cpu")
    after = loaded.encode_documents(cranfield_texts[:3], pruning=ALL)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a.to_dense(), b.to_dense())
    query = "boundary layer transition on a flat plate"
    assert loaded.encode_queries(query).to_dict() == encoder.encode_queries(query).to_dict()
    assert set(loaded.encode_queries(query).to_features()) <= loaded.text_features(query), "no expansions"


def test_a_static_bundle_answers_queries_without_its_backbone(tiny_bert_dir, tmp_path, monkeypatch):
    bundle = tmp_path / "bundle"
    full = SparseEncoder.from_pretrained(str(tiny_bert_dir), device="cpu")
    full.use_static_queries(corpus_idf(str(tiny_bert_dir), iter(["the wing", "lift of a cone"]))[0])
    full.save_pretrained(bundle)

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone was loaded")

    monkeypatch.setattr("splade_es.model.backbone.load_model", no_backbone)
    monkeypatch.setattr("transformers.AutoModelForMaskedLM.from_pretrained", no_backbone)
    queries = load_query_encoder(str(bundle))
    assert isinstance(queries, StaticQueryEncoder)
    assert queries.encode_queries("lift of the wing").to_dict() == full.encode_queries("lift of the wing").to_dict()
    with pytest.raises(AssertionError, match="backbone"):
        SparseEncoder.from_pretrained(str(bundle))


def test_a_static_bundle_without_its_table_is_one_clear_line(tiny_mistral_dir, tmp_path):
    encoder = SparseEncoder.from_pretrained(str(tiny_mistral_dir), device="cpu")
    encoder.use_static_queries(corpus_idf(str(tiny_mistral_dir), iter(["a b c"]))[0])
    bundle = encoder.save_pretrained(tmp_path / "bundle")
    (bundle / WEIGHTS_NAME).unlink()
    with pytest.raises(ModelLoadError, match=f"{WEIGHTS_NAME}: missing"):
        load_query_encoder(str(bundle))


QUERY = "lift of the wing"


@pytest.fixture(scope="module")
def static_echo(tiny_mistral_dir, lora_adapter_dir, tmp_path_factory):
    """A static decoder bundle (our format), and its query vector loaded with and without the adapter
    (built before a test's ``no_backbone`` applies: module fixtures come first)."""
    full = SparseEncoder.from_pretrained(str(tiny_mistral_dir), device="cpu")
    full.use_static_queries(corpus_idf(str(tiny_mistral_dir), iter(["the wing", "lift of a cone"]))[0])
    bundle = full.save_pretrained(tmp_path_factory.mktemp("static-echo") / "bundle")
    adapted = SparseEncoder.from_pretrained(str(bundle), adapter=str(lora_adapter_dir), device="cpu")
    assert adapted.backbone.is_peft
    return bundle, full.encode_queries(QUERY).to_dict(), adapted.encode_queries(QUERY).to_dict()


def test_a_static_bundle_given_as_a_hub_id_never_loads_its_backbone(static_echo, monkeypatch, no_backbone):
    """Our format on the hub: the config, table and tokenizer are fetched alone. No hub here: the
    download calls answer from a local snapshot and the tokenizer's repo id maps onto it."""
    import huggingface_hub
    from huggingface_hub.utils import EntryNotFoundError
    from transformers import AutoTokenizer

    snapshot, expected, _ = static_echo
    fetched = []

    def download(repo_id, filename, **kwargs):
        if repo_id != "someone/static-echo" or not (snapshot / filename).is_file():
            raise EntryNotFoundError(f"{repo_id}/{filename}")
        fetched.append(filename)
        return str(snapshot / filename)

    tokenizer = AutoTokenizer.from_pretrained
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda name, **kw: tokenizer(
        str(snapshot) if name == "someone/static-echo" else name, **kw))
    queries = load_query_encoder("someone/static-echo")
    assert isinstance(queries, StaticQueryEncoder) and WEIGHTS_NAME in fetched and "model.safetensors" not in fetched
    assert queries.encode_queries(QUERY).to_dict() == expected


def test_an_adapter_does_not_stop_static_queries(static_echo, lora_adapter_dir, no_backbone):
    """The adapter changes documents only: the table answers, as the full model with the adapter does."""
    bundle, expected, adapted = static_echo
    queries = load_query_encoder(str(bundle), adapter=str(lora_adapter_dir))
    assert isinstance(queries, StaticQueryEncoder)
    assert queries.encode_queries(QUERY).to_dict() == expected == adapted
