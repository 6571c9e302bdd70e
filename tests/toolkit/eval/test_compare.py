"""`splade-es compare`: means, differences, per-query wins and a paired randomisation test."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from splade_es.errors import InputError
from splade_es.toolkit.cli import main
from splade_es.toolkit.eval.compare import compare, load_result


def _result(method: str, ndcg: list[float], dataset: str = "cranfield") -> dict:
    per_query = {f"q{i}": {"ndcg@10": v, "recall@100": v, "mrr@10": v, "map": v} for i, v in enumerate(ndcg)}
    mean = float(np.mean(ndcg))
    return {"dataset": dataset, "split": "test", "method": method, "index": "cran",
            "metrics": {"ndcg@10": mean, "recall@100": mean, "mrr@10": mean, "map": mean},
            "latency_ms": {"p50": 2.0}, "per_query": per_query}


def test_paired_figures_against_the_baseline():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 0.8, size=200).round(4)
    better = base + rng.uniform(0.0, 0.2, size=200).round(4) * (rng.uniform(size=200) < 0.6)
    rows = compare([_result("bm25", list(base)), _result("splade", list(better)), _result("same", list(base))],
                   ["bm25", "splade", "same"])
    assert rows[0].wins is None and rows[0].p_value is None
    diff = better - base
    assert (rows[1].wins, rows[1].ties, rows[1].losses) == ((diff > 0).sum(), (diff == 0).sum(), 0)
    assert rows[1].metrics["ndcg@10"] == pytest.approx(better.mean())
    assert rows[1].p_value < 0.001  # a consistent gain over 200 queries is no accident
    assert (rows[2].ties, rows[2].p_value) == (200, 1.0)
    noise = base + rng.normal(0, 0.05, size=200)
    noise += base.mean() - noise.mean()  # same mean, random per-query differences
    assert compare([_result("a", list(base)), _result("b", list(noise))], ["a", "b"])[1].p_value > 0.5


def test_results_must_cover_the_same_queries():
    with pytest.raises(InputError, match="same queries"):
        compare([_result("a", [0.1, 0.2]), _result("b", [0.1, 0.2], dataset="scifact")], ["a", "b"])
    with pytest.raises(InputError, match="other queries"):
        compare([_result("a", [0.1, 0.2]), _result("b", [0.1])], ["a", "b"])


def test_bad_files_name_themselves(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(InputError, match=r"broken.json: not JSON \(line 1"):
        load_result(broken)
    other = tmp_path / "other.json"
    other.write_text('{"dataset": "x"}')
    with pytest.raises(InputError, match=r"other.json: not an 'eval --json' result \(missing split, method"):
        load_result(other)


def test_compare_command(tmp_path):
    paths = []
    for name, values in (("bm25", [0.2, 0.4, 0.6]), ("splade", [0.3, 0.4, 0.5])):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(_result(name, values)))
    runner = CliRunner()
    result = runner.invoke(main, ["compare", *map(str, paths), "--label", "BM25", "--label", "SPLADE"])
    assert result.exit_code == 0, result.output
    assert "cranfield (test): 3 queries" in result.output
    assert "1 better, 1 same, 1 worse" in result.output and "+0.0000" in result.output
    rows = json.loads(runner.invoke(main, ["compare", *map(str, paths), "--json"]).output)["rows"]
    assert [r["label"] for r in rows] == ["bm25 (cran)", "splade (cran)"] and rows[1]["wins"] == 1
    result = runner.invoke(main, ["compare", *map(str, paths), "--label", "only-one"])
    assert result.exit_code == 2 and "one --label per result" in result.output
    result = runner.invoke(main, ["compare", str(paths[0]), str(tmp_path / "missing.json")])
    assert result.exit_code != 0 and "missing.json: cannot read" in result.output
