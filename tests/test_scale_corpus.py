"""benchmarks/scale_corpus.py: seeded, streamed, and what ``fit`` learns ``generate`` gives back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
STATS = ROOT / "benchmarks" / "results" / "scale_stats_cranfield_minilm.json"
TRAINED = ROOT / "benchmarks" / "results" / "scale_stats_cranfield_quickstart.json"  # a fit with a coupling


@pytest.fixture
def scale_corpus(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import scale_corpus

    return scale_corpus


def _coupled(scale_corpus, shared: float = 5.0) -> dict:
    """The committed stats plus a coupling stronger than any fit so far: shared terms weighted high in
    their deciles on both sides."""
    stats = json.loads(STATS.read_text())
    rng = np.random.default_rng(7)
    stats["weight_places"] = {"query_shared": scale_corpus._quantiles(rng.beta(shared, 1.0, 5000)),
                              "query_other": scale_corpus._quantiles(rng.beta(1.0, 1.5, 5000)),
                              "doc_shared": scale_corpus._quantiles(rng.beta(shared, 1.0, 5000))}
    return stats


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _answer_ranks(out: Path, top_k: int) -> list[int]:
    """Rank of each query's judged document (1 = first) by dot product with the query cut to its
    ``top_k`` heaviest terms (a pruned query)."""
    docs = {r["id"]: r["features"] for r in _lines(out / "vectors.jsonl")}
    answer = dict(line.split("\t")[:2] for line in (out / "qrels" / "test.tsv").read_text().splitlines()[1:])
    ranks = []
    for query in _lines(out / "query-vectors.jsonl"):
        q = dict(sorted(query["features"].items(), key=lambda item: -item[1])[:top_k])
        scores = {d: sum(w * q.get(t, 0.0) for t, w in f.items()) for d, f in docs.items()}
        ranks.append(1 + sum(score > scores[answer[query["id"]]] for score in scores.values()))
    return ranks


def test_same_seed_same_bytes_other_seed_other_corpus(tmp_path, scale_corpus):
    stats = _coupled(scale_corpus)
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        scale_corpus.generate(stats, 1500, 40, seed, tmp_path / name)
    for name in ("corpus.jsonl", "vectors.jsonl", "queries.jsonl", "query-vectors.jsonl", "qrels/test.tsv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "vectors.jsonl").read_bytes() != (tmp_path / "c" / "vectors.jsonl").read_bytes()


def test_the_coupling_touches_only_answers_and_queries(tmp_path, scale_corpus):
    """The coupling draws from a generator of its own: with or without it, the documents' text and
    every unjudged document are the same, seed for seed."""
    plain = json.loads(STATS.read_text())
    scale_corpus.generate(plain, 2500, 30, 0, tmp_path / "plain")
    scale_corpus.generate(_coupled(scale_corpus), 2500, 30, 0, tmp_path / "coupled")
    assert (tmp_path / "plain" / "corpus.jsonl").read_bytes() == (tmp_path / "coupled" / "corpus.jsonl").read_bytes()
    answers = {line.split("\t")[1] for line in (tmp_path / "plain" / "qrels" / "test.tsv").read_text().splitlines()[1:]}
    plain_docs, coupled_docs = (_lines(tmp_path / name / "vectors.jsonl") for name in ("plain", "coupled"))
    changed = {p["id"] for p, c in zip(plain_docs, coupled_docs, strict=True) if p != c}
    assert changed and changed <= answers  # only judged documents' weights moved
    assert all(p["features"].keys() == c["features"].keys() for p, c in zip(plain_docs, coupled_docs))


def _uniform_places(stats: dict, scale_corpus) -> dict:
    """The same stats with every place uniform: shared terms weighted like any other (no coupling)."""
    uniform = scale_corpus._quantiles(np.linspace(0, 1, 5000))
    return {**stats, "weight_places": dict.fromkeys(stats["weight_places"], uniform)}


@pytest.mark.parametrize(("stats", "margin"), [("strong", 0.2), ("trained", 0.05)])
def test_coupled_answers_survive_query_pruning(tmp_path, scale_corpus, stats, margin):
    """The point of the coupling: with shared terms weighted as a model weights them, a query cut to
    its 4 heaviest terms finds its answer better than with weights drawn blind: by far with a strong
    coupling, and still clearly with the weak one fitted on the quickstart's model (MRR about 0.25
    against 0.10 here)."""
    coupled = _coupled(scale_corpus) if stats == "strong" else json.loads(TRAINED.read_text())
    scale_corpus.generate(_uniform_places(coupled, scale_corpus), 1500, 80, 0, tmp_path / "blind")
    scale_corpus.generate(coupled, 1500, 80, 0, tmp_path / "coupled")
    blind_mrr = np.mean([1 / r for r in _answer_ranks(tmp_path / "blind", 4)])
    coupled_mrr = np.mean([1 / r for r in _answer_ranks(tmp_path / "coupled", 4)])
    assert coupled_mrr > blind_mrr + margin, (blind_mrr, coupled_mrr)


def test_fit_recovers_what_generate_was_given(tmp_path, scale_corpus):
    stats = _coupled(scale_corpus)
    out = tmp_path / "gen"
    summary = scale_corpus.generate(stats, 4000, 300, 1, out)
    assert summary["docs"] == 4000 and summary["queries"] == 300
    assert len(_lines(out / "vectors.jsonl")) == 4000 and len(_lines(out / "query-vectors.jsonl")) == 300
    back = scale_corpus.fit(out / "vectors.jsonl", out / "query-vectors.jsonl", out)
    assert back["source"]["docs"] == 4000 and back["source"]["judged_queries"] == 300
    assert back["doc_features"][50] == pytest.approx(stats["doc_features"][50], abs=2)
    assert back["query_overlap"] == pytest.approx(stats["query_overlap"], abs=0.03)
    # Document frequency by rank, head to tail (the head is where drawing with repeats fell short).
    for point in (0, 5, 20, 60, 100, 140):
        assert back["df_fraction"][point] == pytest.approx(stats["df_fraction"][point], rel=0.1), point
    for point in (100, 140, -1):  # the vocabulary reached (small ranks are the same in any fit)
        assert back["df_ranks"][point] == pytest.approx(stats["df_ranks"][point], rel=0.03)
    # Places are read against the generated weights' own deciles, which the coupling shifts: the
    # given places are not a fit of anything. A fit is: generating from it must give it back.
    again = tmp_path / "again"
    scale_corpus.generate(back, 4000, 300, 2, again)
    twice = scale_corpus.fit(again / "vectors.jsonl", again / "query-vectors.jsonl", again)
    assert twice["query_overlap"] == pytest.approx(back["query_overlap"], abs=0.03)
    for place in ("query_shared", "query_other", "doc_shared"):
        for q in (25, 50, 75):
            assert twice["weight_places"][place][q] == pytest.approx(back["weight_places"][place][q], abs=0.06), place
    assert back["weight_places"]["doc_shared"][50] > 0.8 and back["weight_places"]["query_shared"][50] > 0.7
    for decile in (0, 5, 9):
        assert twice["query_weights_by_df_decile"][decile][50] == pytest.approx(
            back["query_weights_by_df_decile"][decile][50], rel=0.1)


@pytest.mark.parametrize("coupling", ["plain", "coupled"])
def test_queries_as_long_and_as_shared_as_fitted(tmp_path, scale_corpus, coupling):
    """A query's terms beyond those it shares with its answer are drawn until there are enough that
    are not the answer's: dropping the answer's from one draw left queries ~2 of 32 short (coupled),
    and keeping them raised the overlap (plain). Lengths spread from 8 to 48, so their mean is 28."""
    stats = json.loads(STATS.read_text()) if coupling == "plain" else _coupled(scale_corpus)
    stats["query_features"] = scale_corpus._quantiles(np.linspace(8, 48, 1001))
    out = tmp_path / "gen"
    scale_corpus.generate(stats, 3000, 1000, 3, out)
    lengths = [len(q["features"]) for q in _lines(out / "query-vectors.jsonl")]
    assert min(lengths) >= 8 and max(lengths) <= 48
    assert np.mean(lengths) == pytest.approx(28, abs=1.2)
    back = scale_corpus.fit(out / "vectors.jsonl", out / "query-vectors.jsonl", out)
    assert back["query_overlap"] == pytest.approx(stats["query_overlap"], abs=0.02)


def test_terms_besides_finishes_when_the_vocabulary_runs_out(scale_corpus):
    """Asked for more terms than are left, it gives all that are left; asked for the last few,
    however rare, it finds them (drawing by document frequency alone might never)."""
    sampler = scale_corpus.Sampler(json.loads(STATS.read_text()), 0)
    taken = np.arange(0, sampler.vocabulary - 5)
    found = sampler.terms_besides(50, taken)
    assert found.tolist() == list(range(sampler.vocabulary - 5, sampler.vocabulary))
    some = sampler.terms_besides(3, np.arange(10))
    assert some.size == 3 and not set(some.tolist()) & set(range(10))


def test_fit_without_enough_pairs_learns_no_coupling(tmp_path, scale_corpus):
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text('{"_id": "d1", "text": "a b"}\n{"_id": "d2", "text": "c"}\n')
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "a"}\n')
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    docs, queries = tmp_path / "docs.jsonl", tmp_path / "queries.jsonl"
    docs.write_text('{"id": "d1", "features": {"a": 2.0, "b": 0.5}}\n{"id": "d2", "features": {"c": 1.0}}\n')
    queries.write_text('{"id": "q1", "features": {"a": 1.5, "c": 0.2, "zz": 0.1}}\n')  # shares 1 of 3
    stats = scale_corpus.fit(docs, queries, beir)
    assert stats["query_overlap"] == pytest.approx(1 / 3, abs=1e-4) and stats["vocabulary"] == 3
    assert stats["weight_places"]["query_shared"] == scale_corpus._quantiles(scale_corpus.QUANTILES)


def test_cli_refuses_an_empty_corpus(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scale_corpus.py"), "generate", "--stats",
                           str(STATS), "--docs", "0", "--out", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and "--docs and --queries must be positive" in done.stderr
    assert not (tmp_path / "x").exists()
