"""benchmarks/engine_scale.py end to end on a real OpenSearch node, on a tiny generated corpus:
every load counted, the exact form agreeing with itself, and ``--reuse`` timing other settings
on the indices a run left (and refusing indices that hold another corpus)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import engine_url

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "engine_scale.py"


def _generate(out: Path, docs: int, seed: int = 5) -> Path:
    command = [sys.executable, str(ROOT / "benchmarks" / "scale_corpus.py"), "generate", "--stats",
               str(ROOT / "benchmarks" / "results" / "scale_stats_cranfield_quickstart.json"),
               "--docs", str(docs), "--queries", "30", "--seed", str(seed), "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    return out


def _run(url: str, corpus: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), "--url", url, "--corpora", str(corpus), "--queries", "30",
               "--out", str(out), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)


@pytest.fixture(scope="module")
def first_run(request, tmp_path_factory):
    url = engine_url("opensearch")

    def drop_indices() -> None:
        from splade_es.toolkit.engines.connect import connect

        with connect(url) as engine:
            for index in ("scale-bulk", "scale-splade", "scale-pruned", "scale-text"):
                engine.delete_index(index)

    request.addfinalizer(drop_indices)  # registered first: a failed run is cleaned up too
    tmp = tmp_path_factory.mktemp("engine-scale")
    corpus = _generate(tmp / "corpus", 600)
    done = _run(url, corpus, tmp / "first.json")
    assert done.returncode == 0, done.stderr[-3000:]
    return url, corpus, tmp, json.loads((tmp / "first.json").read_text())


def test_a_run_loads_every_document_and_measures_every_form(first_run):
    _, _, _, result = first_run
    run = result["runs"][0]
    assert run["docs"] == 600
    assert {step: load["docs"] for step, load in run["loads"].items()} == dict.fromkeys(
        ("bulk", "ingest", "pruned", "text"), 600)
    methods = run["methods"]
    assert set(methods) == {"bm25", "splade full", "splade top-16", "two-phase 8", "splade full, pruned documents"}
    # Pruned forms lose some of the exact top 10 but not all of it; BM25 ranks by other evidence.
    for method in ("splade top-16", "two-phase 8", "splade full, pruned documents"):
        assert 0.2 < methods[method]["recall@10_vs_full"] < 1.0, method
    assert methods["splade full"]["ndcg@10"] > methods["splade top-16"]["ndcg@10"]
    # The pruned index drops postings: it is smaller than the full one, which is larger than text alone.
    disk = run["disk"]
    assert disk["text"]["bytes"] < disk["pruned"]["bytes"] < disk["ingest"]["bytes"]


def test_reuse_times_other_settings_without_loading(first_run):
    url, corpus, tmp, result = first_run
    done = _run(url, corpus, tmp / "again.json", "--reuse", "--top-k", "4", "--two-phase", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads((tmp / "again.json").read_text())["runs"][0]
    assert run["reused"] is True and "loads" not in run and run["docs"] == 600
    assert run["doc_min_weight"] == result["runs"][0]["doc_min_weight"]  # read back from the pruned index
    assert {"splade top-4", "two-phase 2"} <= set(run["methods"])
    # Same indices, same queries: the exact forms rank as the first run did.
    for method in ("bm25", "splade full", "splade full, pruned documents"):
        assert run["methods"][method]["ndcg@10"] == result["runs"][0]["methods"][method]["ndcg@10"], method
    # Fewer query terms should not keep more of the exact top 10 than 16 kept (same queries, same index).
    assert run["methods"]["splade top-4"]["recall@10_vs_full"] <= result["runs"][0]["methods"]["splade top-16"][
        "recall@10_vs_full"]


@pytest.mark.parametrize(("docs", "seed"), [(300, 5), (600, 6)])
def test_reuse_refuses_indices_of_another_corpus(first_run, docs, seed):
    """Another size, or the same size from another seed: the indices hold another corpus."""
    url, corpus, tmp, _ = first_run
    other = _generate(tmp / f"other-{docs}-{seed}", docs, seed)
    done = _run(url, other, tmp / "refused.json", "--reuse")
    assert done.returncode == 1
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from engine_scale import fingerprint
    finally:
        sys.path.remove(str(SCRIPT.parent))
    held, offered = fingerprint(corpus), fingerprint(other)
    assert held != offered
    assert done.stderr.strip().splitlines()[-1] == (
        f"--reuse: scale-splade holds corpus {held}, not {other} ({offered}): run once without --reuse first")
    assert not (tmp / "refused.json").exists()


def test_reuse_refuses_a_pruning_threshold(first_run):
    url, corpus, tmp, _ = first_run
    done = _run(url, corpus, tmp / "refused.json", "--reuse", "--doc-min-weight", "0.5")
    assert done.returncode == 2 and "no --doc-min-weight" in done.stderr
    assert not (tmp / "refused.json").exists()
