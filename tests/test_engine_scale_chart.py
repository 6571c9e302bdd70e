"""benchmarks/engine_scale.py --chart-from: one chart from sizes measured in separate sessions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "engine_scale.py"


def _result(path: Path, engine: str, sizes: list[int]) -> Path:
    runs = [{"docs": docs, "methods": {"bm25": {"client_ms": {"p50": docs / 1e5}},
                                       "splade full": {"client_ms": {"p50": 2 * docs / 1e5}}}} for docs in sizes]
    path.write_text(json.dumps({"engine": engine, "runs": runs}))
    return path


def _chart(tmp_path: Path, *files: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), "--chart-from", *map(str, files), "--chart", str(tmp_path / "out.png")]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def test_runs_of_two_files_make_one_png(tmp_path):
    small = _result(tmp_path / "small.json", "opensearch 3.3.2", [300_000, 100_000])
    large = _result(tmp_path / "large.json", "opensearch 3.3.2", [1_000_000])
    done = _chart(tmp_path, large, small)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_methods_measured_at_some_sizes_only_are_drawn_where_they_were(tmp_path, engine_scale, monkeypatch):
    """A 1M run with --top-k 16,24 beside a 100k run with --top-k 16: every method on its own sizes."""
    import matplotlib.axes

    small = _result(tmp_path / "small.json", "opensearch 3.3.2", [100_000])
    large = json.loads(_result(tmp_path / "large.json", "opensearch 3.3.2", [1_000_000]).read_text())
    large["runs"][0]["methods"]["splade top-24"] = {"client_ms": {"p50": 15.0}}
    (tmp_path / "large.json").write_text(json.dumps(large))
    drawn = {}
    real_plot = matplotlib.axes.Axes.plot

    def plot(axis, x, y, **style):
        drawn.setdefault(style["label"], []).append((list(x), list(y)))
        return real_plot(axis, x, y, **style)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot)
    for order in ([small, tmp_path / "large.json"], [tmp_path / "large.json", small]):
        drawn.clear()
        _, runs = engine_scale.merged_results(order)
        engine_scale.chart(runs, tmp_path / "out.png", "t")
        assert drawn["splade top-24"] == [([1_000_000], [15.0]), ([1_000_000], [15.0 / 10.0])]
        assert drawn["splade full"] == [([100_000, 1_000_000], [2.0, 20.0]), ([100_000, 1_000_000], [2.0, 2.0])]


def test_the_title_names_the_shard_layout(engine_scale):
    assert engine_scale.chart_title("opensearch 3.3.2", [{"shards": 2}, {"shards": 2}]) == (
        "opensearch 3.3.2, 2 shards: query p50 against corpus size")
    assert engine_scale.chart_title("e", [{}]) == "e, 1 shard: query p50 against corpus size"  # before --shards
    assert engine_scale.chart_title("e", [{"shards": 1}, {"shards": 3}]).startswith("e, shards 1/3:")


def test_runs_are_merged_across_files_and_sorted_by_size(tmp_path, engine_scale):
    small = _result(tmp_path / "small.json", "opensearch 3.3.2", [300_000, 100_000])
    large = _result(tmp_path / "large.json", "opensearch 3.3.2", [1_000_000])
    engine, runs = engine_scale.merged_results([large, small])
    assert engine == "opensearch 3.3.2"
    assert [run["docs"] for run in runs] == [100_000, 300_000, 1_000_000]
    assert runs[2]["methods"]["splade full"]["client_ms"]["p50"] == 20.0


@pytest.mark.parametrize("content, message", [
    (None, "not an engine_scale.py result (FileNotFoundError"),
    ("{not json", "not an engine_scale.py result (JSONDecodeError"),
    ('{"runs": []}', "not an engine_scale.py result (KeyError"),
    ('{"engine": "opensearch 3.3.2", "runs": [{"methods": {}}]}', "not an engine_scale.py result (KeyError"),
    ('{"engine": "opensearch 3.3.2", "runs": []}', "no runs to draw"),
])
def test_a_bad_file_is_refused_in_one_line_naming_it(tmp_path, engine_scale, content, message):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as stopped:
        engine_scale.merged_results([path])
    assert str(stopped.value).startswith(f"{path}") and message in str(stopped.value)
    assert "\n" not in str(stopped.value)


def test_a_size_measured_twice_is_refused_naming_the_file(tmp_path):
    first = _result(tmp_path / "first.json", "opensearch 3.3.2", [100_000])
    second = _result(tmp_path / "second.json", "opensearch 3.3.2", [300_000, 100_000])
    done = _chart(tmp_path, first, second)
    assert done.returncode == 1
    assert done.stderr.strip() == f"{second}: 100000 documents are measured twice"
    assert not (tmp_path / "out.png").exists()


def test_two_engines_in_one_chart_are_refused_even_at_one_size(tmp_path):
    first = _result(tmp_path / "os.json", "opensearch 3.3.2", [1_000_000])
    second = _result(tmp_path / "es.json", "elasticsearch 8.19.9", [1_000_000])
    done = _chart(tmp_path, first, second)
    assert done.returncode == 1 and "elasticsearch 8.19.9, but the files before it hold opensearch" in done.stderr
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("extra", [[], ["--chart", "x.png", "--url", "http://127.0.0.1:9200"]])
def test_chart_from_measures_nothing_and_needs_chart(tmp_path, extra):
    only = _result(tmp_path / "only.json", "opensearch 3.3.2", [100_000])
    done = subprocess.run([sys.executable, str(SCRIPT), "--chart-from", str(only), *extra],
                          capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    assert done.returncode == 2 and "--chart-from needs --chart and measures nothing" in done.stderr
    assert not (tmp_path / "x.png").exists()
