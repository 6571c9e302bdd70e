"""benchmarks/engine_scale.py end to end on a real OpenSearch node (and Elasticsearch for its token
pruning), on a tiny generated corpus: every load counted, the exact form agreeing with itself, and
``--reuse`` timing other settings on the indices a run left (and refusing indices that hold another
corpus)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import engine_url

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "engine_scale.py"
PREFIX = f"test-scale-{uuid.uuid4().hex[:8]}-"  # never a benchmark's own scale-* indices


@pytest.fixture
def fingerprint(engine_scale):
    """The script's own corpus fingerprint."""
    return engine_scale.fingerprint


def _generate(out: Path, docs: int, seed: int = 5) -> Path:
    command = [sys.executable, str(ROOT / "benchmarks" / "scale_corpus.py"), "generate", "--stats",
               str(ROOT / "benchmarks" / "results" / "scale_stats_cranfield_quickstart.json"),
               "--docs", str(docs), "--queries", "30", "--seed", str(seed), "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    return out


def _run(url: str, corpus: str | Path, out: Path, *extra: str, prefix: str = PREFIX) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), "--url", url, "--corpora", str(corpus), "--queries", "30",
               "--index-prefix", prefix, "--out", str(out), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)


@pytest.fixture(scope="module")
def first_run(request, tmp_path_factory):
    url = engine_url("opensearch")

    def drop_indices() -> None:
        from splade_es.toolkit.engines.connect import connect

        with connect(url) as engine:
            for suffix in ("bulk", "splade", "pruned", "text", "bare-splade", "bare-pruned"):
                engine.delete_index(PREFIX + suffix)

    request.addfinalizer(drop_indices)  # registered first: a failed run is cleaned up too
    tmp = tmp_path_factory.mktemp("engine-scale")
    corpus = _generate(tmp / "corpus", 600)
    done = _run(url, corpus, tmp / "first.json", "--shards", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    return url, corpus, tmp, json.loads((tmp / "first.json").read_text())


def test_a_run_loads_every_document_and_measures_every_form(first_run):
    _, _, _, result = first_run
    run = result["runs"][0]
    assert run["docs"] == 600 and run["shards"] == 2
    assert {step: load["docs"] for step, load in run["loads"].items()} == dict.fromkeys(
        ("bulk", "ingest", "pruned", "text"), 600)
    methods = run["methods"]
    assert set(methods) == {"bm25", "splade full", "splade top-16", "two-phase 8", "splade full, pruned documents"}
    # Pruned forms lose some of the exact top 10 but not all of it; BM25 ranks by other evidence.
    for method in ("splade top-16", "two-phase 8", "splade full, pruned documents"):
        assert 0.2 < methods[method]["recall@10_vs_full"] < 1.0, method
    assert methods["splade full"]["ndcg@10"] >= methods["splade top-16"]["ndcg@10"]
    # Every method timed on every query, twice (the interleaved passes); BM25 is its own yardstick.
    assert run["timed_per_method"] == dict.fromkeys(methods, 60)
    # (On 600 documents BM25's took median may be 0 ms: no took ratio then, rather than a made-up one.)
    assert methods["bm25"]["p50_vs_bm25"]["client"] == 1.0
    took_ratios = {name: method["p50_vs_bm25"]["took"] for name, method in methods.items()}
    assert took_ratios["bm25"] in (1.0, None) and len({ratio is None for ratio in took_ratios.values()}) == 1
    for name, method in methods.items():  # over BM25's median, not under it, and not another method's
        expected = method["client_ms"]["p50"] / methods["bm25"]["client_ms"]["p50"]
        assert method["p50_vs_bm25"]["client"] == pytest.approx(expected, abs=0.011), name
    # The pruned index drops postings: it is smaller than the full one, which is larger than text alone.
    disk = run["disk"]
    assert disk["text"]["bytes"] < disk["pruned"]["bytes"] < disk["ingest"]["bytes"]


def _uuids(url: str) -> dict[str, str]:
    from splade_es.toolkit.engines.connect import connect

    names = ",".join(PREFIX + suffix for suffix in ("bulk", "splade", "pruned", "text"))
    with connect(url) as engine:
        settings = engine._send("GET", f"/{names}/_settings")
    return {index: body["settings"]["index"]["uuid"] for index, body in settings.items()}


def test_reuse_times_other_settings_without_loading(first_run):
    url, corpus, tmp, result = first_run
    before = _uuids(url)
    done = _run(url, corpus, tmp / "again.json", "--reuse", "--top-k", "4,12", "--two-phase", "2,4")
    assert done.returncode == 0, done.stderr[-3000:]
    assert _uuids(url) == before and len(before) == 4  # the same four indices: nothing was recreated
    for index in before:
        assert _shards(url, index) == 2, index  # --shards reached every load, bulk and text included
    run = json.loads((tmp / "again.json").read_text())["runs"][0]
    assert run["reused"] is True and "loads" not in run and run["docs"] == 600 and run["shards"] == 2
    assert run["doc_min_weight"] == result["runs"][0]["doc_min_weight"]  # read back from the pruned index
    assert set(run["methods"]) == {"bm25", "splade full", "splade top-4", "splade top-12", "two-phase 2",
                                   "two-phase 4", "splade full, pruned documents"}
    # Same indices, same queries: the exact forms rank as the first run did.
    for method in ("bm25", "splade full", "splade full, pruned documents"):
        assert run["methods"][method]["ndcg@10"] == result["runs"][0]["methods"][method]["ndcg@10"], method
    # Fewer query terms should not keep more of the exact top 10 (same queries, same index): true
    # here on average, not per query by construction; two-phase keeps more than its first phase alone.
    recall = {name: method["recall@10_vs_full"] for name, method in run["methods"].items()}
    assert recall["splade top-4"] <= recall["splade top-12"] <= result["runs"][0]["methods"]["splade top-16"][
        "recall@10_vs_full"]
    assert recall["two-phase 4"] >= recall["splade top-4"]


def _shards(url: str, index: str) -> int:
    from splade_es.toolkit.engines.connect import connect

    with connect(url) as engine:
        return engine.shard_layout(index)[0]


def test_a_smaller_window_rescores_fewer_candidates(first_run):
    """The rescore window reaches two-phase search: with 10 hits per shard instead of 100, two-phase
    can only reorder its first phase's top hits, so it keeps less of the exact top 10 (never more:
    the exact top 10 among the candidates always surfaces)."""
    url, corpus, tmp, _ = first_run
    recall = {}
    for window in (10, 100):
        done = _run(url, corpus, tmp / f"window-{window}.json", "--reuse", "--two-phase", "2",
                    "--two-phase-window", str(window))
        assert done.returncode == 0, done.stderr[-3000:]
        run = json.loads((tmp / f"window-{window}.json").read_text())["runs"][0]
        assert run["two_phase_window"] == window
        recall[window] = run["methods"]["two-phase 2"]["recall@10_vs_full"]
    assert recall[10] < recall[100]


@pytest.fixture(scope="module")
def elastic_run(request, tmp_path_factory):
    """One run on Elasticsearch with its token pruning at two settings (one shard)."""
    url = engine_url("elasticsearch")
    prefix = f"test-scale-es-{uuid.uuid4().hex[:8]}-"

    def drop_indices() -> None:
        from splade_es.toolkit.engines.connect import connect

        with connect(url) as engine:
            for suffix in ("bulk", "splade", "pruned", "text"):
                engine.delete_index(prefix + suffix)

    request.addfinalizer(drop_indices)
    tmp = tmp_path_factory.mktemp("engine-scale-es")
    corpus = _generate(tmp / "corpus", 600)
    done = _run(url, corpus, tmp / "es.json", "--two-phase", "4", "--token-pruning", "1,0.5 5,0.4", prefix=prefix)
    assert done.returncode == 0, done.stderr[-3000:]
    return url, corpus, tmp, prefix, json.loads((tmp / "es.json").read_text())["runs"][0]


def test_token_pruning_is_measured_beside_the_other_forms_on_elasticsearch(elastic_run):
    url, corpus, tmp, prefix, run = elastic_run
    methods = run["methods"]
    assert {"token pruning 1,0.5", "token pruning 5,0.4", "two-phase 4"} <= set(methods)
    assert run["timed_per_method"] == dict.fromkeys(methods, 60)
    for name in ("token pruning 1,0.5", "token pruning 5,0.4"):
        assert 0.5 < methods[name]["recall@10_vs_full"] <= 1.0, name
        expected = methods[name]["client_ms"]["p50"] / methods["bm25"]["client_ms"]["p50"]
        assert methods[name]["p50_vs_bm25"]["client"] == pytest.approx(expected, abs=0.011), name
    # The window reaches token pruning too: ten rescored hits keep less of the exact top 10 than a hundred.
    narrow = _run(url, corpus, tmp / "narrow.json", "--reuse", "--token-pruning", "1,0.5", "--two-phase-window", "10",
                  prefix=prefix)
    assert narrow.returncode == 0, narrow.stderr[-3000:]
    recall = json.loads((tmp / "narrow.json").read_text())["runs"][0]["methods"]["token pruning 1,0.5"][
        "recall@10_vs_full"]
    assert recall < methods["token pruning 1,0.5"]["recall@10_vs_full"]


def test_token_pruning_on_opensearch_is_refused_in_one_line(first_run):
    url, corpus, tmp, _ = first_run
    done = _run(url, corpus, tmp / "refused-pruning.json", "--reuse", "--token-pruning", "5,0.4")
    assert done.returncode == 2 and not (tmp / "refused-pruning.json").exists()
    assert "--token-pruning needs Elasticsearch 8.15+" in done.stderr.strip().splitlines()[-1]


class _Layouts:
    """An engine stand-in that knows only each index's (primary shards, replicas), or None."""

    def __init__(self, layouts: dict[str, tuple[int, int] | None]) -> None:
        self.layouts = layouts

    def shard_layout(self, index: str) -> tuple[int, int] | None:
        return self.layouts.get(index)


def test_shard_count_reads_the_queried_indices_and_refuses_a_mixed_layout(engine_scale):
    names = engine_scale.index_names("p-")
    assert engine_scale.shard_count(_Layouts({"p-splade": (3, 1), "p-pruned": (3, 1)}), names) == 3
    for layouts in ({"p-splade": (2, 1), "p-pruned": (1, 1)}, {"p-splade": (2, 1)}):
        with pytest.raises(SystemExit, match="p-splade, p-pruned: primary shards"):
            engine_scale.shard_count(_Layouts(layouts), names)


@pytest.mark.parametrize(("docs", "seed"), [(300, 5), (600, 6)])
def test_reuse_refuses_indices_of_another_corpus(first_run, fingerprint, docs, seed):
    """Another size, or the same size from another seed: the indices hold another corpus."""
    url, corpus, tmp, _ = first_run
    other = _generate(tmp / f"other-{docs}-{seed}", docs, seed)
    done = _run(url, other, tmp / "refused.json", "--reuse")
    assert done.returncode == 1
    held, offered = fingerprint(corpus), fingerprint(other)
    assert held != offered
    assert done.stderr.strip().splitlines()[-1] == (
        f"--reuse: {PREFIX}splade holds {corpus} ({held}), not {other} ({offered}): run once without --reuse first")
    assert not (tmp / "refused.json").exists()


def test_reuse_refuses_indices_it_did_not_mark(first_run):
    """Indices that are not there, or that this script did not load (no mark in their _meta)."""
    from splade_es.toolkit.engines.connect import connect

    url, corpus, tmp, _ = first_run
    done = _run(url, corpus, tmp / "refused.json", "--reuse", prefix=f"{PREFIX}absent-")
    assert done.returncode == 1 and not (tmp / "refused.json").exists()
    assert done.stderr.strip().splitlines()[-1] == (
        f"--reuse: {PREFIX}absent-splade does not exist: run once without --reuse first")
    with connect(url) as engine:  # dropped with the others by the fixture's finalizer (same prefix)
        for suffix in ("bare-splade", "bare-pruned"):
            engine.create_index(PREFIX + suffix, {})
    done = _run(url, corpus, tmp / "refused.json", "--reuse", prefix=f"{PREFIX}bare-")
    assert done.returncode == 1 and not (tmp / "refused.json").exists()
    assert done.stderr.strip().splitlines()[-1] == (
        f"--reuse: {PREFIX}bare-splade has no benchmark_corpus mark of this script's (not loaded by it, or by an "
        "older version): run once without --reuse first")


@pytest.mark.parametrize(("corpora", "extra", "message"), [
    ("a,b", ["--reuse"], "--reuse takes one corpus, the one the indices hold (2 given)"),
    ("a", ["--reuse", "--doc-min-weight", "0.5"], "--reuse takes no --doc-min-weight"),
    ("a", ["--reuse", "--shards", "2"], "--reuse takes no --shards"),
    ("a", ["--shards", "0"], "argument --shards: '0' is not a positive whole number"),
    ("a", ["--queries", "0"], "argument --queries: '0' is not a positive whole number"),
    ("a", ["--two-phase-window", "x"], "argument --two-phase-window: 'x' is not a positive whole number"),
    ("a", ["--two-phase", "8,0"], "'8,0' is not a comma-separated list of distinct positive counts"),
    ("a", ["--top-k", "16,16"], "'16,16' is not a comma-separated list of distinct positive counts"),
    ("a", ["--top-k", "sixteen"], "'sixteen' is not a comma-separated list of distinct positive counts"),
    ("{tmp}", [], "{tmp}: not a generated corpus (no corpus.jsonl, vectors.jsonl, query-vectors.jsonl"),
    ("a", ["--token-pruning", "5"], "token pruning takes FREQ_RATIO,WEIGHT (e.g. 5,0.4), not '5'"),
    ("a", ["--token-pruning", "0,0.4"], "token pruning's frequency ratio must be a whole number from 1 to 100, not 0"),
    ("a", ["--token-pruning", "2.5,0.4"], "frequency ratio must be a whole number from 1 to 100, not 2.5"),
    ("a", ["--token-pruning", "5,0.4 5,0.4"], "'5,0.4 5,0.4' is not a list of distinct FREQ_RATIO,WEIGHT pairs"),
    ("a", ["--index-prefix", "*"], "'*' is not a lowercase index-name prefix"),
    ("a", ["--index-prefix", ""], "'' is not a lowercase index-name prefix"),
])
def test_refuses_what_it_cannot_honour(tmp_path, corpora, extra, message):
    """Refused in one line before any engine is asked (the URL leads nowhere)."""
    done = _run("http://127.0.0.1:9", corpora.format(tmp=tmp_path), tmp_path / "refused.json", *extra)
    assert done.returncode == 2 and message.format(tmp=tmp_path) in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "refused.json").exists()


