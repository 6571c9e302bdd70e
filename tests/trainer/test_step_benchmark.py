"""benchmarks/train_step.py runs both pooling paths, and they train identically."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_both_pooling_paths_are_timed_and_take_the_same_steps(tmp_path, tiny_bert_dir, cranfield_pairs):
    overrides = [f'model.backbone="{tiny_bert_dir}"', f'data.datasets=[{{path = "{cranfield_pairs}"}}]',
                 "model.max_length=16", "model.encode_max_length=0", "batch.size=4", "batch.chunk_size=4"]
    command = [sys.executable, str(ROOT / "benchmarks" / "train_step.py"), "--config",
               str(ROOT / "configs" / "quickstart-minilm.toml"), "--steps", "2", "--warmup", "1",
               "--json-out", str(tmp_path / "out.json"), *[f"--override={o}" for o in overrides]]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "out.json").read_text())
    runs = {(run["impl"], run["bf16"]): run for run in result["runs"]}
    assert ("sparse", False) in runs and ("full", False) in runs
    for run in runs.values():
        assert not run["oom"] and run["steps"] == 2 and run["s_per_step"] > 0 and math.isfinite(run["final_loss"])
    # Same seed, same data, same gradients: the last step's loss (after two updates) agrees.
    assert runs["sparse", False]["final_loss"] == pytest.approx(runs["full", False]["final_loss"], rel=1e-3)
