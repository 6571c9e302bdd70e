"""The benchmark report: measured rows beside the paper's quoted ones, with per-query records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from splade_es.toolkit.eval.compare import compare
from splade_es.toolkit.eval.report import REFERENCE_SOURCE, dataset_chart_name, paired_rows, write_report
from splade_es.toolkit.eval.runner import EvalResult

PNG = b"\x89PNG\r\n\x1a\n"


def _result(dataset: str, method: str, per_query: dict[str, float]) -> EvalResult:
    mean = float(np.mean(list(per_query.values())))
    return EvalResult(dataset, method, "i", "test", 1000,
                      {"ndcg@10": mean, "recall@100": 0.5, "mrr@10": 0.5, "map": 0.3},
                      {qid: {"ndcg@10": v} for qid, v in per_query.items()},
                      {"p50": 1.0, "p95": 2.0, "p99": 3.0}, 100.0, len(per_query), index_size_bytes=2**20)


def _scores(seed: int, n: int = 40) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {f"q{i}": float(v) for i, v in enumerate(rng.choice([0.0, 0.25, 0.5, 1.0], size=n))}


def test_each_dataset_gets_its_measured_rows_beside_the_quoted_ones_with_wins_and_losses(tmp_path):
    bm25, splade, hybrid = _scores(1), _scores(2), _scores(3)
    splade["q0"] = hybrid["q0"] = bm25["q0"]  # at least one tie
    # The baseline is BM25 even when it was not the first method run.
    results = [_result("scifact", "splade", splade), _result("scifact", "bm25", bm25),
               _result("scifact", "hybrid", hybrid), _result("cranfield", "splade", splade)]
    files = write_report(results, tmp_path, {"engine": "x"})
    text = (tmp_path / "report.md").read_text()

    expected = {row.label: row for row in compare([results[1].to_dict(), results[0].to_dict(), results[2].to_dict()],
                                                  ["bm25", "splade", "hybrid"])}
    wins = [sum(splade[q] > bm25[q] for q in bm25), sum(splade[q] == bm25[q] for q in bm25),
            sum(splade[q] < bm25[q] for q in bm25)]
    assert [expected["splade"].wins, expected["splade"].ties, expected["splade"].losses] == wins  # independent count
    section = text.split("## scifact: measured here, next to the paper")[1].split("## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    assert lines[1].startswith(f"| **bm25** | {100 * np.mean(list(bm25.values())):.2f} | baseline |")
    assert lines[2] == (f"| **splade** | {100 * np.mean(list(splade.values())):.2f} | {wins[0]} / {wins[1]} / "
                        f"{wins[2]} | {expected['splade'].p_value:.3g} | measured here |")
    assert lines[3].startswith(f"| **hybrid** | {100 * np.mean(list(hybrid.values())):.2f} | "
                               f"{expected['hybrid'].wins} / {expected['hybrid'].ties} / {expected['hybrid'].losses} |")
    assert lines[4:] == ["| BM25 | 66.5 | — | — | *quoted*: paper, Table 1 |",
                         "| SPLADE++ | 71 | — | — | *quoted*: paper, Table 1 |",
                         "| ELSER v2 | 71.8 | — | — | *quoted*: paper, Table 1 |",
                         "| Echo-Mistral-SPLADE | 77.24 | — | — | *quoted*: paper, Table 1 |"]
    assert REFERENCE_SOURCE in section and "arXiv:2408.11119" in REFERENCE_SOURCE
    assert f"]({dataset_chart_name('scifact')})" in section

    # A dataset the paper does not report, with one method: no quoted rows, no paired figures, still a chart.
    cranfield = text.split("## cranfield: measured here, next to the paper")[1].split("## ")[0]
    assert "quoted" not in cranfield and "baseline" not in cranfield and "| **splade** |" in cranfield
    for name in (dataset_chart_name("scifact"), dataset_chart_name("cranfield")):
        assert tmp_path / name in files and (tmp_path / name).read_bytes()[:8] == PNG

    saved = json.loads((tmp_path / "results.json").read_text())["paired"]
    assert list(saved) == ["scifact"] and [row["label"] for row in saved["scifact"]] == ["bm25", "splade", "hybrid"]
    assert saved["scifact"][1]["wins"] == wins[0]


def test_paired_rows_refuse_methods_scored_on_other_queries():
    from splade_es.errors import InputError

    short = _scores(2)
    del short["q5"]
    with pytest.raises(InputError, match="scored other queries"):
        paired_rows([_result("scifact", "bm25", _scores(1)), _result("scifact", "splade", short)])


def test_chart_names_are_safe_file_names():
    assert dataset_chart_name("BEIR SciFact/test") == "dataset-beir-scifact-test.png"
    assert dataset_chart_name("../..") == "dataset-unnamed.png"


def test_compare_writes_the_report_for_results_evaluated_elsewhere(tmp_path):
    from click.testing import CliRunner

    from splade_es.toolkit.cli import main

    bm25, rrf, linear = _scores(1), _scores(2), _scores(3)
    paths = []
    for name, result in (("bm25", _result("scifact", "bm25", bm25)), ("rrf", _result("scifact", "hybrid", rrf)),
                         ("linear", _result("scifact", "hybrid", linear))):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(result.to_dict()))
    labels = ["BM25", "hybrid (RRF)", "hybrid (linear)"]  # two results share the method "hybrid"
    done = CliRunner().invoke(main, ["compare", *map(str, paths), *[x for label in labels for x in ("--label", label)],
                                     "--report", str(tmp_path / "report")])
    assert done.exit_code == 0, done.output
    text = (tmp_path / "report" / "report.md").read_text()
    linear_wins = sum(linear[q] > bm25[q] for q in bm25)
    assert "| **BM25** | " in text and "| baseline |" in text, "the first result is the baseline"
    row = next(line for line in text.splitlines() if line.startswith("| **hybrid (linear)** |"))
    assert row.split(" | ")[2].startswith(f"{linear_wins} / ")
    saved = json.loads((tmp_path / "report" / "results.json").read_text())
    assert [r["method"] for r in saved["results"]] == labels
    assert saved["results"][2]["metrics"] == pytest.approx(_result("s", "m", linear).metrics)
    assert (tmp_path / "report" / dataset_chart_name("scifact")).read_bytes()[:8] == PNG
    import re

    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert linked and all((tmp_path / "report" / name).read_bytes()[:8] == PNG for name in linked)
    assert "Model:" not in text, "compare knows no model: the report says nothing rather than a dash"
