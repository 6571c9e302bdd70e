"""What only shows on several GPUs, checked on one CPU process: device binding before NCCL,
per-rank RNG in checkpoints, and an initial adapter that must match the lora settings."""

from __future__ import annotations

import logging

import pytest
import torch

from splade_es.errors import ConfigError
from splade_es.io.ranks import Ranks
from splade_es.trainer import loop
from splade_es.trainer.config import TrainConfig
from splade_es.trainer.trainable import build_encoder
from trainer.conftest import tiny_config


def test_each_rank_binds_its_gpu_before_the_nccl_group(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(loop.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(loop.dist, "init_process_group", lambda backend: calls.append(("init", backend)))
    trainer = loop.Trainer.__new__(loop.Trainer)
    trainer.ranks = Ranks(rank=6, world_size=8, local_rank=2)
    trainer._init_distributed()
    assert calls == [("set_device", 2), ("init", "nccl")]


def test_every_rank_resumes_its_own_rng_stream(tmp_path, tiny_mistral_dir, cranfield_pairs, monkeypatch, caplog):
    config = TrainConfig.from_dict(tiny_config(tmp_path, tiny_mistral_dir, cranfield_pairs,
                                               optim={"max_steps": 4}, run={"save_every": 2, "tensorboard": False}))
    loop.Trainer(config, show_progress=False).train(stop_at=2)
    checkpoint = tmp_path / "run" / "checkpoints" / "contrastive-step-2"
    assert (checkpoint / "rng-0.pt").is_file()
    torch.manual_seed(1234)  # stands in for rank 1's dropout stream at step 2
    rank1 = loop._rng_state()
    torch.save(rank1, checkpoint / "rng-1.pt")
    monkeypatch.setattr(loop.Trainer, "_init_distributed", lambda self: None)
    for rank in (0, 1):
        monkeypatch.setattr(loop.Ranks, "from_env", classmethod(lambda cls, r=rank: Ranks(r, 2, r)))
        loop.Trainer(config, resume=True, show_progress=False)
        expected = torch.load(checkpoint / f"rng-{rank}.pt", weights_only=False)["torch"]
        assert torch.equal(torch.get_rng_state(), expected)
    assert not torch.equal(torch.load(checkpoint / "rng-0.pt", weights_only=False)["torch"], rank1["torch"])
    monkeypatch.setattr(loop.Ranks, "from_env", classmethod(lambda cls: Ranks(2, 4, 2)))
    with caplog.at_level(logging.WARNING, logger="splade_es.trainer.loop"):
        loop.Trainer(config, resume=True, show_progress=False)
    assert "no RNG state for rank 2 (written by 1 ranks)" in caplog.text


def test_an_initial_adapter_must_match_the_lora_settings_and_takes_their_dropout(tmp_path, tiny_mistral_dir,
                                                                                 cranfield_pairs, lora_adapter_dir):
    def build(**lora):
        return build_encoder(TrainConfig.from_dict(tiny_config(
            tmp_path, tiny_mistral_dir, cranfield_pairs, model={"init_adapter": str(lora_adapter_dir)},
            lora={"r": 4, "alpha": 8, **lora})), torch.device("cpu"))

    with pytest.raises(ConfigError, match=r"lora.r = 8 but the adapter has 4; lora.alpha = 16 but the adapter has 8"):
        build(r=8, alpha=16)
    encoder = build(dropout=0.0)
    dropouts = [d for m in encoder.backbone.model.modules() if hasattr(m, "lora_dropout") for d in m.lora_dropout.values()]
    assert dropouts and all(isinstance(d, torch.nn.Identity) for d in dropouts)
    encoder = build(dropout=0.3)
    dropouts = [d for m in encoder.backbone.model.modules() if hasattr(m, "lora_dropout") for d in m.lora_dropout.values()]
    assert all(isinstance(d, torch.nn.Dropout) and d.p == 0.3 for d in dropouts)


def test_the_head_is_never_a_lora_target(tmp_path, tiny_mistral_dir, cranfield_pairs):
    config = TrainConfig.from_dict(tiny_config(tmp_path, tiny_mistral_dir, cranfield_pairs,
                                               lora={"target_modules": ["q_proj", "lm_head"]}))
    with pytest.raises(ConfigError, match="must not hold lm_head"):
        build_encoder(config, torch.device("cpu"))
