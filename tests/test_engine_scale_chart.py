"""benchmarks/engine_scale.py --chart-from: one chart from sizes measured in separate sessions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "engine_scale.py"


def _result(path: Path, engine: str, sizes: list[int]) -> Path:
    runs = [{"docs": docs, "methods": {"bm25": {"took_ms": {"p50": docs / 1e5}},
                                       "splade full": {"took_ms": {"p50": 2 * docs / 1e5}}}} for docs in sizes]
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


def test_a_size_in_two_files_is_refused_naming_the_file(tmp_path):
    first = _result(tmp_path / "first.json", "opensearch 3.3.2", [100_000])
    second = _result(tmp_path / "second.json", "opensearch 3.3.2", [100_000])
    done = _chart(tmp_path, first, second)
    assert done.returncode == 1
    assert "second.json: 100000 documents are in an earlier file too" in done.stderr
    assert not (tmp_path / "out.png").exists()


def test_two_engines_in_one_chart_are_refused(tmp_path):
    first = _result(tmp_path / "os.json", "opensearch 3.3.2", [100_000])
    second = _result(tmp_path / "es.json", "elasticsearch 8.19.9", [1_000_000])
    done = _chart(tmp_path, first, second)
    assert done.returncode == 1 and "one engine per chart" in done.stderr
    assert not (tmp_path / "out.png").exists()


def test_chart_from_without_chart_is_a_usage_error(tmp_path):
    only = _result(tmp_path / "only.json", "opensearch 3.3.2", [100_000])
    done = subprocess.run([sys.executable, str(SCRIPT), "--chart-from", str(only)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2 and "--chart-from needs --chart" in done.stderr
