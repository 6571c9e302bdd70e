"""``splade-es eval`` on Cranfield through the local engine and both real engines.

The tiny random model ranks poorly, which is fine here: what is checked is that every engine
scores the same vectors the same way, the output contract, and the BM25 baseline.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SHARED_DATA, cranfield_indexed
from splade_es.toolkit.cli import main
from splade_es.toolkit.engines.connect import connect
from splade_es.toolkit.eval.beir import load_beir
from splade_es.toolkit.eval.metrics import evaluate

CRANFIELD = SHARED_DATA / "cranfield"
AGGREGATE_KEYS = ["dataset", "method", "index", "metrics", "latency_ms", "qps", "queries"]


def _invoke(*args: str) -> dict | str:
    result = CliRunner().invoke(main, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout) if "--json" in args else result.stdout


@pytest.fixture(scope="module", params=["local", "opensearch", "elasticsearch"])
def cran(request, tmp_path_factory, cranfield_vectors, tiny_mistral_dir):
    yield from cranfield_indexed(request.param, tmp_path_factory.mktemp(f"eval-{request.param}"), cranfield_vectors,
                                 tiny_mistral_dir, "eval", text_index=True)


@pytest.fixture(scope="module")
def local_cran(tmp_path_factory, cranfield_vectors, tiny_mistral_dir):
    """The CLI surface and input checks: engine-independent, so the local engine alone."""
    yield from cranfield_indexed("local", tmp_path_factory.mktemp("eval-cli"), cranfield_vectors, tiny_mistral_dir,
                                 "eval", text_index=True)


_LOCAL_NDCG: dict[str, float] = {}


def test_json_output_run_file_and_agreement_with_the_local_engine(cran):
    run_file = cran["tmp"] / "splade.run"
    data = _invoke("eval", "--dataset", str(CRANFIELD), "--index", cran["splade"], *cran["where"], "--json",
                   "--run-file", str(run_file))
    assert list(data)[:len(AGGREGATE_KEYS)] == AGGREGATE_KEYS and list(data)[-1] == "per_query"
    assert data["dataset"] == "cranfield" and data["method"] == "splade" and data["queries"] == 225
    assert set(data["metrics"]) == {"ndcg@10", "recall@100", "mrr@10", "map"}
    assert all(0.0 <= value <= 1.0 for value in data["metrics"].values())
    assert data["metrics"]["recall@100"] > 0.1  # real retrieval, not an empty run
    assert len(data["per_query"]) == 225
    mean = np.mean([values["ndcg@10"] for values in data["per_query"].values()])
    assert data["metrics"]["ndcg@10"] == pytest.approx(mean, abs=1e-6)
    latency = data["latency_ms"]
    assert 0 <= latency["p50"] <= latency["p95"] <= latency["p99"] and data["qps"] > 0
    assert data["index_docs"] == 1400 and data["index_size_bytes"] > 0 and data["encode_ms"] > 0

    # The TREC run file scores to the same metrics.
    run: dict = {}
    for line in run_file.read_text().splitlines():
        qid, q0, did, rank, score, tag = line.split()
        assert q0 == "Q0" and tag == "splade-es-splade"
        run.setdefault(qid, {})[did] = float(score)
    assert max(len(docs) for docs in run.values()) <= 1000
    means, _ = evaluate(load_beir(CRANFIELD).qrels, run)
    assert means["ndcg@10"] == pytest.approx(data["metrics"]["ndcg@10"], abs=1e-4)

    print(f"{cran['kind']}: splade nDCG@10 {data['metrics']['ndcg@10']:.4f}")
    if cran["kind"] == "local":
        _LOCAL_NDCG["splade"] = data["metrics"]["ndcg@10"]
    else:
        assert "splade" in _LOCAL_NDCG, "the local engine's run goes first"
        assert abs(data["metrics"]["ndcg@10"] - _LOCAL_NDCG["splade"]) <= 0.005


def test_bm25_and_hybrid(cran, tiny_mistral_dir):
    bm25 = _invoke("eval", "--dataset", str(CRANFIELD), "--index", cran["text"], "--method", "bm25",
                   *cran["where"], "--json")
    assert bm25["method"] == "bm25" and bm25["encode_ms"] is None
    assert bm25["metrics"]["ndcg@10"] > 0.25  # BM25 on Cranfield is a real baseline
    hybrid = _invoke("eval", "--dataset", str(CRANFIELD), "--index", cran["splade"], "--method", "hybrid",
                     *cran["where"], "--json", "--k", "100")
    assert hybrid["k"] == 100
    expected = _rrf_by_hand(cran["engine"], cran["splade"], tiny_mistral_dir, 100)
    assert hybrid["metrics"]["ndcg@10"] == pytest.approx(expected["ndcg@10"], abs=1e-6)
    assert hybrid["metrics"]["recall@100"] == pytest.approx(expected["recall@100"], abs=1e-6)


def _rrf_by_hand(engine, index: str, model_dir, k: int) -> dict[str, float]:
    """The hybrid run rebuilt from plain BM25 and sparse searches, fused by RRF (constant 60)
    written out here, scored by the standard evaluator: what ``eval --method hybrid`` must give."""
    from splade_es.model import SparseEncoder
    from splade_es.toolkit.query.searcher import Searcher

    dataset = load_beir(CRANFIELD)
    qids = list(dataset.queries)
    vectors = SparseEncoder.from_pretrained(str(model_dir), device="cpu").encode_queries(
        [dataset.queries[q] for q in qids], show_progress=False)
    searcher = Searcher(engine, index)

    def search(bodies: list[dict]) -> list[dict]:
        bodies = [{**body, "_source": False} for body in bodies]
        return [reply for start in range(0, len(bodies), 32) for reply in engine.msearch(index, bodies[start:start + 32])]

    bm25 = search([searcher.body(searcher.bm25_query(dataset.queries[q]), k) for q in qids])
    sparse = search([searcher.sparse_body(v.to_features(), k) for v in vectors])
    run = {}
    for qid, *replies in zip(qids, bm25, sparse):
        fused: dict[str, float] = {}
        for reply in replies:
            for rank, hit in enumerate(reply["hits"]["hits"], start=1):
                fused[hit["_id"]] = fused.get(hit["_id"], 0.0) + 1.0 / (60 + rank)
        run[qid] = dict(sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k])
    means, _ = evaluate(dataset.qrels, run)
    return means


def test_text_summary_and_precomputed_query_vectors(local_cran, tiny_mistral_dir):
    cran = local_cran
    from splade_es.model import SparseEncoder

    dataset = load_beir(CRANFIELD)
    encoder = SparseEncoder.from_pretrained(str(tiny_mistral_dir), device="cpu")
    vectors = encoder.encode_queries(list(dataset.queries.values()), show_progress=False)
    # BEIR's queries.jsonl as it is ("_id"), through `encode --query`: what the quickstart does.
    path = cran["tmp"] / "queries.jsonl"
    done = CliRunner().invoke(main, ["encode", "--model", str(tiny_mistral_dir), "--query", "--json", "--input",
                                     str(CRANFIELD / "queries.jsonl"), "--output", str(path)])
    assert done.exit_code == 0, done.output
    written = [json.loads(line) for line in path.read_text().splitlines()]
    assert [row["id"] for row in written] == list(dataset.queries)
    for row, vector in zip(written, vectors):
        assert row["features"] == pytest.approx(vector.to_features(), rel=1e-6)
    encoded = _invoke("eval", "--dataset", str(CRANFIELD), "--index", cran["splade"], *cran["where"], "--json")
    given = _invoke("eval", "--dataset", str(CRANFIELD), "--index", cran["splade"], *cran["where"], "--json",
                    "--query-vectors", str(path))
    assert given["metrics"] == pytest.approx(encoded["metrics"]) and given["encode_ms"] is None
    pruned = _invoke("eval", "--dataset", str(CRANFIELD), "--index", cran["splade"], *cran["where"], "--json",
                     "--query-vectors", str(path), "--query-top-k", "3")
    assert pruned["metrics"] != given["metrics"]
    text = _invoke("eval", "--dataset", str(CRANFIELD), "--index", cran["splade"], *cran["where"])
    assert "cranfield (test): 225 queries" in text and "nDCG@10" in text and "p95" in text


@pytest.mark.parametrize("problem", ["missing file", "missing split", "empty index", "no vector field",
                                     "unknown index", "bad query vectors"])
def test_bad_input_is_one_line_and_a_nonzero_exit(local_cran, problem, tmp_path):
    cran = local_cran
    dataset, index, extra = str(CRANFIELD), cran["splade"], []
    if problem == "missing file":
        broken = tmp_path / "broken"
        (broken / "qrels").mkdir(parents=True)
        (broken / "corpus.jsonl").write_text((CRANFIELD / "corpus.jsonl").read_text())
        (broken / "qrels" / "test.tsv").write_text((CRANFIELD / "qrels" / "test.tsv").read_text())
        dataset, expected = str(broken), "broken: missing queries.jsonl"
    elif problem == "missing split":
        extra, expected = ["--split", "dev"], "no split 'dev' (qrels/dev.tsv); available: test"
    elif problem == "empty index":
        index = "empty-one"
        connect(None, "local", cran["where"][1]).create_index(index, {"mappings": {"properties": {}}})
        expected = "index 'empty-one' is empty"
    elif problem == "no vector field":
        index, expected = cran["text"], "holds text documents, not splade vectors"
    elif problem == "unknown index":
        index, expected = "nowhere", "no index named 'nowhere'"
    else:
        vectors = tmp_path / "q.jsonl"
        vectors.write_text('{"id": "1", "features": {"wing": 1.0}}\n')
        extra, expected = ["--query-vectors", str(vectors)], "no vector for 224 of the 225 queries (e.g. query '2')"
    result = CliRunner().invoke(main, ["eval", "--dataset", dataset, "--index", index, *cran["where"], *extra,
                                       "--no-progress"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and expected in result.output
    assert result.output.count("\n") == 1