def test_fingerprint_sees_one_byte_in_the_middle_and_the_queries(tmp_path, fingerprint):
    """A coupled corpus and its blind twin differ only in a few judged documents, anywhere in the
    file, and in their queries: either shows in the fingerprint."""
    lines = b"".join(b'{"id": "d%d", "features": {"t1": 0.5}}\n' % i for i in range(20_000))  # ~780 KB
    prints = []
    for name, vectors, queries in (("a", lines, b"q\n"), ("b", lines.replace(b'"d10000"', b'"d10001"', 1), b"q\n"),
                                   ("c", lines, b"r\n"), ("d", lines, b"q\n")):
        (tmp_path / name / "qrels").mkdir(parents=True)
        (tmp_path / name / "vectors.jsonl").write_bytes(vectors)
        (tmp_path / name / "query-vectors.jsonl").write_bytes(queries)
        (tmp_path / name / "qrels" / "test.tsv").write_bytes(b"query-id\tcorpus-id\tscore\n")
        prints.append(fingerprint(tmp_path / name))
    assert prints[0] == prints[3] and len(set(prints[:3])) == 3


def test_schedule_times_every_method_on_every_query_twice(engine_scale):
    methods = ["bm25", "full", "top", "phased"]
    turns = list(engine_scale.schedule(methods, 10))
    assert len(turns) == 2 * 10 * len(methods)
    assert {pair: turns.count(pair) for pair in set(turns)} == {(q, m): 2 for q in range(10) for m in methods}
    # At each step every method runs once, each on another query.
    for start in range(0, len(turns), len(methods)):
        step = turns[start:start + len(methods)]
        assert sorted(m for _, m in step) == sorted(methods) and len({q for q, _ in step}) == len(methods)


