"""The training loop end to end on CPU: loss falls, the bundle loads, resume is exact, adapt works."""

from __future__ import annotations

import csv
import math
import json

import pytest
import torch
from click.testing import CliRunner

from splade_es.model import SparseEncoder
from splade_es.toolkit.cli import main
from splade_es.trainer.config import TrainConfig
from splade_es.trainer.loop import Trainer, cpu_bf16_enabled
from trainer.conftest import tiny_config


def _losses(path) -> list[float]:
    with open(path) as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


def test_a_small_config_trains_end_to_end_and_the_bundle_encodes(tmp_path, tiny_mistral_dir, cranfield_pairs):
    # The mechanics on the decoder path (echo, LoRA): logs, FLOPS, checkpoints, the bundle. A random
    # 2-layer model cannot learn to rank in 30 steps; the MiniLM test below shows learning.
    config = TrainConfig.from_dict(tiny_config(
        tmp_path, tiny_mistral_dir, cranfield_pairs, lora={"r": 8, "dropout": 0.0},
        loss={"lambda_q": 0.01, "lambda_d": 0.01, "lambda_warmup_steps": 0},
        optim={"max_steps": 30, "warmup_steps": 3, "lr": 1e-2}, run={"save_every": 10}))
    result = Trainer(config, show_progress=False).train()
    losses = _losses(result.log)
    assert len(losses) == 30 and sum(losses[-5:]) < sum(losses[:5])
    with open(result.log) as handle:
        rows = list(csv.DictReader(handle))
    assert {"info_nce", "flops_q", "flops_d", "lambda_q", "active_q", "active_d", "lr", "examples_per_s"} <= set(rows[0])
    assert list((tmp_path / "run" / "tensorboard").iterdir())
    encoder = SparseEncoder.from_pretrained(str(result.bundle), device="cpu")
    vector = encoder.encode_queries("boundary layer transition")
    assert len(vector) > 0 and encoder.config.mode == "echo"
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["contrastive-step-20", "contrastive-step-30"]  # keep_checkpoints = 2


def test_a_real_small_model_trains_sparse_and_keeps_ranking(tmp_path, minilm_start, cranfield_pairs):
    """Full fine-tuning of the MiniLM start on Cranfield title -> body pairs. The pretrained start
    already tells a title's body from the others of its batch; training must keep that (InfoNCE
    well under chance, the log of the 8 documents per query) while FLOPS makes the documents
    several times sparser. (Whether it ranks *better* takes hundreds of steps: docs/BENCHMARKS.md.)"""
    config = TrainConfig.from_dict(tiny_config(
        tmp_path, minilm_start, cranfield_pairs, model={"mode": "mlm", "max_length": 32, "encode_max_length": 128},
        lora={"enabled": False}, loss={"lambda_q": 0.001, "lambda_d": 0.001, "lambda_warmup_steps": 10},
        optim={"max_steps": 20, "warmup_steps": 3, "lr": 1e-4}, batch={"size": 8, "chunk_size": 8},
        run={"save_every": 100}))
    result = Trainer(config, show_progress=False).train()
    with open(result.log) as handle:
        rows = list(csv.DictReader(handle))
    info_nce = [float(row["info_nce"]) for row in rows]
    assert len(rows) == 20 and sum(info_nce[-10:]) / 10 < 0.6 * math.log(8), info_nce
    active = [float(row["active_d"]) for row in rows]
    assert sum(active[-5:]) / 5 < 0.3 * active[0], active  # FLOPS sparsifies
    encoder = SparseEncoder.from_pretrained(str(result.bundle), device="cpu")
    assert encoder.config.max_length == 128 and encoder.config.mode == "mlm"  # encode_max_length, not 32
    assert len(encoder.encode_documents("boundary layer transition on a flat plate")) > 0


def test_cpu_bf16_autocasts_on_cpu_and_the_bundle_stays_float32(tmp_path, tiny_mistral_dir, cranfield_pairs):
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert [cpu_bf16_enabled(s) for s in (True, False, "auto")] == [True, False, native]
    config = TrainConfig.from_dict(tiny_config(tmp_path, tiny_mistral_dir, cranfield_pairs,
                                               optim={"max_steps": 4}, run={"cpu_bf16": True, "save_every": 100}))
    trainer = Trainer(config, show_progress=False)
    with trainer._autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    result = trainer.train()
    assert len(_losses(result.log)) == 4 and all(math.isfinite(x) for x in _losses(result.log))
    adapter = SparseEncoder.from_pretrained(str(result.bundle), device="cpu").backbone.model
    assert {p.dtype for p in adapter.parameters()} == {torch.float32}


