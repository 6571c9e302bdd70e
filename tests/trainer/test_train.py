"""The training loop end to end on CPU: loss falls, the bundle loads, resume is exact, adapt works."""

from __future__ import annotations

import csv
import math
import json

import pytest
import torch
from click.testing import CliRunner

from splade_es.errors import ConfigError
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
    with open(result.log) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 30
    # Each part on its own: FLOPS is what this run can lower (the total could fall through it alone);
    # InfoNCE stays a finite cross-entropy over the 8 documents (learning to rank: the MiniLM test).
    flops = [float(r["flops_q"]) + float(r["flops_d"]) for r in rows]
    assert sum(flops[-5:]) < 0.6 * sum(flops[:5]), flops
    info_nce = [float(r["info_nce"]) for r in rows]
    assert all(math.isfinite(x) and x >= 0 for x in info_nce)
    for row in rows:  # the logged loss is exactly its parts
        parts = float(row["info_nce"]) + 0.01 * (float(row["flops_q"]) + float(row["flops_d"]))
        assert float(row["loss"]) == pytest.approx(parts, rel=1e-4)
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
        optim={"max_steps": 30, "warmup_steps": 3, "lr": 1e-4}, batch={"size": 8, "chunk_size": 8},
        run={"save_every": 100}))
    result = Trainer(config, show_progress=False).train()
    with open(result.log) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 30
    active = [float(row["active_d"]) for row in rows]
    assert sum(active[-5:]) / 5 < 0.3 * active[0], active  # FLOPS sparsifies
    encoder = SparseEncoder.from_pretrained(str(result.bundle), device="cpu")
    # Ranking measured on the same four fixed batches of 8 pairs, not on the training batches of
    # the last steps (one hard batch there moves a 10-step mean by half a nat).
    held_out = _fixed_batches_info_nce(encoder, cranfield_pairs)
    assert held_out < 0.75 * math.log(8), held_out  # measured 1.32 (chance: 2.08)
    assert encoder.config.max_length == 128 and encoder.config.mode == "mlm"  # encode_max_length, not 32
    assert len(encoder.encode_documents("boundary layer transition on a flat plate")) > 0


def _fixed_batches_info_nce(encoder: SparseEncoder, pairs_path) -> float:
    """Mean InfoNCE of the first 32 pairs in batches of 8 (in-batch negatives, as in training)."""
    from splade_es.trainer.losses import info_nce
    from splade_es.trainer.loop import encode_chunk

    pairs = [json.loads(line) for line in pairs_path.read_text().splitlines()[:32]]
    values = []
    with torch.no_grad():
        for start in range(0, 32, 8):
            batch = pairs[start:start + 8]
            queries = encode_chunk(encoder, [(True, title) for title, _ in batch])
            documents = encode_chunk(encoder, [(False, body) for _, body in batch])
            values.append(float(info_nce(queries, documents)))
    return sum(values) / len(values)


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


def test_the_adaptation_terms_match_an_independent_computation_with_padding(tmp_path, tiny_mistral_dir,
                                                                           cranfield_pairs):
    """The chunked CE from hidden states against each text run alone (no padding) through the
    model's own forward, with the cross-entropies written out as log-sum-exp minus the target."""
    text = tmp_path / "unlabelled.txt"
    text.write_text("Shock waves.\nBoundary layer transition on a flat plate at supersonic speeds.\nLift of a wing.\n"
                    "Heat transfer.\n")
    config = TrainConfig.from_dict(tiny_config(tmp_path, tiny_mistral_dir, cranfield_pairs, lora={"dropout": 0.0},
                                               data={"adapt_text": [str(text)]}, batch={"size": 4}))
    trainer = Trainer(config, stage="adapt", show_progress=False)
    trainer.encoder.head_chunk_tokens = 5  # several head chunks, splitting texts
    ids, mask = trainer._causal_batch(trainer.texts[:3])
    lengths = mask.sum(1).tolist()
    assert len(set(lengths)) == 3  # padding on two rows
    got = trainer._adaptation_sums(ids, mask).tolist()
    clm = relu = 0.0
    with torch.no_grad():
        for row, length in zip(ids, lengths):
            logits = trainer.encoder.backbone.model(input_ids=row[None, :length]).logits[0].double()
            for position in range(length - 1):
                target = int(row[position + 1])
                activated = torch.log1p(torch.relu(logits[position]))
                clm += float(torch.logsumexp(logits[position], 0) - logits[position, target])
                relu += float(torch.logsumexp(activated, 0) - activated[target])
    assert got == pytest.approx([clm, relu], rel=1e-4)


def test_the_adaptation_stage_stays_causal_when_the_mode_is_bidirectional(tmp_path, tiny_mistral_dir,
                                                                          cranfield_pairs):
    """Next-token prediction with the later tokens visible would be no task at all."""
    text = tmp_path / "unlabelled.txt"
    text.write_text("Shock waves.\nLift of a wing.\nHeat transfer.\nDrag.\n")
    config = TrainConfig.from_dict(tiny_config(tmp_path, tiny_mistral_dir, cranfield_pairs,
                                               model={"mode": "bidirectional"}, lora={"dropout": 0.0},
                                               data={"adapt_text": [str(text)]}, batch={"size": 4}))
    trainer = Trainer(config, stage="adapt", show_progress=False)
    backbone = trainer.encoder.backbone
    ids, mask = trainer._causal_batch(trainer.texts[:2])
    head, backbone.head = backbone.head, None  # first through the full forward (a head that cannot be split)
    with torch.no_grad():
        full = trainer._adaptation_sums(ids, mask)
        backbone.head = head
        split = trainer._adaptation_sums(ids, mask)
        pair = torch.tensor([[1, 100, 200, 300, 400], [1, 100, 200, 300, 401]])
        hidden = backbone.hidden_states(pair, torch.ones_like(pair), bidirectional=False)
    torch.testing.assert_close(hidden[0, :4], hidden[1, :4])  # the last token changes only itself
    torch.testing.assert_close(full, split, rtol=1e-4, atol=1e-4)


