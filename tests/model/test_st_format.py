"""sentence-transformers SparseEncoder checkpoints in and out, against the real library.

Tiny random masked LMs are saved by sentence-transformers itself in both layouts (MLM +
SpladePooling; a Router with a SparseStaticEmbedding query route), with the type names the
installed release writes and, rewritten, the 5.x names; splade-es must give the library's own
``encode_document`` / ``encode_query`` vectors within 1e-5, and the library must give splade-es's
vectors for the bundles splade-es writes. splade-es never emits special tokens (DESIGN §2), so
those ids are zeroed on the library's side before comparing.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SparseEncoder as StSparseEncoder
from sentence_transformers.sparse_encoder.modules import Router, SparseStaticEmbedding, SpladePooling, Transformer

from splade_es.errors import ModelLoadError
from splade_es.model import Pruning, SparseEncoder
from splade_es.model.static import StaticQueryEncoder

ALL = Pruning()
TEXTS = ["the boundary layer flow on a flat plate", "shock wave", "Heat transfer at MACH 3 in a laminar jet, "
         "with the pressure and the drag of a wing body at supersonic speed and the lift of a cone"]
# What the installed release writes -> the 5.x names (sentence-transformers 5.0-5.3).
OLD_NAMES = {
    "sentence_transformers.base.modules.transformer.Transformer": "sentence_transformers.sparse_encoder.models.MLMTransformer",
    "sentence_transformers.sparse_encoder.modules.splade_pooling.SpladePooling": "sentence_transformers.sparse_encoder.models.SpladePooling",
    "sentence_transformers.sparse_encoder.modules.sparse_static_embedding.SparseStaticEmbedding":
        "sentence_transformers.sparse_encoder.models.SparseStaticEmbedding",
    "sentence_transformers.base.modules.router.Router": "sentence_transformers.models.Router",
}


def st_dense(vectors, special_ids, width: int) -> np.ndarray:
    """The library's vectors with special ids zeroed, padded to the model's vocabulary (a static
    table is as long as the tokenizer's vocabulary, which may be shorter)."""
    dense = vectors.to_dense().float().numpy() if vectors.is_sparse else vectors.float().numpy()
    dense = np.pad(dense, ((0, 0), (0, width - dense.shape[1])))
    dense[:, sorted(special_ids)] = 0
    return dense


def ours_dense(vectors) -> np.ndarray:
    return np.stack([vector.to_dense() for vector in vectors])


def to_old_names(directory) -> None:
    """Rewrite a checkpoint as sentence-transformers 5.x wrote it: 5.x type names,
    max_seq_length / do_lower_case in sentence_bert_config.json, and SpladePooling's dimension
    as word_embedding_dimension."""
    for name in ("modules.json", "router_config.json"):
        path = directory / name
        if path.is_file():
            text = path.read_text()
            for new, old in OLD_NAMES.items():
                text = text.replace(new, old)
            path.write_text(text)
    for config in directory.rglob("sentence_bert_config.json"):
        tokenizer = json.loads((config.parent / "tokenizer_config.json").read_text())
        config.write_text(json.dumps({"max_seq_length": tokenizer["model_max_length"], "do_lower_case": False}))
    vocab_size = next(config["vocab_size"] for config in map(json.loads, map(Path.read_text, directory.rglob("config.json")))
                      if "vocab_size" in config)
    for pooling in directory.rglob("*SpladePooling/config.json"):
        config = json.loads(pooling.read_text())
        del config["embedding_dimension"]
        pooling.write_text(json.dumps({**config, "word_embedding_dimension": vocab_size}))


def save_st_mlm(tiny_bert_dir, out, pooling="max", activation="relu", max_seq_length=16, **transformer):
    model = StSparseEncoder(modules=[Transformer(str(tiny_bert_dir), transformer_task="fill-mask",
                                                 max_seq_length=max_seq_length, **transformer),
                                     SpladePooling(pooling_strategy=pooling, activation_function=activation)])
    model.save(str(out))
    return out


def save_st_router(tiny_bert_dir, out, max_seq_length=16, **transformer):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    weights = torch.rand(len(tokenizer), generator=torch.Generator().manual_seed(3)) * 2
    router = Router.for_query_document(
        query_modules=[SparseStaticEmbedding(tokenizer=tokenizer, weight=weights)],
        document_modules=[Transformer(str(tiny_bert_dir), transformer_task="fill-mask", max_seq_length=max_seq_length,
                                      **transformer),
                          SpladePooling("max")])
    StSparseEncoder(modules=[router], similarity_fn_name="dot").save(str(out))
    return out


def assert_same_vectors(ours, st_path, texts=TEXTS) -> None:
    """``ours``: a SparseEncoder, or a StaticQueryEncoder (then queries only)."""
    library = StSparseEncoder(str(st_path), device="cpu")
    if isinstance(ours, StaticQueryEncoder):
        expected = st_dense(library.encode_query(texts, convert_to_tensor=True), ours.tokenizer.all_special_ids,
                            ours.vocab_size)
        assert np.count_nonzero(expected) > 5
        np.testing.assert_allclose(ours_dense(ours.encode_queries(texts, pruning=ALL)), expected, atol=1e-5, rtol=0)
        return
    special = set(ours.tokenizer.all_special_ids)
    expected_docs = st_dense(library.encode_document(texts, convert_to_tensor=True), special, ours.vocab_size)
    expected_queries = st_dense(library.encode_query(texts, convert_to_tensor=True), special, ours.vocab_size)
    got_docs = ours_dense(ours.encode_documents(texts, pruning=ALL))
    got_queries = ours_dense(ours.encode_queries(texts, pruning=ALL))
    assert np.count_nonzero(expected_docs) > 20 and np.count_nonzero(expected_queries) > 5
    np.testing.assert_allclose(got_docs, expected_docs, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got_queries, expected_queries, atol=1e-5, rtol=0)


@pytest.mark.parametrize("names", ["installed", "5.x"])
@pytest.mark.parametrize("pooling,activation", [("max", "relu"), ("sum", "log1p_relu"), ("max", "log1p_relu"),
                                                ("sum", "relu")])
def test_reads_mlm_layout_like_the_library(tiny_bert_dir, tmp_path, names, pooling, activation):
    path = save_st_mlm(tiny_bert_dir, tmp_path / "st", pooling, activation, max_seq_length=12)
    if names == "5.x":
        to_old_names(path)
    ours = SparseEncoder.from_pretrained(str(path), device="cpu")
    assert (ours.config.pooling, ours.config.activation, ours.config.max_length) == (pooling, activation, 12)
    assert_same_vectors(ours, path)  # the third text is cut at 12 tokens on both sides


@pytest.mark.parametrize("names", ["installed", "5.x"])
def test_reads_router_with_static_query_route(tiny_bert_dir, tmp_path, names):
    path = save_st_router(tiny_bert_dir, tmp_path / "st")
    if names == "5.x":
        to_old_names(path)
    ours = SparseEncoder.from_pretrained(str(path), device="cpu")
    assert ours.config.static_queries and ours.static_queries is not None
    assert_same_vectors(ours, path)
    query = ours.encode_queries("flow flow of the wing", pruning=ALL)
    assert set(query.to_features()) == {"flow", "of", "the", "wing"}, "a static query holds its own tokens only"


def test_lowercasing_is_honoured(tiny_bert_dir, tmp_path):
    """A cased tokenizer with do_lower_case: upper-case words must find their lower-case tokens."""
    from transformers import BertTokenizer

    cased = tmp_path / "cased"
    shutil.copytree(tiny_bert_dir, cased)
    BertTokenizer(str(cased / "vocab.txt"), do_lower_case=False).save_pretrained(cased)
    path = save_st_mlm(cased, tmp_path / "st")
    to_old_names(path)
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16, "do_lower_case": True}))
    ours = SparseEncoder.from_pretrained(str(path), device="cpu")
    assert ours.config.lowercase
    assert {"flow", "wing"} <= ours.text_features("FLOW WING")
    assert_same_vectors(ours, path)


