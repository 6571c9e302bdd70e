"""Inference-free queries end to end: `splade-es idf`, then search and eval without the backbone,
with the same exact query forms on every engine (Elasticsearch has no doc-only mode of its own)."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from click.testing import CliRunner

from splade_es.model import SparseEncoder
from splade_es.model.static import StaticQueryEncoder, load_query_encoder
from splade_es.toolkit.cli import main
from splade_es.toolkit.engines.connect import connect
from tests.conftest import SHARED_DATA, engine_url

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
    from splade_es.io.corpus import read_corpus, resolve_corpus

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
