"""Inference-free queries end to end: `splade-es idf`, then search and eval without the backbone,
with the same exact query forms on every engine (Elasticsearch has no doc-only mode of its own)."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from splade_es.errors import ModelLoadError
from splade_es.io.corpus import read_corpus, resolve_corpus

from splade_es.model import SparseEncoder, st_format
from splade_es.model.config import SpladeConfig
from splade_es.model.static import (WEIGHTS_NAME, StaticQueryEncoder, corpus_idf, load_query_encoder, read_weights,
                                    write_weights)
from splade_es.toolkit.cli import main
from splade_es.toolkit.engines.connect import connect
from tests.conftest import SHARED_DATA, engine_url
from tests.model.test_st_format import assert_same_vectors, save_st_router

SUBSET_DOCS = 300  # the first Cranfield documents: enough for exact rankings, fast to encode and index
QUERIES = ["boundary layer transition on a flat plate", "heat transfer at supersonic speed", "lift of a wing body"]


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def cranfield(tmp_path_factory):
    """A BEIR directory: the first documents of Cranfield, all queries, the judgments on those documents."""
    source, out = SHARED_DATA / "cranfield", tmp_path_factory.mktemp("cranfield-subset")
    lines = (source / "corpus.jsonl").read_text().splitlines()[:SUBSET_DOCS]
    (out / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    (out / "queries.jsonl").write_text((source / "queries.jsonl").read_text())
    ids = {json.loads(line)["_id"] for line in lines}
    qrels = (source / "qrels" / "test.tsv").read_text().splitlines()
    (out / "qrels").mkdir()
    (out / "qrels" / "test.tsv").write_text("\n".join([qrels[0], *(r for r in qrels[1:] if r.split("\t")[1] in ids)]))
    return out


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_bert_dir):
    return SparseEncoder.from_pretrained(str(tiny_bert_dir), device="cpu").save_pretrained(
        tmp_path_factory.mktemp("static") / "bundle")


@pytest.fixture(scope="module")
def doc_vectors(bundle, cranfield) -> dict[str, dict[str, float]]:

    documents = list(read_corpus(resolve_corpus(cranfield, None, None)))
    encoder = SparseEncoder.from_pretrained(str(bundle), device="cpu")
    vectors = encoder.encode_documents([d.text for d in documents], show_progress=False)
    return {d.id: v.to_features() for d, v in zip(documents, vectors)}


def _ingest(bundle, cranfield, vectors_file, args, state) -> str:
    index = f"static-{uuid.uuid4().hex[:8]}"
    _ok(CliRunner().invoke(main, ["ingest", "--index", index, "--corpus", str(cranfield), "--model", str(bundle),
                                  "--vectors", str(vectors_file), "--no-progress", "--state-dir", str(state), *args]))
    return index


@pytest.fixture(scope="module")
def vectors_file(doc_vectors, tmp_path_factory):
    path = tmp_path_factory.mktemp("vectors-in") / "vectors.jsonl"
    path.write_text("".join(json.dumps({"id": i, "features": f}) + "\n" for i, f in doc_vectors.items()))
    return path


@pytest.fixture(scope="module")
def local_index(bundle, cranfield, vectors_file, tmp_path_factory):
    """Built with the full bundle *before* its queries become static: it must keep answering."""
    data_dir = tmp_path_factory.mktemp("local-static")
    index = _ingest(bundle, cranfield, vectors_file, ["--data-dir", str(data_dir)], data_dir / "state")
    yield {"index": index, "args": ["--data-dir", str(data_dir)]}


@pytest.fixture(scope="module")
def static_bundle(bundle, cranfield, local_index):
    result = _ok(CliRunner().invoke(main, ["idf", "--model", str(bundle), "--corpus", str(cranfield), "--json"]))
    assert json.loads(result.stdout)["documents"] == SUBSET_DOCS
    return bundle


@pytest.fixture(scope="module", params=["local", "opensearch", "elasticsearch"])
def indexed(request, static_bundle, cranfield, vectors_file, local_index, tmp_path_factory):
    if request.param == "local":
        yield local_index
        return
    url = engine_url(request.param)
    index = _ingest(static_bundle, cranfield, vectors_file, ["--url", url], tmp_path_factory.mktemp("state"))
    yield {"index": index, "args": ["--url", url]}
    engine = connect(url)
    engine.delete_index(index)
    engine.close()


def test_search_scores_static_queries_exactly_on_every_engine(indexed, static_bundle, doc_vectors, no_backbone):
    static = load_query_encoder(str(static_bundle))
    assert isinstance(static, StaticQueryEncoder)
    ids = list(doc_vectors)
    for query in QUERIES:
        data = json.loads(_ok(CliRunner().invoke(main, ["search", "--index", indexed["index"], *indexed["args"],
                                                        "--json", "--k", "10", query])).stdout)
        vector = static.encode_queries(query).to_features()
        assert {t: v["weight"] for t, v in data["query_vector"].items()} == pytest.approx(vector)
        assert not any(v["expansion"] for v in data["query_vector"].values()), "a static query has no expansions"
        exact = np.array([sum(w * doc_vectors[i].get(t, 0.0) for t, w in vector.items()) for i in ids])
        got = [hit["score"] for hit in data["hits"]]
        assert len(got) == 10 and exact.max() > 0
        np.testing.assert_allclose(got, np.sort(exact)[::-1][:10], rtol=2 ** -7)
        for hit in data["hits"]:  # Lucene keeps 9 significant bits of each weight
            assert hit["score"] == pytest.approx(exact[ids.index(hit["id"])], rel=2 ** -7)


def test_eval_with_a_static_bundle_equals_its_precomputed_query_vectors(local_index, static_bundle, cranfield,
                                                                          tmp_path, no_backbone):
    queries = [json.loads(line) for line in (cranfield / "queries.jsonl").read_text().splitlines()]
    static = load_query_encoder(str(static_bundle))
    precomputed = tmp_path / "queries.jsonl"
    precomputed.write_text("".join(json.dumps({"id": q["_id"], "features": v.to_features()}) + "\n"
                                   for q, v in zip(queries, static.encode_queries([q["text"] for q in queries]))))
    base = ["eval", "--dataset", str(cranfield), "--index", local_index["index"], *local_index["args"], "--json",
            "--no-progress"]
    direct = json.loads(_ok(CliRunner().invoke(main, base)).stdout)
    given = json.loads(_ok(CliRunner().invoke(main, [*base, "--query-vectors", str(precomputed)])).stdout)
    assert direct["metrics"] == given["metrics"] and direct["metrics"]["ndcg@10"] > 0


def test_idf_bad_corpus_is_one_line_with_file_and_line(bundle, tmp_path):
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"_id": "1", "title": "a", "text": "b"}\n{not json\n')
    result = CliRunner().invoke(main, ["idf", "--model", str(bundle), "--corpus", str(corpus), "--output",
                                       str(tmp_path / "out")])
    assert result.exit_code == 1 and f"{corpus}:2" in result.output and not (tmp_path / "out").exists()


def test_idf_in_place_keeps_a_bundle_the_library_reads_alike(static_bundle):
    """The masked LM + SpladePooling bundle became a Router: sentence-transformers' encode_query
    uses the table too, and the documents (whose vectors the index holds) did not change."""
    modules = json.loads((static_bundle / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Router"] and not (static_bundle / WEIGHTS_NAME).exists()
    static = load_query_encoder(str(static_bundle))
    assert isinstance(static, StaticQueryEncoder)
    assert_same_vectors(static, static_bundle, QUERIES)


def test_idf_in_place_documents_are_unchanged(static_bundle, doc_vectors, cranfield):
    documents = list(read_corpus(resolve_corpus(cranfield, None, None)))[:20]
    encoder = SparseEncoder.from_pretrained(str(static_bundle), device="cpu")
    assert [v.to_features() for v in encoder.encode_documents([d.text for d in documents])] == \
        [doc_vectors[d.id] for d in documents]
    assert_same_vectors(encoder, static_bundle, QUERIES)


def test_idf_in_place_on_a_router_writes_into_its_static_module(tiny_bert_dir, cranfield, tmp_path):
    router = save_st_router(tiny_bert_dir, tmp_path / "router")
    table = router / "query_0_SparseStaticEmbedding" / st_format.STATIC_WEIGHTS_NAME
    (router / WEIGHTS_NAME).write_bytes(b"left by an earlier release")
    before = read_weights(table)
    _ok(CliRunner().invoke(main, ["idf", "--model", str(router), "--corpus", str(cranfield)]))
    expected = corpus_idf(str(router), (d.text for d in read_corpus(resolve_corpus(cranfield, None, None))))[0]
    after = read_weights(table)
    assert after.shape == before.shape and not (router / WEIGHTS_NAME).exists()
    assert float((after - expected.table(after.shape[0])).abs().max()) < 1e-6 and after[0] == 0  # [PAD]
    static = load_query_encoder(str(router))
    assert isinstance(static, StaticQueryEncoder)
    assert_same_vectors(static, router, QUERIES)


def test_idf_in_place_that_fails_leaves_the_bundle_as_it_was(tiny_bert_dir, cranfield, tmp_path, monkeypatch):
    bundle = SparseEncoder.from_pretrained(str(tiny_bert_dir), device="cpu").save_pretrained(tmp_path / "bundle")
    files = {p.relative_to(bundle): p.read_bytes() for p in bundle.rglob("*") if p.is_file()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(st_format, "_write_router", disk_full)
    result = CliRunner().invoke(main, ["idf", "--model", str(bundle), "--corpus", str(cranfield)])
    assert result.exit_code != 0
    assert {p.relative_to(bundle): p.read_bytes() for p in bundle.rglob("*") if p.is_file()} == files
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"], "no staging directory left behind"


def test_idf_in_place_that_dies_mid_commit_is_refused_then_repaired_by_a_rerun(tiny_bert_dir, cranfield, tmp_path,
                                                                                 monkeypatch):
    """A rewrite that stops after the Router's entries and splade_config.json are in, before modules.json:
    loading refuses in one line (never silently the wrong queries); rerunning idf gives the library's
    vectors, with the half-written Router entries replaced rather than nested in the document route."""
    bundle = SparseEncoder.from_pretrained(str(tiny_bert_dir), device="cpu").save_pretrained(tmp_path / "bundle")
    real_replace = os.replace

    def dies_at_modules(source, target):
        if Path(target).name == "modules.json":
            raise OSError(5, "Input/output error")
        real_replace(source, target)

    monkeypatch.setattr(st_format.os, "replace", dies_at_modules)
    died = CliRunner().invoke(main, ["idf", "--model", str(bundle), "--corpus", str(cranfield)])
    assert died.exit_code == 1 and "could not rewrite the bundle in place (Input/output error)" in died.output
    assert "Traceback" not in died.output and len(died.output.strip().splitlines()) == 1
    assert (bundle / "router_config.json").exists() and not any(p.name.startswith(".") for p in bundle.iterdir())
    with pytest.raises(ModelLoadError, match="run 'splade-es idf' on it again"):
        load_query_encoder(str(bundle))
    monkeypatch.setattr(st_format.os, "replace", real_replace)
    _ok(CliRunner().invoke(main, ["idf", "--model", str(bundle), "--corpus", str(cranfield)]))
    assert_same_vectors(load_query_encoder(str(bundle)), bundle, QUERIES)
    nested = [p for p in (bundle / st_format.DOCUMENT_DIR).iterdir() if p.name in st_format._ROUTER_ENTRIES]
    assert not nested, nested


def test_a_bundle_static_by_config_only_is_refused_until_idf_rewrites_it(tiny_bert_dir, cranfield, tmp_path):
    """What 'idf' in place used to write: the library ran the masked LM on queries, splade-es the table."""
    bundle = SparseEncoder.from_pretrained(str(tiny_bert_dir), device="cpu").save_pretrained(tmp_path / "bundle")
    write_weights(bundle / WEIGHTS_NAME, torch.ones(64))
    replace(SpladeConfig.load(bundle), query_encoder="static").save(bundle)
    with pytest.raises(ModelLoadError, match="run 'splade-es idf' on it again") as error:
        load_query_encoder(str(bundle))
    assert "\n" not in str(error.value)
    _ok(CliRunner().invoke(main, ["idf", "--model", str(bundle), "--corpus", str(cranfield)]))
    assert isinstance(load_query_encoder(str(bundle)), StaticQueryEncoder)
