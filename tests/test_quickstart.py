"""The quickstart script itself, run end to end on a tiny model, so CI notices when it breaks.

Same script, same commands as a new user runs; only the sizes differ: a 2-layer BERT instead of
MiniLM, 3 training steps, and the splade-es already installed instead of a fresh .venv.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "quickstart.sh"


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                   "QUICKSTART_INSTALL": "0", "SPLADE_ES_SHARED_DATA": str(SHARED_DATA), **env}
    return subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=environment, capture_output=True, text=True,
                          timeout=900, check=False)


def test_quickstart_runs_every_step_on_a_tiny_model(tmp_path, tiny_bert_dir):
    work = tmp_path / "qs"
    done = _run(tmp_path, QUICKSTART_DIR=str(work), QUICKSTART_START_MODEL=str(tiny_bert_dir), QUICKSTART_STEPS="3",
                QUICKSTART_TRAIN="batch.size=8 batch.chunk_size=4 model.max_length=32 model.encode_max_length=64")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for step in range(1, 8):
        assert f"==> {step}/7" in out, step
    corpus = len((SHARED_DATA / "cranfield" / "corpus.jsonl").read_text().splitlines())
    assert "trained 3 steps" in out and f"indexed {corpus}, failed 0" in out
    # search --explain: three ranked hits, each with the terms that contributed to its score
    assert "3 hits for" in out and out.count("terms (sum ") == 3
    runs = {"splade": "splade", "bm25": "bm25", "hybrid-rrf": "hybrid", "hybrid-linear": "hybrid"}
    evals = {name: json.loads((work / f"eval-{name}.json").read_text()) for name in runs}
    judged = len((SHARED_DATA / "cranfield" / "queries.jsonl").read_text().splitlines())
    for name, result in evals.items():
        assert result["method"] == runs[name] and 200 <= result["queries"] <= judged
    # The four rows, each after the first compared with BM25 query by query.
    for label in ("BM25", "model", "model + BM25 (RRF)", "model + BM25 (linear)"):
        assert label in out, label
    assert out.count("better") >= 3
    assert evals["hybrid-rrf"]["metrics"] != evals["hybrid-linear"]["metrics"]
    # The queries are encoded once (step 7) and the three model rows read those vectors.
    assert all(evals[name]["encode_ms"] is None for name in ("splade", "hybrid-rrf", "hybrid-linear"))
    assert len((work / "query-vectors.jsonl").read_text().splitlines()) == judged
    # Each step's wall time, in order, at the end.
    timings = out.split("Time per step:")[1].split("Next steps")[0].strip().splitlines()
    assert len(timings) == 7 and all(re.fullmatch(r"\s*\d+m\d\ds  \S.*", line) for line in timings), timings
    assert "Training 3 steps" in timings[3] and "Evaluating on every judged test query" in timings[6]
    assert "Next steps" in out and str(work / "run" / "bundle") in out
    assert (work / "run" / "bundle" / "splade_config.json").is_file()
    # A second run rebuilds its own directory.
    again = _run(tmp_path, QUICKSTART_DIR=str(work), QUICKSTART_START_MODEL=str(tiny_bert_dir), QUICKSTART_STEPS="1",
                 QUICKSTART_TRAIN="batch.size=4 batch.chunk_size=4 model.max_length=16 model.encode_max_length=32")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "trained 1 steps" in again.stdout


def test_quickstart_refuses_bad_data_and_foreign_directories(tmp_path):
    done = _run(tmp_path, QUICKSTART_DATA=str(tmp_path / "nowhere"))
    assert done.returncode == 2 and "corpus.jsonl not found" in done.stderr
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("user data")
    done = _run(tmp_path, QUICKSTART_DIR=str(foreign))
    assert done.returncode == 2 and "was not made by this script" in done.stderr
    assert (foreign / "keep.txt").read_text() == "user data"
