"""``splade-es tune``: the frontier and recommendation on constructed numbers, then the whole sweep
on Cranfield through the local engine and the real ones, checked against ``eval`` (an independent
path: multi-search, the encoder's own pruning) and against what ``search``/``eval`` pick up."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from conftest import SHARED_DATA, cranfield_indexed
from splade_es.errors import InputError
from splade_es.model.config import Pruning
from splade_es.toolkit.cli import main
from splade_es.toolkit.eval.tune import Grid, Measured, Setting, copy_name, derive, frontier, recommend
from splade_es.toolkit.ingest import splade_meta
from splade_es.toolkit.query.tuned import resolve

CRANFIELD = SHARED_DATA / "cranfield"


def _point(p50: float, ndcg: float, top_k: int = 16) -> Measured:
    return Measured(Setting(top_k), ndcg, p50, p50 * 2, "i")


# ---------------------------------------------------------------- frontier and recommendation
def test_the_frontier_is_the_pareto_set_fastest_first():
    a, b, c, d, e = _point(10, 0.50), _point(5, 0.45), _point(6, 0.44), _point(2, 0.30), _point(5, 0.45, top_k=8)
    # c is slower and worse than b; e duplicates b exactly: the first of equals stays.
    assert frontier([a, b, c, d, e]) == [d, b, a]
    tie_speed = _point(5, 0.40)  # as fast as b, worse: dominated
    assert tie_speed not in frontier([a, b, tie_speed])


def test_the_recommendation_is_the_fastest_within_one_point_of_the_best():
    best, near, far = _point(10, 0.500), _point(4, 0.4905), _point(1, 0.489)
    assert recommend([best, near, far]) is near  # far is 1.1 points below
    exactly = _point(3, 0.490)  # exactly one point below still counts
    assert recommend([best, near, exactly]) is exactly
    same_speed = _point(4, 0.495)  # equal p50: the better nDCG wins
    assert recommend([best, near, same_speed]) is same_speed
    twin = _point(4, 0.4905, top_k=8)  # equal in both: the earlier (simpler) setting of the sweep
    assert recommend([best, near, twin]) is near


def test_a_budget_picks_the_best_that_fits_and_refuses_when_none_does():
    points = [_point(10, 0.50), _point(4, 0.47), _point(3, 0.46), _point(4, 0.47, top_k=8)]
    assert recommend(points, budget_ms=4) is points[1]
    assert recommend(points, budget_ms=100) is points[0]
    with pytest.raises(InputError, match=r"no setting meets the 2 ms budget: the fastest \(top-k 16\) has p50 3.00 ms"):
        recommend(points, budget_ms=2)


def test_the_grid_skips_settings_that_cannot_differ():
    grid = Grid((128, 8), (0.0,), (None, 8, 16), (100, 500), (None, 0.2))
    settings = grid.settings()
    assert settings[0] == Setting(128)  # the baseline first
    assert not [s for s in settings if s.query_top_k == 8 and s.two_phase is not None]  # 8 first-phase of 8 terms
    assert {s.two_phase_window for s in settings if s.two_phase is None} == {100}
    assert len(settings) == 2 * (1 + 2 * 2 + 1)


def test_settings_resolve_flag_then_tuned_then_default():
    tuned = {"query_top_k": 16, "two_phase": None}
    values, sources = resolve({"query_top_k": None, "two_phase": None, "query_min_weight": 0.2}, tuned,
                              {"query_top_k": 128, "two_phase": 8})
    assert values == {"query_top_k": 16, "two_phase": None, "query_min_weight": 0.2}
    assert sources == {"query_top_k": "tuned", "two_phase": "tuned", "query_min_weight": "flag"}
    values, sources = resolve({"query_top_k": None}, None, {"query_top_k": 128})
    assert (values, sources) == ({"query_top_k": 128}, {"query_top_k": "default"})


def test_vectors_derived_from_the_wide_encoding_are_what_the_encoder_prunes_to(tiny_mistral_dir):
    from splade_es.model import SparseEncoder

    encoder = SparseEncoder.from_pretrained(str(tiny_mistral_dir), device="cpu")
    texts = ["boundary layer transition", "heat transfer in hypersonic flow", "buckling of thin cylinders"]
    wide = {str(i): v.to_features() for i, v in enumerate(encoder.encode_queries(texts, show_progress=False))}
    for pruning in (Pruning(top_k=16), Pruning(top_k=64, min_weight=0.1)):
        direct = [v.to_features() for v in encoder.encode_queries(texts, pruning=pruning, show_progress=False)]
        assert list(derive(wide, pruning).values()) == direct


# ---------------------------------------------------------------- the sweep against engines
def _invoke(*args: str, code: int = 0):
    result = CliRunner().invoke(main, [*args])
    assert result.exit_code == code, result.output
    return json.loads(result.stdout) if "--json" in args and code == 0 else result


@pytest.fixture(scope="module", params=["local", "opensearch", "elasticsearch"])
def cran(request, tmp_path_factory, cranfield_vectors, tiny_mistral_dir):
    yield from cranfield_indexed(request.param, tmp_path_factory.mktemp(f"tune-{request.param}"), cranfield_vectors,
                                 tiny_mistral_dir, "tune")


@pytest.fixture(scope="module")
def local_cran(tmp_path_factory, cranfield_vectors, tiny_mistral_dir):
    """Input checks are engine-independent: the local engine covers them."""
    yield from cranfield_indexed("local", tmp_path_factory.mktemp("tune-input"), cranfield_vectors, tiny_mistral_dir,
                                 "tune")


def test_tune_records_a_setting_that_search_and_eval_then_use(cran):
    engine, index, where = cran["engine"], cran["splade"], cran["where"]
    chart = cran["tmp"] / "frontier.svg"
    report = _invoke("tune", "--dataset", str(CRANFIELD), "--index", index, *where, "--grid", "quick",
                     "--query-top-k", "4", "--warmup", "5", "--chart", str(chart), "--json", "--no-progress")
    settings = report["settings"]
    assert report["queries"] == 225 and len(settings) == 6  # (128, 128 two-phase 8, 4) x (as is, doc-pruned)
    baseline = settings[0]
    assert (baseline["query_top_k"], baseline["two_phase"], baseline["doc_min_weight"]) == (128, None, None)
    assert report["baseline"] == baseline
    labels = [s["label"] for s in settings]
    assert set(report["frontier"]) <= set(labels) and report["recommended"]["label"] in labels
    assert chart.read_text().lstrip().startswith("<?xml")  # an SVG, as asked

    # The doc-pruned copy was built, measured and removed; the index itself is untouched.
    [made] = report["copies"]
    assert made["docs"] == 1400 and 0 < made["postings_kept"] < made["postings_before"] and not made["kept"]
    assert not engine.exists(made["name"]) and made["name"] == copy_name(index, made["doc_min_weight"])
    assert {s["index"] for s in settings} == {index, made["name"]}

    # Recorded: the best setting for the index as it is, with what it measured.
    tuned = splade_meta(engine, index)["tuned"]
    chosen = report["for_index"]
    assert report["recorded"] and chosen["doc_min_weight"] is None
    assert {k: tuned[k] for k in ("query_top_k", "query_min_weight", "two_phase", "two_phase_window")} == {
        k: chosen[k] for k in ("query_top_k", "query_min_weight", "two_phase", "two_phase_window")}
    assert tuned["dataset"] == "cranfield" and tuned["ndcg@10"] == chosen["ndcg@10"]

    # eval measures the baseline through another path (multi-search, the encoder's own pruning).
    plain = _invoke("eval", "--dataset", str(CRANFIELD), "--index", index, *where, "--no-tuned", "--k", "10",
                    "--json", "--no-progress")
    assert plain["settings"]["query_top_k"] == {"value": 128, "source": "default"}
    assert plain["metrics"]["ndcg@10"] == pytest.approx(baseline["ndcg@10"], abs=1e-6)
    # eval now defaults to the recorded setting, and scores what tune measured for it.
    tuned_eval = _invoke("eval", "--dataset", str(CRANFIELD), "--index", index, *where, "--k", "10", "--json",
                         "--no-progress")
    assert tuned_eval["settings"]["query_top_k"] == {"value": tuned["query_top_k"], "source": "tuned"}
    assert tuned_eval["settings"]["two_phase"] == {"value": tuned["two_phase"], "source": "tuned"}
    assert tuned_eval["metrics"]["ndcg@10"] == pytest.approx(tuned["ndcg@10"], abs=1e-6)
    # Explicit flags win over the record.
    top4 = next(s for s in settings if s["query_top_k"] == 4 and s["doc_min_weight"] is None)
    flagged = _invoke("eval", "--dataset", str(CRANFIELD), "--index", index, *where, "--query-top-k", "4",
                      "--two-phase", "0", "--k", "10", "--json", "--no-progress")
    assert flagged["settings"]["query_top_k"] == {"value": 4, "source": "flag"}
    assert flagged["settings"]["two_phase"] == {"value": None, "source": "flag"}
    assert flagged["metrics"]["ndcg@10"] == pytest.approx(top4["ndcg@10"], abs=1e-6)

    # search too: the record by default, flags over it, --no-tuned without it.
    query = "boundary layer transition"
    found = _invoke("search", query, "--index", index, *where, "--json")
    assert found["settings"]["query_top_k"] == {"value": tuned["query_top_k"], "source": "tuned"}
    assert len(found["query_vector"]) <= tuned["query_top_k"]
    forced = _invoke("search", query, "--index", index, *where, "--query-top-k", "4", "--json")
    assert forced["settings"]["query_top_k"] == {"value": 4, "source": "flag"} and len(forced["query_vector"]) == 4
    untuned = _invoke("search", query, "--index", index, *where, "--no-tuned", "--json")
    assert untuned["settings"]["query_top_k"] == {"value": 128, "source": "default"}
    text = _invoke("search", query, "--index", index, *where).output
    assert "(tuned on cranfield/test" in text


def test_kept_copies_hold_the_pruned_vectors_and_no_record_leaves_meta_alone(cran, cranfield_vectors):
    engine, index, where = cran["engine"], cran["splade"], cran["where"]
    before = splade_meta(engine, index)
    report = _invoke("tune", "--dataset", str(CRANFIELD), "--index", index, *where, "--query-top-k", "16",
                     "--two-phase", "0", "--query-min-weight", "0", "--doc-min-weight", "0.5", "--keep-copies",
                     "--no-record", "--no-chart", "--warmup", "0", "--json", "--no-progress")
    assert splade_meta(engine, index) == before and not report["recorded"]
    name = copy_name(index, 0.5)
    try:
        stored = {json.loads(line)["id"]: json.loads(line)["features"] for line in open(cranfield_vectors)}
        for doc_id in ("1", "700", "1400"):
            kept = engine.get(name, doc_id)["splade"]
            assert kept == pytest.approx({t: w for t, w in stored[doc_id].items() if w >= 0.5}, rel=1e-6)
        assert splade_meta(engine, name)["pruned_copy_of"] == index
    finally:
        engine.delete_index(name)


def test_bad_input_is_one_line_and_nothing_is_left_behind(local_cran, tmp_path):
    engine, index, where = local_cran["engine"], local_cran["splade"], local_cran["where"]
    common = [*where, "--grid", "quick", "--no-chart", "--no-progress"]
    missing = _invoke("tune", "--dataset", str(CRANFIELD), "--index", "nope", *common, code=1)
    assert "no index named 'nope'" in missing.output and len(missing.output.strip().splitlines()) == 1
    other = tmp_path / "other"
    shutil.copytree(CRANFIELD, other, ignore=shutil.ignore_patterns("corpus.jsonl"))
    (other / "corpus.jsonl").write_text('{"_id": "x1", "text": "x"}\n')
    (other / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\tx1\t1\n")
    mismatch = _invoke("tune", "--dataset", str(other), "--index", index, *common, code=1)
    assert "holds none of the documents judged in other" in mismatch.output
    no_qrels = _invoke("tune", "--dataset", str(other), "--split", "dev", "--index", index, *common, code=1)
    assert "no split 'dev'" in no_qrels.output
    before = splade_meta(engine, index)
    budget = _invoke("tune", "--dataset", str(CRANFIELD), "--index", index, *common, "--doc-min-weight", "0.5",
                     "--budget-ms", "0.000001", code=1)
    assert "no setting meets the 1e-06 ms budget: the fastest" in budget.output
    assert not engine.exists(copy_name(index, 0.5)) and splade_meta(engine, index) == before
    bad_list = _invoke("tune", "--dataset", str(CRANFIELD), "--index", index, *common, "--query-top-k", "8,x", code=2)
    assert "not a comma-separated list of int values" in bad_list.output


def test_a_chart_path_that_cannot_be_written_is_refused_before_the_sweep(local_cran, tmp_path):
    engine, index, where = local_cran["engine"], local_cran["splade"], local_cran["where"]
    before = splade_meta(engine, index)
    common = ["--dataset", str(CRANFIELD), "--index", index, *where, "--grid", "quick", "--query-top-k", "4",
              "--json", "--no-progress"]
    for chart, message in ((tmp_path / "out.xyz", "names no format matplotlib writes"),
                           (tmp_path / "out", "no extension names no format"),
                           (tmp_path / "file.txt" / "out.png", "cannot write in")):
        (tmp_path / "file.txt").write_text("x")
        refused = _invoke("tune", *common, "--chart", str(chart), code=1)
        assert message in refused.output and len(refused.output.strip().splitlines()) == 1, refused.output
    assert splade_meta(engine, index) == before  # nothing ran, nothing recorded


def _cranfield_with_qrels(tmp_path, name: str, lines: list[str]):
    """Cranfield's corpus and queries with other judgments (qrels/test.tsv)."""
    copy = tmp_path / name
    shutil.copytree(CRANFIELD, copy)
    (copy / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{line}\n" for line in lines))
    return copy


def test_qrels_without_a_relevant_document_are_refused_and_few_queries_warned(local_cran, tmp_path):
    engine, index, where = local_cran["engine"], local_cran["splade"], local_cran["where"]
    before = splade_meta(engine, index)
    common = ["--index", index, *where, "--grid", "quick", "--query-top-k", "4", "--two-phase", "0",
              "--doc-min-weight", "0", "--no-chart", "--warmup", "0", "--no-progress"]
    zero = _cranfield_with_qrels(tmp_path, "zero", ["1\t184\t0", "2\t12\t0", "4\t166\t0"])
    refused = _invoke("tune", "--dataset", str(zero), *common, code=1)
    assert len(refused.output.strip().splitlines()) == 1, refused.output
    assert f"{zero / 'qrels' / 'test.tsv'} (split 'test'): no judgment has a grade above 0" in refused.output
    assert splade_meta(engine, index) == before
    stored = [line for line in (CRANFIELD / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    few = _cranfield_with_qrels(tmp_path, "few", [line for line in stored if line.split("\t")[0] in {"1", "2", "4"}])
    warned = _invoke("tune", "--dataset", str(few), *common, "--no-record")
    assert "(test): 3 queries" in warned.stdout
    [line] = [line for line in warned.stderr.splitlines() if line.startswith("warning:")]
    assert "only 3 queries have a relevant document; a recommendation on so few is noise" in line


def test_a_setting_that_empties_a_query_is_never_recommended():
    full, emptied = _point(10, 0.50), Measured(Setting(16, 1000.0), 0.0, 0.5, 0.6, "i", empty_queries=3)
    nothing = Measured(Setting(16, 9999.0), 0.0, None, None, "i", empty_queries=225)
    assert recommend([full, emptied, nothing]) is full
    assert recommend([full, emptied, nothing], budget_ms=100) is full
    assert frontier([full, emptied, nothing]) == [full]
    with pytest.raises(InputError, match=r"no setting meets the 1 ms budget: the fastest \(top-k 16\) has p50 10.00"):
        recommend([full, emptied, nothing], budget_ms=1)
    with pytest.raises(InputError, match=r"every setting prunes some query to no term \(the fewest: top-k 16, "
                                         r"min-w 1e\+03, 3 queries\)"):
        recommend([emptied, nothing])


def test_a_setting_that_empties_queries_is_counted_and_never_recorded(local_cran):
    engine, index, where = local_cran["engine"], local_cran["splade"], local_cran["where"]
    before = splade_meta(engine, index)
    refused = _invoke("tune", "--dataset", str(CRANFIELD), "--index", index, *where, "--query-min-weight", "1000",
                      "--two-phase", "0", "--doc-min-weight", "0", "--budget-ms", "0.0001", "--warmup", "0",
                      "--no-chart", "--no-progress", code=1)
    # The model's own threshold is always tried too; the only setting fast enough empties every query.
    assert "no setting meets the 0.0001 ms budget" in refused.output
    assert len(refused.output.strip().splitlines()) == 1, refused.output
    assert splade_meta(engine, index) == before
    # Beside settings that keep every query, the table and the JSON count what each one emptied.
    report = _invoke("tune", "--dataset", str(CRANFIELD), "--index", index, *where, "--query-top-k", "4",
                     "--query-min-weight", "0,1000", "--two-phase", "0", "--doc-min-weight", "0", "--warmup", "0",
                     "--no-record", "--no-chart", "--json", "--no-progress")
    emptied = [s for s in report["settings"] if s["query_min_weight"] == 1000]
    assert emptied and all(s["empty_queries"] == 225 and s["p50_ms"] is None for s in emptied)
    assert report["recommended"]["empty_queries"] == 0
    assert not set(report["frontier"]) & {s["label"] for s in emptied}


def test_the_reingest_command_keeps_the_index_s_document_top_k_and_windows(tmp_path):
    from types import SimpleNamespace

    from splade_es.toolkit.eval.tune import reingest_command

    searcher = SimpleNamespace(meta=SimpleNamespace(index="sci", model="org/model"))
    engine = SimpleNamespace(info=SimpleNamespace(kind="opensearch", location="http://node:9200"))
    dataset = SimpleNamespace(path=tmp_path / "scifact")
    recorded = {"top_k": 256, "min_weight": 0.1, "max_ratio": 0.0, "chunk_tokens": 384, "chunk_overlap": 64}
    line = reingest_command(searcher, dataset, Setting(64, doc_min_weight=0.752), engine, recorded)
    assert line == (f"splade-es ingest --index sci-doc-pruned --corpus {tmp_path / 'scifact'} --model org/model "
                    "--doc-top-k 256 --chunk-tokens 384 --chunk-overlap 64 --doc-min-weight 0.752 "
                    "--url http://node:9200")
    # The copy kept the higher of the index's threshold and the setting's; no windows, no flags.
    plain = reingest_command(searcher, dataset, Setting(64, doc_min_weight=0.05), engine, {"min_weight": 0.1})
    assert plain.endswith("--model org/model --doc-min-weight 0.1 --url http://node:9200")


class _DriftingEngine:
    """Answers every search with one hit; each search takes longer than the last (a machine
    slowing down), on the clock it hands out."""

    def __init__(self) -> None:
        self.now, self.searches = 0.0, []

    def clock(self) -> float:
        return self.now

    def search(self, index: str, body: dict) -> dict:
        self.now += (1 + 0.01 * len(self.searches)) / 1000
        self.searches.append(index)
        return {"hits": {"hits": [{"_id": "d1", "_score": 1.0}]}}


def test_settings_are_timed_interleaved_so_drift_falls_on_each_alike():
    from splade_es.toolkit.eval.tune import Plan, measure, visiting_orders

    orders = visiting_orders(5, 4, seed=3)
    assert all(sorted(order) == list(range(5)) for order in orders)  # each round visits every setting once
    assert orders[1] == orders[0][::-1] and orders[3] == orders[2][::-1] and orders[2] != orders[0]
    assert visiting_orders(5, 4, seed=3) == orders  # seeded: the same run twice

    bodies = {str(q): {"query": q} for q in range(100)}
    plans = [Plan(Setting(16), "a", bodies, 100, 16.0), Plan(Setting(8), "b", bodies, 100, 8.0),
             Plan(Setting(4, 99.0), "c", {}, 100, 0.0)]
    engine = _DriftingEngine()
    a, b, c = measure(engine, plans, {"1": {"d1": 1}}, rounds=2, warmup=0, clock=engine.clock)
    assert engine.searches.count("a") == engine.searches.count("b") == 200  # one per query per round
    # One pass each, a then b, would time b about 1 ms slower: interleaved, drift cancels out.
    assert a.p50_ms == pytest.approx(b.p50_ms, abs=0.02)
    assert a.ndcg == b.ndcg == 1.0 and (a.empty_queries, c.empty_queries) == (0, 100)
    assert c.p50_ms is None and not c.eligible  # nothing searched, nothing timed


def test_copies_are_flushed_and_merged_to_the_index_s_segments_before_timing():
    from splade_es.toolkit.engines.opensearch import OpenSearchEngine
    from splade_es.toolkit.eval.tune import settle_copies

    sent = []
    shards = {"i": [3, 2], "i-tune-doc-0.5": [9, 1], "i-tune-doc-0.9": [2, 1]}

    def send(method, path, body=None, params=None, ndjson=False):
        sent.append((method, path, params))
        name = path.split("/")[1]
        if path.endswith("/_stats/segments"):
            return {"indices": {name: {"shards": {str(n): [{"routing": {"primary": True}, "segments": {"count": c}},
                                                          {"routing": {"primary": False}, "segments": {"count": 50}}]
                                                  for n, c in enumerate(shards[name])}}}}
        return {}

    engine = object.__new__(OpenSearchEngine)
    engine._send = send
    assert engine.segments_per_shard("i") == 3  # primaries only, the most of any shard
    sent.clear()
    settle_copies(engine, "i", ["i-tune-doc-0.5", "i-tune-doc-0.9"])
    assert ("POST", "/i/_flush", None) in sent and ("POST", "/i-tune-doc-0.9/_flush", None) in sent
    merges = [(path, params) for method, path, params in sent if path.endswith("_forcemerge")]
    assert merges == [("/i-tune-doc-0.5/_forcemerge", {"max_num_segments": "3"})]  # 0.9 has no more than i


def test_a_force_merge_the_client_gives_up_on_is_waited_for_not_failed(monkeypatch):
    """A large copy merges longer than the client's request timeout: the engine goes on merging,
    so force_merge waits for the segment count; a merge that never ends is one error line, and a
    merge that was never sent (connection refused) is not waited for."""
    from splade_es.toolkit.engines import rest
    from splade_es.toolkit.engines.base import EngineError, EngineTimeout, EngineUnavailable
    from splade_es.toolkit.engines.opensearch import OpenSearchEngine

    counts = [7, 5, 2]
    failure: list[Exception] = [EngineTimeout("cannot reach OpenSearch at x: Read timed out")]

    def send(method, path, body=None, params=None, ndjson=False):
        if path.endswith("/_forcemerge"):
            raise failure[0]
        count = counts.pop(0) if counts else 2
        return {"indices": {"c": {"shards": {"0": [{"routing": {"primary": True}, "segments": {"count": count}}]}}}}

    monkeypatch.setattr(rest.time, "sleep", lambda seconds: None)
    engine = object.__new__(OpenSearchEngine)
    engine._send = send
    engine.force_merge("c", 2)
    assert counts == []  # polled until the shard held 2 segments
    counts[:] = [9] * 5
    with pytest.raises(EngineError, match="force merge to 2 segments not done after 0 s"):
        engine.force_merge("c", 2, timeout=0)
    failure[0] = EngineUnavailable("cannot reach OpenSearch at x: Connection refused")
    counts[:] = [9] * 5
    with pytest.raises(EngineUnavailable, match="Connection refused"):
        engine.force_merge("c", 2)
    assert counts == [9] * 5, "a merge never sent was waited for"