@pytest.mark.parametrize("pooling,activation,static", [("max", "relu", False), ("sum", "log1p_relu", False),
                                                       ("max", "relu", True)])
def test_written_bundles_load_in_the_library(tiny_bert_dir, tmp_path, pooling, activation, static):
    ours = SparseEncoder.from_pretrained(str(tiny_bert_dir), device="cpu")
    ours.config = replace(ours.config, pooling=pooling, activation=activation, max_length=12)
    ours.use_static_queries(None)
    if static:
        weights = torch.rand(ours.vocab_size, generator=torch.Generator().manual_seed(5)) + 0.1
        ours.use_static_queries(StaticQueryEncoder(ours.tokenizer, weights, ours.config))
    bundle = ours.save_pretrained(tmp_path / "bundle")
    modules = json.loads((bundle / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == (["Router"] if static else ["MLMTransformer", "SpladePooling"])
    assert_same_vectors(ours, bundle)
    again = SparseEncoder.from_pretrained(str(bundle), device="cpu")
    assert again.config == ours.config
    np.testing.assert_array_equal(ours_dense(again.encode_queries(TEXTS, pruning=ALL)),
                                  ours_dense(ours.encode_queries(TEXTS, pruning=ALL)))


def test_saving_a_static_bundle_over_a_plain_one_leaves_no_stale_layout(tiny_bert_dir, tmp_path):
    ours = SparseEncoder.from_pretrained(str(tiny_bert_dir), device="cpu")
    bundle = ours.save_pretrained(tmp_path / "bundle")
    assert (bundle / "1_SpladePooling").is_dir() and (bundle / "config.json").is_file()
    ours.use_static_queries(StaticQueryEncoder(ours.tokenizer, torch.ones(ours.vocab_size), ours.config))
    ours.save_pretrained(bundle)
    assert not (bundle / "1_SpladePooling").exists() and not (bundle / "config.json").exists()
    assert SparseEncoder.from_pretrained(str(bundle), device="cpu").config.static_queries


def test_unsupported_module_is_a_one_line_error_naming_it(tiny_bert_dir, tmp_path):
    path = save_st_mlm(tiny_bert_dir, tmp_path / "st")
    modules = json.loads((path / "modules.json").read_text())
    modules[1]["type"] = "sentence_transformers.sparse_encoder.modules.sparse_auto_encoder.SparseAutoEncoder"
    (path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelLoadError, match="SparseAutoEncoder") as error:
        SparseEncoder.from_pretrained(str(path), device="cpu")
    assert "\n" not in str(error.value) and "modules.json" in str(error.value)
    modules[1]["type"] = "my_package.CustomPooling"
    (path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelLoadError, match="my_package.CustomPooling"):
        SparseEncoder.from_pretrained(str(path), device="cpu")


def test_refuses_what_it_cannot_reproduce(tiny_bert_dir, tmp_path):
    path = save_st_mlm(tiny_bert_dir, tmp_path / "st")
    card = json.loads((path / "config_sentence_transformers.json").read_text())
    (path / "config_sentence_transformers.json").write_text(json.dumps({**card, "prompts": {"query": "query: "}}))
    with pytest.raises(ModelLoadError, match="prompts"):
        SparseEncoder.from_pretrained(str(path), device="cpu")
    (path / "config_sentence_transformers.json").write_text(json.dumps(card))
    (path / "sentence_bert_config.json").write_text(json.dumps({"transformer_task": "feature-extraction"}))
    with pytest.raises(ModelLoadError, match="fill-mask"):
        SparseEncoder.from_pretrained(str(path), device="cpu")
    router = save_st_router(tiny_bert_dir, tmp_path / "router")
    config = json.loads((router / "router_config.json").read_text())
    config["structure"]["query"] = ["document_0_Transformer"]
    (router / "router_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="query route"):
        SparseEncoder.from_pretrained(str(router), device="cpu")


def test_splade_config_may_not_contradict_the_module_configs(tiny_bert_dir, tmp_path):
    ours = SparseEncoder.from_pretrained(str(tiny_bert_dir), device="cpu")
    bundle = ours.save_pretrained(tmp_path / "bundle")
    (bundle / "1_SpladePooling" / "config.json").write_text(json.dumps({"pooling_strategy": "sum"}))
    with pytest.raises(ModelLoadError, match="pooling is 'max' but the sentence-transformers files say 'sum'"):
        SparseEncoder.from_pretrained(str(bundle), device="cpu")


def test_a_hub_id_of_a_sparse_encoder_loads_its_snapshot(tiny_bert_dir, tmp_path, monkeypatch):
    """No hub here: huggingface_hub's two calls are replaced by a local snapshot."""
    import huggingface_hub

    snapshot = save_st_router(tiny_bert_dir, tmp_path / "snapshot")
    asked = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name: asked.append((repo, name)) or
                        str(snapshot / name))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo: str(snapshot))
    ours = SparseEncoder.from_pretrained("someone/doc-only-sparse", device="cpu")
    assert ("someone/doc-only-sparse", "modules.json") in asked and ours.config.static_queries
    assert_same_vectors(ours, snapshot)


@pytest.mark.parametrize("layout,transformer,max_length", [
    ("router", {"document_length": 6}, 6),  # the document route's length; queries never reach it
    ("router", {"document_length": 6, "query_length": 9}, 6),
    ("mlm", {"document_length": 6, "query_length": 6}, 6),
    ("mlm", {"document_length": 5, "query_length": 9, "processing_kwargs": {"text": {"max_length": 7}}}, 7),
])
def test_document_and_query_lengths_cut_like_the_library(tiny_bert_dir, tmp_path, layout, transformer, max_length):
    save = save_st_router if layout == "router" else save_st_mlm
    path = save(tiny_bert_dir, tmp_path / "st", **transformer)
    assert set(transformer) <= set(json.loads(next(path.rglob("sentence_bert_config.json")).read_text()))
    ours = SparseEncoder.from_pretrained(str(path), device="cpu")
    assert ours.config.max_length == max_length
    assert_same_vectors(ours, path)  # the short texts fit every length here, the long one is cut


@pytest.mark.parametrize("edit,names", [
    ({"document_length": 6}, "query_length / document_length"),  # queries would keep 16 tokens, documents 6
    ({"processing_kwargs": {"text": {"truncation": False}}}, "processing_kwargs text.truncation"),
    ({"processing_kwargs": {"common": {"max_length": 8}}}, "processing_kwargs common.max_length"),
    ({"query_expansion": {"strategy": "fixed", "length": 32}}, "query_expansion"),
    ({"modality_config": {"text": {"method": "forward", "method_output_name": "hidden_states"}}}, "modality_config"),
    ({"tokenizer_args": {"model_max_length": 8}}, "unknown key(s) tokenizer_args"),
    ({"do_lower_case": "yes"}, "do_lower_case"),
    ({"document_length": 0, "query_length": 0}, "query_length must be a positive integer"),
])
def test_a_setting_splade_es_cannot_follow_is_refused_by_file_and_key(tiny_bert_dir, tmp_path, edit, names):
    path = save_st_mlm(tiny_bert_dir, tmp_path / "st")
    config = path / "sentence_bert_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **edit}))
    with pytest.raises(ModelLoadError, match=re.escape(names)) as error:
        SparseEncoder.from_pretrained(str(path), device="cpu")
    assert str(error.value).startswith(str(config)) and "\n" not in str(error.value)


def test_an_unknown_pooling_key_is_refused(tiny_bert_dir, tmp_path):
    path = save_st_mlm(tiny_bert_dir, tmp_path / "st")
    pooling = path / "1_SpladePooling" / "config.json"
    pooling.write_text(json.dumps({**json.loads(pooling.read_text()), "temperature": 2.0}))
    with pytest.raises(ModelLoadError, match=re.escape(f"{pooling}: unknown key(s) temperature")):
        SparseEncoder.from_pretrained(str(path), device="cpu")


def cased_copy(tiny_bert_dir, out):
    """The tiny model with a tokenizer that keeps case (upper-case words are [UNK] to it)."""
    from transformers import BertTokenizer

    shutil.copytree(tiny_bert_dir, out)
    BertTokenizer(str(out / "vocab.txt"), do_lower_case=False).save_pretrained(out)
    return out


CASED_TEXTS = ["FLOW over the Wing", "the boundary LAYER", "Shock wave"]


def test_static_queries_are_cased_as_the_library_cases_them(tiny_bert_dir, tmp_path):
    """Reading: the documents are lower-cased (do_lower_case) but the SparseStaticEmbedding's own
    tokenizer keeps case, so the library's query misses 'FLOW'; splade-es must miss it too."""
    cased = cased_copy(tiny_bert_dir, tmp_path / "cased")
    path = save_st_router(cased, tmp_path / "st")
    to_old_names(path)
    (path / "document_0_Transformer" / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 16, "do_lower_case": True}))
    ours = SparseEncoder.from_pretrained(str(path), device="cpu")
    assert ours.config.lowercase and not ours.static_queries.lowercase
    assert "flow" not in ours.encode_queries("FLOW", pruning=ALL).to_features()
    assert "flow" in ours.encode_documents("FLOW", pruning=ALL).to_features()
    assert_same_vectors(ours, path, CASED_TEXTS)


