"""The training loop: contrastive (InfoNCE + FLOPS) or the CSPLADE adaptation stage, with
gradient caching, rank-gathered negatives, checkpoints that resume exactly, CSV/TensorBoard logs.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from splade_es.errors import ConfigError
from splade_es.model.encoder import SparseEncoder
from splade_es.io.ranks import Ranks
from splade_es.trainer import losses
from splade_es.trainer.config import TrainConfig
from splade_es.trainer.data import Dataset, MixtureSampler, iter_adapt_texts, load_dataset
from splade_es.trainer.gradcache import all_reduce_gradients, cached_step
from splade_es.trainer.static_queries import attach_trainable_table, training_documents
from splade_es.trainer.trainable import build_encoder, load_trainable_state, trainable_parameters, trainable_state

_log = logging.getLogger(__name__)
STAGES = ("contrastive", "adapt")
LOG_FIELDS = ["step", "stage", "dataset", "loss", "info_nce", "flops_q", "flops_d", "lambda_q", "lambda_d",
              "active_q", "active_d", "clm", "relu", "lr", "grad_norm", "examples_per_s"]


@dataclass
class TrainResult:
    steps: int
    bundle: Path
    log: Path
    final_loss: float


class Trainer:
    """``Trainer(config, stage).train()``; ``resume=True`` continues from the newest checkpoint."""

    def __init__(self, config: TrainConfig, stage: str = "contrastive", resume: bool = False,
                 show_progress: bool = True) -> None:
        if stage not in STAGES:
            raise ConfigError(f"unknown stage {stage!r}: choose {', '.join(STAGES)}")
        self.config, self.stage, self.show_progress = config, stage, show_progress
        self.ranks = Ranks.from_env()
        self._init_distributed()
        self.device = torch.device(config.run.device or self.ranks.default_device()
                                   or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.output = Path(config.run.output_dir)
        _seed_everything(config.run.seed)  # the same adapter initialisation on every rank
        if stage == "contrastive":
            datasets = self._load_datasets()
            self.datasets = {d.name: d for d in datasets}
            self.sampler = MixtureSampler(datasets, [spec.weight for spec in config.data.datasets], config.batch.size,
                                          config.data.seed)
            self.bad_lines = {d.name: d.bad_lines for d in datasets}
            if config.batch.size % self.ranks.world_size:
                raise ConfigError(f"batch.size {config.batch.size} is not divisible by {self.ranks.world_size} ranks")
        else:
            if config.model.mode == "mlm":
                raise ConfigError("--stage adapt trains next-token prediction (CSPLADE), which a masked LM "
                                  "(model.mode = \"mlm\") does not do; run the contrastive stage directly")
            self.texts = list(iter_adapt_texts(config.data.adapt_text))
            if not self.texts:
                raise ConfigError("--stage adapt needs unlabelled text: data.adapt_text = [files]")
            if len(self.texts) < config.batch.size:
                raise ConfigError(f"--stage adapt: data.adapt_text holds {len(self.texts)} texts, fewer than one "
                                  f"batch (batch.size = {config.batch.size}): add text or lower batch.size")
            if config.batch.size % self.ranks.world_size:
                raise ConfigError(f"batch.size {config.batch.size} is not divisible by {self.ranks.world_size} ranks")
            self.bad_lines = {}
        self.encoder: SparseEncoder = build_encoder(config, self.device)
        if config.model.query_encoder == "static":
            if stage != "contrastive":
                raise ConfigError("model.query_encoder = \"static\" trains with the contrastive stage only")
            attach_trainable_table(self.encoder, training_documents(datasets),
                                   config.model.encode_max_length or config.model.max_length)
        self.parameters = trainable_parameters(self.encoder)
        self._broadcast_parameters()
        _seed_everything(config.run.seed + self.ranks.rank)  # then each rank its own dropout stream
        optim = config.optim
        self.optimizer = torch.optim.AdamW(self._parameter_groups(), lr=optim.lr, betas=tuple(optim.betas),
                                           eps=optim.eps, weight_decay=optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0
        if resume:
            self._resume()

    def _parameter_groups(self) -> list[dict[str, Any]]:
        """The model's weights, and a static query table with its own learning rate."""
        table = self.encoder.static_queries.weights if self.encoder.static_queries is not None else None
        rest = [p for p in self.parameters if p is not table]
        if table is None:
            return [{"params": rest}]
        return [{"params": rest}, {"params": [table], "lr": self.config.model.query_table_lr or self.config.optim.lr,
                                   "weight_decay": 0.0}]

    # ---------------------------------------------------------------- schedule
    def _lr_factor(self, step: int) -> float:
        """Linear warm-up, then linear decay to zero at max_steps."""
        warmup, total = self.config.optim.warmup_steps, self.config.optim.max_steps
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    # ---------------------------------------------------------------- loop
    def train(self, stop_at: int | None = None) -> TrainResult:
        """Run to ``optim.max_steps`` (or stop after step ``stop_at``, as an interruption would,
        with a checkpoint there), then write the bundle."""
        config = self.config
        last = min(config.optim.max_steps, stop_at or config.optim.max_steps)
        log_path = self.output / f"{self.stage}-log.csv"
        writer = _LogWriter(log_path, self.output / "tensorboard", config.run.tensorboard and self.ranks.is_main,
                            append=self.step > 0, enabled=self.ranks.is_main)
        bar = tqdm(total=config.optim.max_steps, initial=self.step, unit="step", desc=f"train ({self.stage})",
                   disable=not (self.show_progress and self.ranks.is_main))
        loss = math.nan
        try:
            while self.step < last:
                started = time.perf_counter()
                self.optimizer.zero_grad(set_to_none=True)
                row = self._contrastive_step() if self.stage == "contrastive" else self._adapt_step()
                all_reduce_gradients(self.parameters)
                grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters, config.optim.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                loss = row["loss"]
                row.update(step=self.step, stage=self.stage, lr=self.scheduler.get_last_lr()[0],
                           grad_norm=float(grad_norm),
                           examples_per_s=config.batch.size / (time.perf_counter() - started))
                if self.step % config.run.log_every == 0 or self.step == config.optim.max_steps:
                    writer.write(row)
                bar.set_postfix(loss=f"{loss:.4f}")
                bar.update(1)
                if self.step % config.run.save_every == 0 and self.step < last:
                    self._save_checkpoint()
            self._save_checkpoint()
            bundle = self._save_bundle() if self.step >= config.optim.max_steps else self.output
        finally:
            bar.close()
            writer.close()
        return TrainResult(self.step, bundle, log_path, loss)

    def _autocast(self):
        if self.device.type == "cuda" and self.config.run.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        if self.device.type == "cpu" and cpu_bf16_enabled(self.config.run.cpu_bf16):
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return nullcontext()

    def _contrastive_step(self) -> dict[str, Any]:
        name, examples = self.sampler.batch(self.step, self.ranks.rank, self.ranks.world_size)
        groups = [[(True, e.query) for e in examples], [(False, e.positive) for e in examples]]
        if self.datasets[name].uses_negatives:  # decided at load time: the same groups on every rank
            groups.append([(False, e.negatives[0]) for e in examples])
        loss_cfg = self.config.loss
        lambda_q = losses.lambda_at(self.step, loss_cfg.lambda_q, loss_cfg.lambda_warmup_steps)
        if self.encoder.static_queries is not None:
            lambda_q = 0.0  # inference-free queries: FLOPS on documents only
        lambda_d = losses.lambda_at(self.step, loss_cfg.lambda_d, loss_cfg.lambda_warmup_steps)

        def loss_fn(full: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
            queries, documents = full[0], torch.cat(full[1:])
            nce = losses.info_nce(queries, documents, loss_cfg.temperature)
            flops_q, flops_d = losses.flops(queries), losses.flops(documents)
            total = nce + lambda_q * flops_q + lambda_d * flops_d
            return total, {"info_nce": float(nce.detach()), "flops_q": float(flops_q.detach()),
                           "flops_d": float(flops_d.detach()),
                           "active_q": float((queries > 0).sum(1).float().mean()),
                           "active_d": float((documents > 0).sum(1).float().mean())}

        loss, parts = cached_step(partial(encode_chunk, self.encoder), groups, self.config.batch.chunk_size, loss_fn,
                                  self._autocast)
        return {"loss": loss, "dataset": name, "lambda_q": lambda_q, "lambda_d": lambda_d, **parts}

    def _adapt_step(self) -> dict[str, Any]:
        """CSPLADE's adaptation loss as one mean over every target token of the global batch:
        each rank back-propagates its token sums divided by the global token count, so the
        summed gradients are those of one process holding the whole batch."""
        rng = random.Random(f"{self.config.data.seed}/adapt/{self.step}")
        per_rank = self.config.batch.size // self.ranks.world_size
        picked = rng.sample(range(len(self.texts)), self.config.batch.size)
        texts = [self.texts[i] for i in picked[self.ranks.rank * per_rank:(self.ranks.rank + 1) * per_rank]]
        chunk_size = self.config.batch.chunk_size
        batches = [self._causal_batch(texts[i:i + chunk_size]) for i in range(0, len(texts), chunk_size)]
        local = sum(int(mask[:, 1:].sum()) for _, mask in batches)
        count = max(float(_all_reduce_sum(torch.tensor([local], dtype=torch.float64))), 1.0)
        lambda_relu = self.config.loss.lambda_relu
        sums = torch.zeros(2, dtype=torch.float64)
        for input_ids, attention_mask in batches:
            with self._autocast():
                part = self._adaptation_sums(input_ids, attention_mask)
            loss = (part[0] + lambda_relu * part[1]) / count
            if loss.requires_grad:  # not when no text of the chunk has a target (one token and no <s>)
                loss.backward()
            sums += part.detach().cpu()
        clm, relu = (_all_reduce_sum(sums) / count).tolist()
        return {"loss": clm + lambda_relu * relu, "clm": clm, "relu": relu, "dataset": "adapt"}

    def _adaptation_sums(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Summed next-token cross-entropies (CLM, ReLU) of one chunk of texts, from the
        hidden states through the pooling's head, a few thousand tokens at a time."""
        backbone = self.encoder.backbone
        predicts = attention_mask[:, 1:].bool()  # position i predicts token i + 1 when that is not padding
        targets = input_ids[:, 1:][predicts]
        if backbone.head is None:  # a head that cannot be split off: full logits, as pooling does
            backbone.set_attention(False)  # the layers may be bidirectional from the contrastive mode
            logits = backbone.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
            return losses.adaptation_sums(logits[:, :-1][predicts], targets)
        hidden = backbone.hidden_states(input_ids, attention_mask, bidirectional=False)
        return losses.chunked_adaptation_sums(hidden[:, :-1][predicts], targets, backbone.head,
                                              self.encoder.head_chunk_tokens)

    def _causal_batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``<s>`` + text, right-padded (padding masked out of the loss)."""
        tokenizer, limit = self.encoder.tokenizer, self.config.model.max_length
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        rows = [(bos + self.encoder.inputs.tokenize(text))[:limit] for text in texts]
        width = max(len(row) for row in rows)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows], device=self.device)
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows], device=self.device)
        return ids, mask

    # ---------------------------------------------------------------- checkpoints
    def _checkpoints(self) -> list[Path]:
        root = self.output / "checkpoints"
        found = [p for p in root.glob(f"{self.stage}-step-*") if (p / "trainer_state.json").is_file()]
        return sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[1]))

    def _save_checkpoint(self) -> None:
        """Rank 0 writes the model, optimizer, scheduler and sampler; every rank its own RNG
        state (dropout streams differ per rank), into a staging directory renamed at the end."""
        target = self.output / "checkpoints" / f"{self.stage}-step-{self.step}"
        staging = target.with_name(target.name + ".tmp")
        if self.ranks.is_main:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            torch.save({"model": trainable_state(self.encoder), "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict()}, staging / "state.pt")
            state = {"step": self.step, "stage": self.stage, "world_size": self.ranks.world_size,
                     "config": self.config.to_dict(),
                     "sampler": self.sampler.state_dict() if self.stage == "contrastive" else None}
            (staging / "trainer_state.json").write_text(json.dumps(state, indent=1))
        self._barrier()
        torch.save(_rng_state(), staging / f"rng-{self.ranks.rank}.pt")
        self._barrier()
        if self.ranks.is_main:
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
            for old in self._checkpoints()[:-self.config.run.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self._barrier()

    def _resume(self) -> None:
        checkpoints = self._checkpoints()
        if not checkpoints:
            raise ConfigError(f"--resume: no {self.stage} checkpoint in {self.output / 'checkpoints'}")
        latest = checkpoints[-1]
        state = json.loads((latest / "trainer_state.json").read_text())
        saved = torch.load(latest / "state.pt", map_location=self.device, weights_only=False)
        load_trainable_state(self.encoder, saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if state.get("sampler"):
            self.sampler.load_state_dict(state["sampler"])
        self.step = int(state["step"])
        rng = latest / f"rng-{self.ranks.rank}.pt"
        if rng.is_file():
            _set_rng_state(torch.load(rng, weights_only=False))
        else:  # written by fewer ranks: this rank starts a fresh stream
            _log.warning("%s has no RNG state for rank %d (written by %s ranks); seeding it afresh", latest,
                         self.ranks.rank, state.get("world_size", "?"))
            _seed_everything(self.config.run.seed + self.ranks.rank + 1_000_003 * self.step)

    def _save_bundle(self) -> Path:
        bundle = self.output / ("adapter" if self.stage == "adapt" else "bundle")
        if self.ranks.is_main:
            trained = self.encoder.config
            self.encoder.config = replace(trained, max_length=self.config.model.encode_max_length or trained.max_length)
            self.encoder.backbone.model.eval()
            try:
                self.encoder.save_pretrained(bundle)
            finally:
                self.encoder.config = trained
                self.encoder.backbone.model.train()
        self._barrier()
        return bundle

    # ---------------------------------------------------------------- ranks
    def _init_distributed(self) -> None:
        if self.ranks.world_size > 1 and not dist.is_initialized():
            if torch.cuda.is_available():
                # Before the group: NCCL binds each rank's communicator to the current device, and
                # without this every rank of a machine would start on GPU 0.
                torch.cuda.set_device(self.ranks.local_rank % torch.cuda.device_count())
                dist.init_process_group("nccl")
            else:
                dist.init_process_group("gloo")

    def _load_datasets(self) -> list[Dataset]:
        """The first rank of each machine parses what is not cached yet; the others then open the cache."""
        data = self.config.data

        def load() -> list[Dataset]:
            return [load_dataset(spec, data.on_bad_line, data.seed, data.cache_dir or None) for spec in data.datasets]

        first = self.ranks.local_rank == 0
        datasets = load() if first else []
        self._barrier()
        return datasets if first else load()

    def _broadcast_parameters(self) -> None:
        """Rank 0's trainable weights everywhere, as DDP does, so every rank starts identical."""
        if dist.is_available() and dist.is_initialized():
            with torch.no_grad():
                for parameter in self.parameters:
                    dist.broadcast(parameter.data, src=0)

    def _barrier(self) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.barrier()


def cpu_bf16_enabled(setting: bool | str) -> bool:
    """``run.cpu_bf16``: "auto" means the CPU does bf16 matrix products natively."""
    if setting != "auto":
        return bool(setting)
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def encode_chunk(encoder: SparseEncoder, chunk: list[tuple[bool, str]]) -> torch.Tensor:
    """Pooled representations (with a graph) of ``(is_query, text)`` items of one kind."""
    if chunk[0][0] and encoder.static_queries is not None:
        return encoder.static_queries.dense([text for _, text in chunk])
    inputs = encoder.inputs
    return encoder.forward(inputs.collate(inputs.encode([text for _, text in chunk], chunk[0][0])))


def _all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over ranks (float64 on the CPU, gloo or NCCL alike)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    total = value.to(device=device, dtype=torch.float64)
    dist.all_reduce(total)
    return total.cpu().to(value.dtype)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class _LogWriter:
    """One CSV row per logged step (and TensorBoard scalars), written as they come."""

    def __init__(self, path: Path, tensorboard_dir: Path, tensorboard: bool, append: bool, enabled: bool) -> None:
        self.enabled = enabled
        self.board = None
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = path.open("a" if append and path.exists() else "w", newline="")
        self.csv = csv.DictWriter(self.handle, LOG_FIELDS, extrasaction="ignore")
        if self.handle.tell() == 0:
            self.csv.writeheader()
        if tensorboard:
            from tensorboardX import SummaryWriter

            self.board = SummaryWriter(str(tensorboard_dir))

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.csv.writerow(row)
        self.handle.flush()
        if self.board is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.board.add_scalar(f"{row['stage']}/{key}", value, row["step"])

    def close(self) -> None:
        if self.enabled:
            self.handle.close()
            if self.board is not None:
                self.board.close()