def test_an_interrupted_run_resumes_exactly(tmp_path, tiny_mistral_dir, cranfield_pairs):
    straight = TrainConfig.from_dict(tiny_config(tmp_path / "a", tiny_mistral_dir, cranfield_pairs))
    expected = _losses(Trainer(straight, show_progress=False).train().log)
    interrupted = TrainConfig.from_dict(tiny_config(tmp_path / "b", tiny_mistral_dir, cranfield_pairs))
    Trainer(interrupted, show_progress=False).train(stop_at=4)
    assert len(_losses(tmp_path / "b" / "run" / "contrastive-log.csv")) == 4
    resumed = Trainer(interrupted, resume=True, show_progress=False)
    assert resumed.step == 4
    got = _losses(resumed.train().log)
    assert len(got) == len(expected) == 6
    assert got == pytest.approx(expected, rel=1e-5)


def test_the_adaptation_stage_then_contrastive_from_its_adapter(tmp_path, tiny_mistral_dir, cranfield_pairs):
    text = tmp_path / "unlabelled.txt"
    text.write_text("\n".join(json.loads(line)[1] for line in cranfield_pairs.read_text().splitlines()[:64]))
    config = TrainConfig.from_dict(tiny_config(tmp_path, tiny_mistral_dir, cranfield_pairs,
                                               data={"adapt_text": [str(text)]}, optim={"max_steps": 12}))
    adapt = Trainer(config, stage="adapt", show_progress=False).train()
    with open(adapt.log) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12 and all(float(r["relu"]) > 0 and float(r["clm"]) > 0 for r in rows)
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    follow = TrainConfig.from_dict(tiny_config(tmp_path / "next", tiny_mistral_dir, cranfield_pairs,
                                               model={"init_adapter": str(adapt.bundle)}, optim={"max_steps": 2}))
    assert Trainer(follow, show_progress=False).train().steps == 2


def test_the_train_command_reports_json_and_refuses_unknown_keys(tmp_path, tiny_mistral_dir, cranfield_pairs):
    config = tiny_config(tmp_path, tiny_mistral_dir, cranfield_pairs, optim={"max_steps": 2})
    path = tmp_path / "tiny.toml"
    path.write_text(_toml(config))
    result = CliRunner().invoke(main, ["train", "--config", str(path), "--json", "--no-progress",
                                       "--override", "run.tensorboard=false"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["bad_lines"] == {"cranfield": 0}
    bad = CliRunner().invoke(main, ["train", "--config", str(path), "--override", "optim.speed=2"])
    assert bad.exit_code == 1 and "unknown key(s) optim.speed" in bad.output


def _toml(config: dict) -> str:
    lines = []
    for section, values in config.items():
        if section == "data":
            lines.append(f"[data]\nseed = {values['seed']}")
            for dataset in values["datasets"]:
                lines.append(f"[[data.datasets]]\nname = {json.dumps(dataset['name'])}\npath = {json.dumps(dataset['path'])}")
            continue
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def test_two_torchrun_ranks_train_like_one_process(tmp_path, tiny_mistral_dir, cranfield_pairs):
    """Without dropout, 2 ranks (each half the batch, negatives gathered, gradients summed)
    follow the single-process loss curve."""
    import os
    import socket
    import subprocess
    import sys

    sections = {"lora": {"dropout": 0.0}, "optim": {"max_steps": 4}, "run": {"tensorboard": False}}
    single = TrainConfig.from_dict(tiny_config(tmp_path / "one", tiny_mistral_dir, cranfield_pairs, **sections))
    expected = _losses(Trainer(single, show_progress=False).train().log)
    config = tiny_config(tmp_path / "two", tiny_mistral_dir, cranfield_pairs, **sections)
    path = tmp_path / "two.toml"
    path.write_text(_toml(config))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                             "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "splade_es.toolkit.cli",
                             "train", "--config", str(path), "--no-progress", "--json"],
                            capture_output=True, text=True, timeout=600, check=False, env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-3000:]
    got = _losses(tmp_path / "two" / "run" / "contrastive-log.csv")
    assert got == pytest.approx(expected, rel=1e-4)