def test_a_chunk_without_target_tokens_adds_nothing_to_the_adaptation_step(tmp_path, tiny_mistral_dir,
                                                                           cranfield_pairs):
    """One-token texts under a tokenizer without <s> (Qwen's, say) predict nothing: such a chunk
    (or a rank's whole share) has no graph to back-propagate, and the step goes on."""
    text = tmp_path / "unlabelled.txt"
    text.write_text("wing\nlift\ndrag\nBoundary layer transition on a flat plate.\n")
    config = TrainConfig.from_dict(tiny_config(tmp_path, tiny_mistral_dir, cranfield_pairs, lora={"dropout": 0.0},
                                               data={"adapt_text": [str(text)]}, batch={"size": 4, "chunk_size": 1}))
    trainer = Trainer(config, stage="adapt", show_progress=False)
    assert [len(trainer.encoder.inputs.tokenize(t)) for t in trainer.texts[:3]] == [1, 1, 1]
    trainer.encoder.tokenizer.bos_token = None
    assert trainer.encoder.tokenizer.bos_token_id is None
    row = trainer._adapt_step()
    assert row["clm"] > 0 and any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.parameters)


def test_the_adaptation_stage_refuses_mlm_and_too_little_text(tmp_path, tiny_mistral_dir, cranfield_pairs):
    text = tmp_path / "unlabelled.txt"
    text.write_text("one text\nanother text\n")
    config = tiny_config(tmp_path, tiny_mistral_dir, cranfield_pairs, data={"adapt_text": [str(text)]})
    with pytest.raises(ConfigError, match="a masked LM"):
        Trainer(TrainConfig.from_dict({**config, "model": {**config["model"], "mode": "mlm"}}), stage="adapt")
    with pytest.raises(ConfigError, match="holds 2 texts, fewer than one batch"):
        Trainer(TrainConfig.from_dict(config), stage="adapt")


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
            lines.append(f"[data]\nseed = {values['seed']}\ncache_dir = {json.dumps(values['cache_dir'])}")
            for dataset in values["datasets"]:
                lines.append(f"[[data.datasets]]\nname = {json.dumps(dataset['name'])}\npath = {json.dumps(dataset['path'])}")
            continue
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def _mixed_negatives(cranfield_pairs, path):
    """Cranfield pairs where only two in three have a negative (another pair's body), as
    ``splade-es pairs`` writes them ("neg": [] where BM25 found none)."""
    pairs = [json.loads(line) for line in cranfield_pairs.read_text().splitlines()[:120]]
    path.write_text("".join(json.dumps({"query": q, "pos": [d], "neg": [] if i % 3 == 0 else [pairs[(i + 7) % 120][1]]})
                            + "\n" for i, (q, d) in enumerate(pairs)))
    return path


def test_two_torchrun_ranks_run_both_stages_like_one_process(tmp_path, tiny_mistral_dir, cranfield_pairs):
    """Without dropout, 2 gloo ranks (each half the batch, negatives gathered, gradients summed)
    follow the single-process contrastive loss curve on data where only some examples have a
    negative (one dataset drops the others, one trains without negatives: the groups of a batch
    must match on every rank), and the adaptation stage's gradients equal the single process's."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from trainer.ranks_worker import adapt_gradients

    mixed = _mixed_negatives(cranfield_pairs, tmp_path / "mixed.jsonl")
    datasets = [{"name": "dropped", "path": str(mixed), "negatives": "drop"}, {"name": "auto", "path": str(mixed)}]
    text = tmp_path / "unlabelled.txt"
    # Titles, not bodies: every body fills max_length, so each rank would hold the same number of
    # target tokens and a per-rank mean averaged over ranks would pass for the global token mean.
    text.write_text("\n".join(json.loads(line)[0] for line in cranfield_pairs.read_text().splitlines()[:40]))

    def configs(root):
        common = {"lora": {"dropout": 0.0}, "run": {"tensorboard": False}}
        contrastive = tiny_config(root, tiny_mistral_dir, cranfield_pairs, optim={"max_steps": 4}, **common,
                                  data={"seed": 5, "datasets": datasets, "cache_dir": str(tmp_path / "cache")})
        adapt = tiny_config(root / "adapt", tiny_mistral_dir, cranfield_pairs, optim={"max_steps": 2}, **common,
                            data={"adapt_text": [str(text)]})
        return contrastive, adapt

    contrastive, adapt = configs(tmp_path / "one")
    expected = _losses(Trainer(TrainConfig.from_dict(contrastive), show_progress=False).train().log)
    single = adapt_gradients(TrainConfig.from_dict(adapt))
    paths = []
    for name, config in zip(("contrastive", "adapt"), configs(tmp_path / "two")):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(config))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    worker = Path(__file__).with_name("ranks_worker.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                             "--master-addr", "127.0.0.1", "--master-port", str(port), str(worker), *map(str, paths),
                             str(tmp_path / "ranks.pt")], capture_output=True, text=True, timeout=600, check=False, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "two" / "run" / "contrastive-log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["dataset"] for row in rows} == {"dropped", "auto"}
    assert [float(row["loss"]) for row in rows] == pytest.approx(expected, rel=1e-4)
    two = torch.load(tmp_path / "ranks.pt")
    assert two["adapt_steps"] == 2
    assert two["row"]["loss"] == pytest.approx(single["row"]["loss"], rel=1e-5)
    assert any(g.abs().sum() > 0 for g in single["grads"])
    for got, want in zip(two["grads"], single["grads"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-6)