@pytest.mark.parametrize("count", [2, 3, 4, 5, 9])
def test_schedule_balances_who_runs_first_and_who_runs_after_whom(engine_scale, count):
    """Over a whole cycle of the design (n steps, 2n for odd n) each method leads equally often and
    follows each other method equally often: no method always inherits a heavy one's aftermath."""
    methods = [f"m{i}" for i in range(count)]
    cycle = len(engine_scale.williams_rows(count))
    assert cycle == (2 * count if count % 2 else count)
    turns = list(engine_scale.schedule(methods, 3 * cycle))  # 6 whole cycles over the two passes
    steps = [[m for _, m in turns[i:i + count]] for i in range(0, len(turns), count)]
    leads = [step[0] for step in steps]
    assert {m: leads.count(m) for m in methods} == dict.fromkeys(methods, len(steps) // count)
    pairs = [(a, b) for step in steps for a, b in zip(step, step[1:])]
    expected = len(pairs) // (count * (count - 1))
    assert {(a, b): pairs.count((a, b)) for a in methods for b in methods if a != b} == dict.fromkeys(
        ((a, b) for a in methods for b in methods if a != b), expected)


def test_schedule_with_fewer_queries_than_methods_still_runs_each_pair_twice(engine_scale):
    turns = list(engine_scale.schedule(["a", "b", "c"], 2))
    assert sorted(turns) == sorted([(q, m) for q in range(2) for m in "abc"] * 2)
