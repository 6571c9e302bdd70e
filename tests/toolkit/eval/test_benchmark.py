"""``splade-es benchmark`` on Cranfield (bm25, splade) on the local engine and real OpenSearch."""

from __future__ import annotations

import json
import uuid

import pytest
from click.testing import CliRunner

from conftest import SHARED_DATA, engine_url
from splade_es.toolkit.cli import main
from splade_es.toolkit.engines.connect import connect
from splade_es.toolkit.eval.benchmark import index_name
from splade_es.toolkit.eval.report import markdown
from splade_es.toolkit.eval.runner import EvalResult

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("kind", ["local", "opensearch"])
def test_benchmark_writes_a_report_with_charts_and_reuses_indices(kind, tmp_path, tiny_mistral_dir):
    where = ["--data-dir", str(tmp_path / "engine")] if kind == "local" else ["--url", engine_url(kind)]
    prefix = f"b{uuid.uuid4().hex[:6]}-"
    out = tmp_path / "report"
    args = ["benchmark", "--datasets", str(SHARED_DATA / "cranfield"), "--methods", "bm25,splade",
            "--model", str(tiny_mistral_dir), "--out", str(out), "--index-prefix", prefix, *where, "--no-progress"]
    try:
        first = CliRunner().invoke(main, args)
        assert first.exit_code == 0, first.output
        assert "indexing cranfield (text)" in first.stderr and "indexing cranfield (splade)" in first.stderr
        for name in ("report.md", "results.json", "ndcg.png", "latency_vs_ndcg.png", "index_size.png"):
            assert (out / name).is_file(), name
        for chart in ("ndcg.png", "latency_vs_ndcg.png", "index_size.png"):
            assert (out / chart).read_bytes()[:8] == PNG and (out / chart).stat().st_size > 5000
        results = json.loads((out / "results.json").read_text())["results"]
        assert [(r["dataset"], r["method"]) for r in results] == [("cranfield", "bm25"), ("cranfield", "splade")]
        bm25, splade = results
        assert bm25["index_size_bytes"] < splade["index_size_bytes"]  # text only versus text and vectors
        report = (out / "report.md").read_text()
        row = f"| cranfield | {100 * bm25['metrics']['ndcg@10']:.2f} | {100 * splade['metrics']['ndcg@10']:.2f} |"
        assert row in report and "ELSER v2 (published)" in report and "![ndcg](ndcg.png)" in report
        assert not list(out.glob("failures-*.jsonl"))

        again = CliRunner().invoke(main, args)
        assert again.exit_code == 0, again.output
        assert "indexing" not in again.stderr and again.stderr.count("reusing (1400 documents") == 2
        rerun = json.loads((out / "results.json").read_text())["results"]
        assert [r["metrics"] for r in rerun] == [r["metrics"] for r in results]
    finally:
        if kind != "local":
            engine = connect(engine_url(kind))
            for index in engine.mappings(f"{prefix}*"):
                engine.delete_index(index)


def test_benchmark_refuses_an_incomplete_index_and_reuses_only_a_complete_one(tmp_path):
    """A document refused during the load: benchmark stops instead of evaluating a partial index. An index
    that lost a document since its complete load is rebuilt before it is evaluated."""
    from toolkit.fault_proxy import FaultProxy

    url = engine_url("opensearch")
    prefix = f"b{uuid.uuid4().hex[:6]}-"
    engine = connect(url)
    refused = {"42"}
    try:
        with FaultProxy(url, items=lambda doc_id, attempt: 400 if doc_id in refused else None) as proxy:
            args = ["benchmark", "--datasets", str(SHARED_DATA / "cranfield"), "--methods", "bm25", "--out",
                    str(tmp_path / "out"), "--index-prefix", prefix, "--url", proxy.url, "--no-progress"]
            partial = CliRunner().invoke(main, args)
            assert partial.exit_code == 1 and "refusing to evaluate an incomplete index" in partial.output
            assert "1 documents were refused" in partial.output and not (tmp_path / "out" / "report.md").exists()
            refused.clear()
            complete = CliRunner().invoke(main, args)
            assert complete.exit_code == 0, complete.output
            index = index_name(prefix, "cranfield", "text")
            assert engine.count(index) == 1400
            engine._send("DELETE", f"/{index}/_doc/7", params={"refresh": "true"})
            again = CliRunner().invoke(main, args)
        assert again.exit_code == 0, again.output
        assert "reusing" not in again.stderr and f"{index}: indexing cranfield (text)" in again.stderr
        assert engine.count(index) == 1400
    finally:
        for name in engine.mappings(f"{prefix}*"):
            engine.delete_index(name)
        engine.close()


def _result(dataset: str, method: str, ndcg: float) -> EvalResult:
    return EvalResult(dataset, method, "i", "test", 1000, {"ndcg@10": ndcg, "recall@100": 0.5, "mrr@10": 0.5,
                                                           "map": 0.3}, {}, {"p50": 1.0, "p95": 2.0, "p99": 3.0},
                      100.0, 10, index_size_bytes=2**20)


def test_report_puts_published_figures_in_their_own_columns():
    text = markdown([_result("scifact", "bm25", 0.6612), _result("scifact", "splade", 0.7),
                     _result("fiqa", "bm25", 0.2), _result("fiqa", "splade", 0.3)], {"engine": "x"}, [])
    assert "| Dataset | **bm25** | **splade** | BM25 (published) | SPLADE++ (published) | ELSER v2 (published) | " \
           "Echo-Mistral-SPLADE (published) |" in text
    assert "| scifact | 66.12 | 70.00 | 66.5 | 71 | 71.8 | 77.24 |" in text
    assert "| fiqa | 20.00 | 30.00 | 23.6 | — | 41.6 | 57.71 |" in text
    assert "| **average** | 43.06 | 50.00 |" in text


def test_index_names_are_valid():
    assert index_name("Bench-", "BEIR FiQA", "splade", "ab12cd34") == "bench-beir-fiqa-splade-ab12cd34"
    assert index_name("", "_x", "text") == "x-text"