def test_a_written_router_lower_cases_queries_in_the_library_too(tiny_bert_dir, tmp_path):
    """Writing: a lower-casing splade-es bundle's query route lower-cases in the library as well."""
    cased = cased_copy(tiny_bert_dir, tmp_path / "cased")
    ours = SparseEncoder.from_pretrained(str(cased), device="cpu")
    ours.config = replace(ours.config, lowercase=True)
    weights = torch.rand(ours.vocab_size, generator=torch.Generator().manual_seed(5)) + 0.1
    ours.use_static_queries(StaticQueryEncoder(ours.tokenizer, weights, ours.config))
    assert {"flow", "wing"} <= set(ours.encode_queries("FLOW WING", pruning=ALL).to_features())
    bundle = ours.save_pretrained(tmp_path / "bundle")
    assert_same_vectors(ours, bundle, CASED_TEXTS)
    again = SparseEncoder.from_pretrained(str(bundle), device="cpu")
    assert again.config == ours.config
    assert_same_vectors(again, bundle, CASED_TEXTS)


def test_special_ids_weigh_nothing_in_a_written_table(tiny_bert_dir, tmp_path):
    """The library looks a query's [UNK] up in the table: it must find 0 there, as splade-es drops it."""
    ours = SparseEncoder.from_pretrained(str(tiny_bert_dir), device="cpu")
    ours.use_static_queries(StaticQueryEncoder(ours.tokenizer, torch.ones(ours.vocab_size), ours.config))
    bundle = ours.save_pretrained(tmp_path / "bundle")
    library = StSparseEncoder(str(bundle), device="cpu")
    vector = library.encode_query(["flow € wing"], convert_to_tensor=True).to_dense()[0]
    assert ours.tokenizer.tokenize("flow € wing") == ["flow", "[UNK]", "wing"]
    assert torch.count_nonzero(vector) == 2 and float(vector[ours.tokenizer.unk_token_id]) == 0


def test_a_hub_id_of_a_doc_only_router_answers_queries_without_the_backbone(tiny_bert_dir, tmp_path, monkeypatch):
    import huggingface_hub

    from splade_es.model.static import load_query_encoder

    snapshot = save_st_router(tiny_bert_dir, tmp_path / "snapshot")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name: str(snapshot / name))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo: str(snapshot))
    for loader in ("splade_es.model.backbone.load_model", "transformers.AutoModelForMaskedLM.from_pretrained"):
        monkeypatch.setattr(loader, lambda *args, **kwargs: pytest.fail("the backbone was loaded"))
    queries = load_query_encoder("someone/doc-only-sparse")
    monkeypatch.undo()  # the library's own load below needs its model
    assert isinstance(queries, StaticQueryEncoder)
    assert_same_vectors(queries, snapshot)
