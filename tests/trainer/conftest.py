"""Trainer fixtures: Cranfield title -> abstract pairs (real text) and a tiny training config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SHARED_DATA


@pytest.fixture(scope="session")
def cranfield_pairs(tmp_path_factory) -> Path:
    """``[title, text]`` lines (sentence-transformers shape) from Cranfield documents alone."""
    from splade_es.io.corpus import resolve_corpus
    from splade_es.trainer.pairs import title_pairs

    path = tmp_path_factory.mktemp("pairs") / "cranfield-pairs.jsonl"
    pairs = title_pairs(resolve_corpus(SHARED_DATA / "cranfield", None, None), negatives_depth=0)
    path.write_text("".join(json.dumps([pair.title, pair.body]) + "\n" for pair in pairs))
    return path


def tiny_config(tmp_path: Path, backbone: Path, pairs: Path, **sections) -> dict:
    """A config dict small enough for CPU: 2-layer Mistral, LoRA r 4 on all seven projections."""
    config = {
        "model": {"backbone": str(backbone), "mode": "echo", "max_length": 24, "gradient_checkpointing": False},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
        "loss": {"lambda_q": 0.001, "lambda_d": 0.001, "lambda_warmup_steps": 4},
        "optim": {"lr": 3e-3, "warmup_steps": 2, "max_steps": 6},
        "batch": {"size": 8, "chunk_size": 3},
        "data": {"seed": 1, "datasets": [{"name": "cranfield", "path": str(pairs)}], "cache_dir": str(tmp_path / "cache")},
        "run": {"output_dir": str(tmp_path / "run"), "save_every": 2, "log_every": 1, "device": "cpu"},
    }
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values}
    return config
