"""GPU proof in one short run: encoding MFU, query latency, a QLoRA step, 8/4-bit inference.

One prepared command for a short GPU window (issue 23). It builds the full-size Mistral-7B-v0.3
architecture from its config with random bf16 weights (weights do not change speed or memory),
saves it once to local disk, and runs four sections in order, writing ``OUT/gpu_suite.json``
after each one, so a run cut short still returns what it measured:

- ``encode``: 256-token documents (echo doubles them) over a sweep of token budgets: docs/s,
  tokens/s, TFLOP/s, MFU against the 989 TFLOP/s bf16 datasheet peak and against the matmul
  rate measured in the same run; the naive Hugging Face path (full logits, then pooling) at
  equal batch and at its own largest batch; a torch profiler table where a target is missed;
- ``query``: batch-1 echo queries of 16 and 64 tokens, p50/p99 against ``bound_ms`` (reading
  the weights once at the device-to-device copy bandwidth measured here), eagerly and replayed
  from a CUDA graph;
- ``train``: the shipped recipe (configs/echo-mistral-7b.toml: QLoRA NF4 with double
  quantisation, bf16 compute, r 16, alpha 8, the seven projections, echo, max length 256,
  gradient caching) through the real ``Trainer``: a warm-up step, at least 5 timed steps and one
  step at the paper's effective batch of 512 for peak memory;
- ``quantized``: bf16, ``8bit`` and ``4bit`` through ``SparseEncoder.from_pretrained``:
  docs/s, memory, and how far the vectors move (cosine, top-64 overlap) from bf16.

Each measurement is skipped, with the reason in the JSON, when its estimate would pass the
deadline (the later sections keep a share of it). ``--tiny`` runs every section on CPU with the
tiny Mistral; what CPU cannot do (bf16 without native support, bitsandbytes 8/4-bit, CUDA
graphs) is substituted and listed under ``substitutions``. Only the model side of splade-es is
imported (no engine clients), since the GPU machine has none.

    python benchmarks/gpu_suite.py --out OUT --deadline 470      # on the GPU
    python benchmarks/gpu_suite.py --out OUT --tiny              # on CPU, about a minute
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from memory import peak_rss_bytes, reset_peak_rss, rss_bytes

import splade_es
from splade_es.errors import ModelLoadError
from splade_es.io.atomic import atomic_text_file
from splade_es.model.encoder import SparseEncoder
from splade_es.model.inputs import Batch, Encoded, plan_batches
from splade_es.model.tiny import build_tiny_mistral, save_mistral_v3_tokenizer
from splade_es.trainer.loop import cpu_bf16_enabled

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "echo-mistral-7b.toml"
DATASHEET_TFLOPS = 989.0  # dense bf16, H100/H200 SXM
GIB = 2**30
QUERY_LENGTHS = (16, 64)
TOP_K_OVERLAP = 64
USABLE_80GB_GIB = 79.0  # an "80 GB" card shows 81559 MiB; keep a little for the CUDA context
SECTIONS = ("encode", "query", "train", "quantized")
# Share of the deadline each section keeps for itself: an earlier section may not eat it.
SHARES = {"encode": 0.15, "query": 0.04, "train": 0.40, "quantized": 0.22}
NF4_LEVELS = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
              -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
              0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
              0.7229568362236023, 1.0)


@dataclass(frozen=True)
class Plan:
    """How much of each measurement a run does: full size on the GPU, or tiny on CPU."""

    doc_tokens: int  # per document (echo feeds it twice); also the training max length
    budgets: tuple[int, ...]  # padded tokens per forward pass, the encode sweep
    reps: int  # timed batches per budget (after one warm-up batch)
    try_seconds: float  # the longest single try of the largest-batch search
    memory_budget_gib: float | None  # None: the card's memory (out-of-memory decides)
    query_reps: int
    train_batch: int  # effective batch of the timed steps (>= 2 chunks: gradient caching replays)
    train_chunk: int
    timed_steps: int
    peak_batch: int  # the paper's effective batch, for peak memory
    quant_docs: int
    quant_batch: int
    matmul_n: int
    copy_mib: int


FULL = Plan(doc_tokens=256, budgets=(16384, 32768, 65536, 131072), reps=2, try_seconds=15.0,
            memory_budget_gib=None, query_reps=100, train_batch=64, train_chunk=32, timed_steps=5,
            peak_batch=512, quant_docs=128, quant_batch=64, matmul_n=8192, copy_mib=4096)
# On CPU the tiny model's cost is its 32768-entry LM head: shorter documents keep the run short.
TINY = Plan(doc_tokens=64, budgets=(512, 1024, 2048), reps=2, try_seconds=1.0, memory_budget_gib=0.5, query_reps=10,
            train_batch=4, train_chunk=2, timed_steps=5, peak_batch=8, quant_docs=4, quant_batch=2,
            matmul_n=1024, copy_mib=256)


def mistral_7b_v03_config():
    """Mistral-7B-v0.3's architecture, as its config.json on the hub gives it (no download)."""
    from transformers import MistralConfig

    return MistralConfig(vocab_size=32768, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128, hidden_act="silu",
                         max_position_embeddings=32768, rms_norm_eps=1e-5, rope_theta=1e6, sliding_window=None,
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                         architectures=["MistralForCausalLM"])


def build_full_mistral(directory: Path, device: torch.device, config=None, seed: int = 0) -> Path:
    """Random bf16 weights in the 7B architecture (or ``config``), built on ``device`` and saved
    with the Mistral v3 tokenizer."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config or mistral_7b_v03_config(), dtype=torch.bfloat16)
    model.save_pretrained(directory)
    save_mistral_v3_tokenizer(directory)
    del model
    release_memory()
    return directory


# ------------------------------------------------------------------ arithmetic
@dataclass(frozen=True)
class FlopModel:
    """The issue's FLOP count for one forward pass, over non-padding tokens only:
    2 x layer matmul parameters x tokens, plus causal attention (QK^T and AV: 4 x layers x
    heads x head_dim per (query, key) pair, L(L+1)/2 pairs per text), plus the LM head
    (2 x hidden x vocab) over the pooled positions alone."""

    layer_params: int
    layers: int
    attention_width: int
    hidden: int
    vocab: int

    @classmethod
    def of(cls, encoder: SparseEncoder) -> FlopModel:
        config = encoder.backbone.lm.config
        layers = encoder.backbone.body.layers
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        params = sum(m.weight.numel() for m in layers.modules() if isinstance(m, torch.nn.Linear))
        return cls(params, len(layers), config.num_attention_heads * head_dim, config.hidden_size,
                   encoder.vocab_size)

    def forward(self, lengths: Sequence[int], pooled: int, causal: bool = True) -> float:
        pairs = sum(n * (n + 1) // 2 if causal else n * n for n in lengths)
        return float(2 * self.layer_params * sum(lengths) + 4 * self.layers * self.attention_width * pairs
                     + 2 * self.hidden * self.vocab * pooled)

    def batch(self, batch: Batch) -> float:
        return self.forward(batch.attention_mask.sum(1).tolist(), int(batch.pool_mask.sum()))


def cosine_and_overlap(reference: torch.Tensor, other: torch.Tensor, k: int = TOP_K_OVERLAP) -> dict[str, float]:
    """Per-row cosine and the share of the reference's top-k features also in the other's top-k."""
    cosine = F.cosine_similarity(reference.double(), other.double(), dim=1)
    top_ref, top_other = reference.topk(k, dim=1).indices, other.topk(k, dim=1).indices
    overlap = torch.tensor([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(top_ref, top_other)])
    return {"cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min()),
            f"top{k}_overlap_mean": float(overlap.mean()), f"top{k}_overlap_min": float(overlap.min())}


def round_weights(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """What weight-only quantisation does to a weight, for CPUs without bitsandbytes: 8 bits
    absmax per output row (LLM.int8's vector-wise scales), or 4-bit NF4 levels per block of
    64 with an absmax scale (QLoRA's data type; the scales are not double-quantised here)."""
    w = weight.float()
    if bits == 8:
        scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127
        return (torch.round(w / scale) * scale).to(weight.dtype)
    blocks = w.reshape(-1, 64)
    scale = blocks.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
    levels = torch.tensor(NF4_LEVELS)
    nearest = (blocks / scale).unsqueeze(-1).sub(levels).abs().argmin(-1)
    return (levels[nearest] * scale).reshape(weight.shape).to(weight.dtype)


# ------------------------------------------------------------------ clocks and memory
class Budget:
    """The run's deadline, and the part of it one section may use."""

    def __init__(self, seconds: float) -> None:
        self.total = seconds
        self.start = time.monotonic()
        self.end = self.start + seconds
        self.limit = self.end

    def enter(self, section: str) -> None:
        later = SECTIONS[SECTIONS.index(section) + 1:]
        self.limit = self.end - self.total * sum(SHARES[s] for s in later)

    def left(self) -> float:
        return self.limit - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class PeakMemory:
    """Peak memory while the block runs: the CUDA allocator's peak, or on CPU the kernel's
    peak resident set (torch's CPU allocations have no peak counter)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = self.peak = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            if not reset_peak_rss():
                raise RuntimeError("peak memory on CPU needs Linux /proc/self/clear_refs")
            self.base = rss_bytes()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak = peak_rss_bytes()

    @property
    def peak_gib(self) -> float:
        return self.peak / GIB

    @property
    def above_gib(self) -> float:
        """Peak above the level at entry (activations, not the weights already loaded)."""
        return max(self.peak - self.base, 0) / GIB


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc)


# ------------------------------------------------------------------ the run
class Suite:
    """State shared by the sections: where the model is, the ceilings, the JSON so far."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.plan = TINY if args.tiny else FULL
        self.device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit("gpu_suite: no CUDA GPU here (use --tiny to run every section on CPU)")
        self.cuda = self.device.type == "cuda"
        self.dtype = torch.bfloat16 if self.cuda or cpu_bf16_enabled("auto") else torch.float32
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.budget = Budget(args.deadline)
        self.scratch = Path(tempfile.mkdtemp(prefix="gpu-suite-", dir=args.scratch))
        self.model_dir = self.scratch / "model"
        self._encoder: SparseEncoder | None = None
        self.tokenizer = None  # set by setup(); outlives the encoder
        self._word_ids: list[int] | None = None
        self.result: dict[str, Any] = {
            "suite": "gpu_suite", "tiny": bool(args.tiny), "device": self._device_name(),
            "driver": self._driver(), "versions": _versions(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "host": platform.node(), "deadline_s": args.deadline, "dtype": str(self.dtype).removeprefix("torch."),
            "plan": asdict(self.plan), "substitutions": [], "skipped": [], "sections": {},
        }
        if args.tiny:
            # The tiny model's operations are too small to split; spinning threads on a shared CPU
            # made the whole run 10x slower (measured on a loaded 2-core machine).
            torch.set_num_threads(1)
        self.result["threads"] = torch.get_num_threads()
        if self.plan.doc_tokens != FULL.doc_tokens:
            self.substitute("document length", f"{self.plan.doc_tokens} tokens per document (and training max "
                            f"length) instead of {FULL.doc_tokens}: the tiny model's LM head dominates on CPU")
        if self.dtype != torch.bfloat16:
            self.substitute("dtype", "float32 instead of bf16: this CPU has no native bf16 (it would be emulated)")

    def _device_name(self) -> str:
        if self.cuda:
            return torch.cuda.get_device_name(self.device)
        return f"cpu ({platform.machine()}, {os.cpu_count()} cores)"

    def _driver(self) -> str | None:
        if not self.cuda:
            return None
        try:
            done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                  capture_output=True, text=True, timeout=30, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip().splitlines()[0] if done.stdout.strip() else None

    # ---------------------------------------------------------------- bookkeeping
    def log(self, message: str) -> None:
        print(f"[{self.budget.elapsed():6.1f}s] {message}", file=sys.stderr, flush=True)

    def substitute(self, what: str, how: str) -> None:
        self.result["substitutions"].append({"what": what, "how": how})

    def fits(self, section: str, what: str, estimate_s: float) -> bool:
        """Whether a measurement of about ``estimate_s`` fits the section's share; if not, say so."""
        left = self.budget.left()
        if estimate_s <= left:
            return True
        self.result["skipped"].append({"section": section, "what": what, "estimate_s": round(estimate_s, 1),
                                       "left_s": round(left, 1), "reason": "would pass the deadline"})
        self.log(f"skip {section}/{what}: ~{estimate_s:.0f}s needed, {left:.0f}s left")
        return False

    def save(self) -> None:
        self.result["elapsed_s"] = self.budget.elapsed()
        bad: list[str] = []
        clean = _finite(self.result, "", bad)
        clean["non_finite"] = bad
        with atomic_text_file(self.out / "gpu_suite.json") as handle:
            json.dump(clean, handle, indent=1)
            handle.write("\n")

    # ---------------------------------------------------------------- models and inputs
    def encoder(self) -> SparseEncoder:
        """The bf16 encoder through the real loading path (kept for encode and query)."""
        if self._encoder is None:
            self._encoder = SparseEncoder.from_pretrained(str(self.model_dir), device=str(self.device),
                                                          dtype=self.dtype)
        return self._encoder

    def drop_encoder(self) -> None:
        self._encoder = None
        release_memory()

    def random_ids(self, count: int, length: int, seed: int) -> list[list[int]]:
        """Random ordinary vocabulary pieces (no control, byte or special tokens)."""
        if self._word_ids is None:
            special = set(self.tokenizer.all_special_ids)
            pieces = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
            self._word_ids = [i for i, piece in enumerate(pieces)
                              if i not in special and piece and not piece.startswith("<")]
        rng = random.Random(seed)
        return [rng.choices(self._word_ids, k=length) for _ in range(count)]

    # ---------------------------------------------------------------- setup
    def setup(self) -> None:
        started = time.monotonic()
        if self.args.tiny:
            build_tiny_mistral(self.model_dir)
            model = "tiny random Mistral (2 layers, hidden 64, vocab 32768, real v3 tokenizer)"
        else:
            build_full_mistral(self.model_dir, self.device)
            model = "Mistral-7B-v0.3 architecture from its config, random bf16 weights"
        encoder = self.encoder()
        self.tokenizer = encoder.tokenizer
        params = sum(p.numel() for p in encoder.backbone.model.parameters())
        self.result["model"] = {"description": model, "parameters": params,
                                "layer_matmul_parameters": FlopModel.of(encoder).layer_params,
                                "build_and_save_s": time.monotonic() - started}
        self.result["ceilings"] = self.ceilings()
        self.log(f"model ready ({params / 1e9:.2f}B parameters); ceilings {self.result['ceilings']}")

    def ceilings(self) -> dict[str, Any]:
        """The two rates the figures are read against, measured here and now on random data."""
        n, device = self.plan.matmul_n, self.device
        a, b = (torch.randn(n, n, device=device, dtype=self.dtype) for _ in range(2))
        for _ in range(3):
            a @ b
        times = [timed(lambda: a @ b, device)[0] for _ in range(10)]
        matmul = 2 * n**3 / statistics.median(times) / 1e12
        del a, b
        src = torch.randn(self.plan.copy_mib * 2**20 // 4, device=device)
        dst = torch.empty_like(src)
        dst.copy_(src)
        copies = [timed(lambda: dst.copy_(src), device)[0] for _ in range(10)]
        bandwidth = 2 * src.numel() * 4 / statistics.median(copies)  # read + write
        del src, dst
        release_memory()
        return {"matmul_tflops": matmul, "matmul_n": n, "matmul_dtype": str(self.dtype).removeprefix("torch."),
                "copy_gb_per_s": bandwidth / 1e9, "copy_mib": self.plan.copy_mib,
                "datasheet_tflops": DATASHEET_TFLOPS}

    def prior_seconds(self, flops: float) -> float:
        """Before anything was timed: a forward pass at a third of the measured matmul rate."""
        return flops / (self.result["ceilings"]["matmul_tflops"] * 1e12 / 3)

    def cleanup(self) -> None:
        self.drop_encoder()
        shutil.rmtree(self.scratch, ignore_errors=True)


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version(), "cuda": torch.version.cuda,
                                    "splade-es": splade_es.__version__}
    for name in ("torch", "transformers", "peft", "bitsandbytes"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _finite(value: Any, path: str, bad: list[str]) -> Any:
    """A copy with non-finite floats replaced by None; their paths go to ``bad``."""
    if isinstance(value, dict):
        return {k: _finite(v, f"{path}.{k}" if path else str(k), bad) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v, f"{path}[{i}]", bad) for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        bad.append(path)
        return None
    return value


# ------------------------------------------------------------------ encode
def forward_rows(encoder: SparseEncoder, batches: Sequence[Batch], device: torch.device) -> list[dict[str, Any]]:
    """Time each batch (already on the device) through ``encoder.forward``, with its peak memory."""
    rows = []
    with torch.inference_mode():
        for batch in batches:
            with PeakMemory(device) as memory:
                seconds, _ = timed(lambda: encoder.forward(batch), device)
            rows.append({"seconds": seconds, "peak_mem_gb": memory.peak_gib, "activation_peak_gb": memory.above_gib})
    return rows


def fixed_batches(suite: Suite, encoded: Sequence[Encoded], size: int, count: int) -> list[Batch]:
    inputs = suite.encoder().inputs
    return [inputs.collate(encoded[i * size:(i + 1) * size]).to(suite.device) for i in range(count)]


@contextmanager
def naive_head(encoder: SparseEncoder) -> Iterator[None]:
    """The naive Hugging Face path: the model's own full logits for every position, then pooling."""
    saved = encoder.backbone.head
    encoder.backbone.head = None
    try:
        yield
    finally:
        encoder.backbone.head = saved


def run_batch_size(suite: Suite, encoded: Sequence[Encoded], size: int, warm_up: bool) -> dict[str, Any]:
    """One timed batch of ``size`` documents (after an untimed one with ``warm_up``); out of
    memory is a result."""
    try:
        batches = fixed_batches(suite, encoded, size, 2 if warm_up else 1)
        row = forward_rows(suite.encoder(), batches, suite.device)[-1]
        del batches
    except RuntimeError as exc:  # torch.OutOfMemoryError is one
        if not is_oom(exc):
            raise
        return {"batch": size, "oom": True}
    finally:
        release_memory()
    return {"batch": size, "oom": False, **row, "docs_per_s": size / row["seconds"]}


def largest_batch(suite: Suite, encoded_for: Callable[[int], Sequence[Encoded]], start: int,
                  seconds_per_doc: float, label: str, known: dict[str, Any] | None = None) -> dict[str, Any]:
    """Double the batch from ``start`` (``known``: a smaller batch already seen to fit) until it
    runs out of memory (or over the memory budget on CPU); tries longer than the plan allows, or
    past the deadline, stop the search and say which."""
    best = known
    size, limited_by = start, None
    while limited_by is None:
        estimate = 1.5 * size * seconds_per_doc
        if estimate > suite.plan.try_seconds:
            limited_by = f"try_seconds ({suite.plan.try_seconds:g} s per try)"
        elif not suite.fits("encode", f"largest batch {label} {size}", estimate):
            limited_by = "deadline"
        else:
            row = run_batch_size(suite, encoded_for(size), size, warm_up=False)
            budget = suite.plan.memory_budget_gib
            if row["oom"]:
                limited_by = "out of memory"
            elif budget is not None and row["activation_peak_gb"] > budget:
                limited_by = f"memory budget ({budget:g} GiB above the weights)"
            else:
                best, size = row, size * 2
                seconds_per_doc = row["seconds"] / row["batch"]
    return {"largest_batch": best["batch"] if best else 0, "limited_by": limited_by,
            "at_largest": best, "tried_next": size}


def profile_table(suite: Suite, fn: Callable[[], Any], rows: int = 15) -> dict[str, Any]:
    """Where the time of one call goes, by operator (device time on a GPU, CPU time on CPU)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if suite.cuda else [])
    with torch.inference_mode(), profile(activities=activities) as prof:
        fn()
        sync(suite.device)
    key = "self_device_time_total" if suite.cuda else "self_cpu_time_total"
    events = prof.key_averages()
    total = sum(getattr(e, key) for e in events) or 1.0
    top = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:rows]
    return {"sorted_by": key, "total_ms": total / 1000,
            "top": [{"op": e.key, "calls": e.count, "self_ms": getattr(e, key) / 1000,
                     "share": getattr(e, key) / total} for e in top],
            "table": events.table(sort_by=key, row_limit=rows)}


def section_encode(suite: Suite, out: dict[str, Any]) -> None:
    plan, device = suite.plan, suite.device
    encoder = suite.encoder()
    flops = FlopModel.of(encoder)
    length = len(encoder.inputs.encode_ids([[0] * plan.doc_tokens], is_query=False)[0])
    per_doc_flops = flops.forward([length], plan.doc_tokens)
    sizes = {budget: len(plan_batches([length] * (budget // length + 1), budget, 1 << 30)[0])
             for budget in plan.budgets}
    pool_size = max(sizes.values()) * (plan.reps + 1)
    docs = suite.random_ids(pool_size, plan.doc_tokens, seed=1)
    encoded = encoder.inputs.encode_ids(docs, is_query=False)
    ceilings = suite.result["ceilings"]
    out.update({"doc_tokens": plan.doc_tokens, "input_tokens_per_doc": length, "flops_per_doc": per_doc_flops,
                "flop_count": " ".join(FlopModel.__doc__.split()), "sweep": []})
    seconds_per_doc = suite.prior_seconds(per_doc_flops)
    for budget, size in sizes.items():
        if not suite.fits("encode", f"budget {budget}", seconds_per_doc * size * (plan.reps + 1)):
            continue
        try:
            batches = fixed_batches(suite, encoded, size, plan.reps + 1)
            rows = forward_rows(encoder, batches, device)[1:]
            batch_flops = flops.batch(batches[-1])  # every batch holds the same number of tokens
            del batches
        except RuntimeError as exc:  # torch.OutOfMemoryError is one
            if not is_oom(exc):
                raise
            out["sweep"].append({"token_budget": budget, "batch": size, "oom": True})
            release_memory()
            continue
        seconds = statistics.median(r["seconds"] for r in rows)
        tflops = batch_flops / seconds / 1e12
        seconds_per_doc = seconds / size
        out["sweep"].append({"token_budget": budget, "batch": size, "seconds_per_batch": seconds,
                             "docs_per_s": size / seconds, "tokens_per_s": size * length / seconds,
                             "tflops": tflops, "mfu": tflops / DATASHEET_TFLOPS,
                             "mfu_vs_measured_matmul": tflops / ceilings["matmul_tflops"],
                             "peak_mem_gb": max(r["peak_mem_gb"] for r in rows),
                             "activation_peak_gb": max(r["activation_peak_gb"] for r in rows)})
        suite.log(f"encode budget {budget}: batch {size}, {size / seconds:.1f} docs/s, {tflops:.1f} TFLOP/s")
        release_memory()
        suite.save()
    if not any("docs_per_s" in r for r in out["sweep"]):
        return
    best = max((r for r in out["sweep"] if "docs_per_s" in r), key=lambda r: r["docs_per_s"])
    out.update(best_token_budget=best["token_budget"], batch=best["batch"], docs_per_s=best["docs_per_s"],
               tokens_per_s=best["tokens_per_s"], tflops=best["tflops"], mfu=best["mfu"],
               mfu_vs_measured_matmul=best["mfu_vs_measured_matmul"], peak_mem_gb=best["peak_mem_gb"])
    suite.save()
    end_to_end(suite, out, docs[:2 * best["batch"]], best)
    compare_naive(suite, out, encoded, best)
    out["targets"] = {"mfu >= 0.5": out["mfu"] >= 0.5,
                      "speedup_vs_naive >= 1.0": out.get("speedup_vs_naive", 0.0) >= 1.0}
    if not all(out["targets"].values()) and suite.fits("encode", "profile", 3 * best["seconds_per_batch"]):
        batch = fixed_batches(suite, encoded, best["batch"], 1)[0]
        out["profile"] = profile_table(suite, lambda: encoder.forward(batch))
        del batch


def end_to_end(suite: Suite, out: dict[str, Any], docs: list[list[int]], best: dict[str, Any]) -> None:
    """``encode_documents`` on text (tokenising, batching, pruning to sparse vectors included)."""
    encoder = suite.encoder()
    if not suite.fits("encode", "end to end", 3 * best["seconds_per_batch"] * len(docs) / best["batch"]):
        return
    # Random pieces decoded to text re-tokenise to at least as many tokens; each copy is cut at 256.
    texts = encoder.tokenizer.batch_decode([ids + ids[:64] for ids in docs])
    encoder.batch_tokens, encoder.max_batch_size = best["token_budget"], 1 << 30
    encoder.encode_documents(texts[:best["batch"]], show_progress=False)
    seconds, vectors = timed(lambda: encoder.encode_documents(texts, show_progress=False), suite.device)
    out["end_to_end"] = {"docs": len(texts), "docs_per_s": len(texts) / seconds,
                         "features_per_doc": sum(len(v) for v in vectors) / len(vectors),
                         "what": "encode_documents on text: tokenise, batch, forward, prune to top-512"}


def compare_naive(suite: Suite, out: dict[str, Any], encoded: Sequence[Encoded], best: dict[str, Any]) -> None:
    """The naive path at the best batch and at its own largest; then splade-es's largest batch."""
    encoder, size = suite.encoder(), best["batch"]
    seconds_per_doc = best["seconds_per_batch"] / size
    measured = [r for r in out["sweep"] if "docs_per_s" in r]

    def encoded_for(batch: int) -> list[Encoded]:  # larger batches reuse documents: the cost is the same
        return [encoded[i % len(encoded)] for i in range(2 * batch)]

    with naive_head(encoder):
        if suite.fits("encode", "naive at equal batch", 3 * seconds_per_doc * size):
            naive = run_batch_size(suite, encoded, size, warm_up=True)
            out["naive"] = naive
            if not naive["oom"]:
                out["speedup_vs_naive"] = best["docs_per_s"] / naive["docs_per_s"]
                out["peak_memory_ratio"] = naive["activation_peak_gb"] / max(best["activation_peak_gb"], 1e-9)
        naive_largest = largest_batch(suite, encoded_for, min(r["batch"] for r in measured), seconds_per_doc,
                                      "naive")
    largest_row = max(measured, key=lambda r: r["batch"])
    ours_largest = largest_batch(suite, encoded_for, 2 * largest_row["batch"], seconds_per_doc, "splade_es",
                                 known={"batch": largest_row["batch"], "docs_per_s": largest_row["docs_per_s"],
                                        "peak_mem_gb": largest_row["peak_mem_gb"],
                                        "activation_peak_gb": largest_row["activation_peak_gb"]})
    out["largest_batch"] = {"splade_es": ours_largest, "naive": naive_largest}
    if naive_largest["at_largest"]:
        out["speedup_vs_naive_at_its_largest_batch"] = best["docs_per_s"] / naive_largest["at_largest"]["docs_per_s"]


# ------------------------------------------------------------------ query
def static_query(encoder: SparseEncoder, encoded: Encoded) -> Callable[[], torch.Tensor]:
    """``encoder.forward`` for one unpadded text whose pooled span is fixed ahead: no mask, no
    host synchronisation, fixed shapes, so a CUDA graph can capture it."""
    positions = [i for i, pooled in enumerate(encoded.pooled) if pooled]
    start, stop = positions[0], positions[-1] + 1
    if positions != list(range(start, stop)):
        raise ValueError("the pooled positions of a query must be one span")
    ids = torch.tensor([encoded.ids], device=encoder.device)
    special = encoder._special_ids.to(encoder.device)  # the ids encoder.forward zeroes
    projection = encoder.backbone.head.projection
    body = encoder.backbone.body

    def run() -> torch.Tensor:
        hidden = body(input_ids=ids, use_cache=False).last_hidden_state[0, start:stop]
        logits = F.linear(hidden, projection.weight, projection.bias)
        return torch.log1p(torch.relu(logits.amax(dim=0).float())).index_fill(0, special, 0.0)

    return run


def cuda_graph(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """Capture ``fn`` once; each call replays it (one launch instead of hundreds)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = fn()

    def replay() -> torch.Tensor:
        graph.replay()
        return output

    return replay


def latencies(fn: Callable[[], Any], device: torch.device, reps: int) -> dict[str, float]:
    for _ in range(3):
        fn()
    times = sorted(timed(fn, device)[0] * 1000 for _ in range(reps))
    return {"p50_ms": statistics.median(times), "p99_ms": times[min(len(times) - 1, math.ceil(0.99 * len(times)) - 1)],
            "mean_ms": statistics.fmean(times), "reps": reps}


def section_query(suite: Suite, out: dict[str, Any]) -> None:
    encoder, device = suite.encoder(), suite.device
    model = encoder.backbone.model
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    weight_bytes -= encoder.backbone.body.get_input_embeddings().weight.nbytes  # only the query's rows are read
    bandwidth = suite.result["ceilings"]["copy_gb_per_s"] * 1e9
    bound_ms = weight_bytes / bandwidth * 1000
    out.update({"weight_bytes_read": weight_bytes, "bound_ms": bound_ms,
                "bound": "weights once (input embeddings excluded: a query reads its own rows) "
                         "at the measured device-to-device copy bandwidth",
                "torch_compile": "not tried: its compile time would come out of the window; the CUDA "
                                 "graph removes the launch overhead that dominates batch 1",
                "lengths": {}})
    if not suite.cuda:
        suite.substitute("query CUDA graph", "not captured on CPU; the same static function runs eagerly")
    for n, ids in zip(QUERY_LENGTHS, (suite.random_ids(1, n, seed=2 + n)[0] for n in QUERY_LENGTHS)):
        if not suite.fits("query", f"{n} tokens", 3 * suite.plan.query_reps * 4 * bound_ms / 1000 + 5):
            continue
        encoded = encoder.inputs.encode_ids([ids], is_query=True)[0]
        batch = encoder.inputs.collate([encoded]).to(device)
        row: dict[str, Any] = {"input_tokens": len(encoded), "methods": {}}
        with torch.inference_mode():
            reference = encoder.forward(batch)[0]
            row["methods"]["eager"] = latencies(lambda: encoder.forward(batch), device, suite.plan.query_reps)
            fast, method = static_query(encoder, encoded), "static_eager"
            if suite.cuda:
                try:
                    fast, method = cuda_graph(fast), "cuda_graph"
                except RuntimeError as exc:  # a capture that fails leaves the eager figures standing
                    row["cuda_graph_error"] = str(exc)[:300]
            row["methods"][method] = latencies(fast, device, suite.plan.query_reps)
            got = fast()
            row["static_cosine_vs_forward"] = float(F.cosine_similarity(got.double(), reference.double(), dim=0))
            row["static_max_abs_diff"] = float((got - reference).abs().max())
        best = min(row["methods"].items(), key=lambda item: item[1]["p50_ms"])
        row.update(best=best[0], p50_ms=best[1]["p50_ms"], p99_ms=best[1]["p99_ms"],
                   p50_over_bound=best[1]["p50_ms"] / bound_ms)
        out["lengths"][str(n)] = row
        suite.log(f"query {n} tokens: p50 {row['p50_ms']:.2f} ms ({best[0]}), bound {bound_ms:.2f} ms")
    if out["lengths"]:
        worst = max(out["lengths"].values(), key=lambda r: r["p50_ms"])
        out.update(p50_ms=worst["p50_ms"], p99_ms=worst["p99_ms"], p50_over_bound=worst["p50_ms"] / bound_ms,
                   targets={"p50 <= 2 x bound": worst["p50_ms"] <= 2 * bound_ms},
                   p50_basis="the slower of the query lengths, each at its fastest method")


# ------------------------------------------------------------------ train
def write_pairs(suite: Suite, path: Path, count: int) -> tuple[list[str], list[str]]:
    """Synthetic (query, document) pairs: random pieces decoded to text, documents long enough
    that each copy is cut at the training max length, queries of about 24 tokens."""
    tokenizer = suite.tokenizer
    queries = tokenizer.batch_decode(suite.random_ids(count, 24, seed=5))
    docs = tokenizer.batch_decode(suite.random_ids(count, suite.plan.doc_tokens + 64, seed=6))
    with path.open("w", encoding="utf-8") as handle:
        for query, doc in zip(queries, docs):
            handle.write(json.dumps([query, doc]) + "\n")
    return queries, docs


def step_seconds(log: Path, batch: int) -> list[float]:
    """Each logged optimizer step's wall time at ``batch``, from the trainer's own log."""
    with log.open(encoding="utf-8") as handle:
        return [batch / float(row["examples_per_s"]) for row in csv.DictReader(handle)]


def section_train(suite: Suite, out: dict[str, Any]) -> None:
    from splade_es.trainer.config import TrainConfig
    from splade_es.trainer.loop import Trainer

    plan = suite.plan
    quantization = "4bit" if suite.cuda else "none"
    if not suite.cuda:
        suite.substitute("train quantization", "LoRA on the float32 base: bitsandbytes NF4 needs CUDA")
    pairs = suite.scratch / "pairs.jsonl"
    queries, docs = write_pairs(suite, pairs, max(plan.peak_batch, plan.train_batch))
    suite.drop_encoder()  # the trainer loads its own (4-bit) model
    overrides = [f'model.backbone="{suite.model_dir}"', f'model.quantization="{quantization}"',
                 f'data.datasets=[{{path = "{pairs}"}}]', f"batch.size={plan.train_batch}",
                 f"batch.chunk_size={plan.train_chunk}", f"model.max_length={plan.doc_tokens}",
                 f'run.output_dir="{suite.scratch / "train"}"', f'run.device="{suite.device}"',
                 f'data.cache_dir="{suite.scratch / "data-cache"}"',  # the GPU machine has no platformdirs
                 "run.tensorboard=false", "run.log_every=1",
                 "run.save_every=1000000", "optim.max_steps=1000000"]
    config = TrainConfig.load(RECIPE, overrides)
    started = time.monotonic()
    trainer = Trainer(config, show_progress=False)
    out.update({
        "recipe": RECIPE.relative_to(ROOT).as_posix(), "overrides": overrides[1:],
        "quantization": "4-bit NF4, double quantisation, bf16 compute" if suite.cuda else "none",
        "lora": {"r": config.lora.r, "alpha": config.lora.alpha, "dropout": config.lora.dropout,
                 "target_modules": config.lora.target_modules},
        "mode": config.model.mode, "max_length": config.model.max_length,
        "gradient_checkpointing": config.model.gradient_checkpointing, "gradient_cache_chunk": plan.train_chunk,
        "effective_batch": plan.train_batch, "load_s": time.monotonic() - started,
        "trainable_parameters": sum(p.numel() for p in trainer.parameters)})
    inputs = trainer.encoder.inputs  # the training max length cuts each copy
    tokens_per_example = statistics.fmean(len(q) + len(d) for q, d in zip(inputs.encode(queries, True),
                                                                           inputs.encode(docs, False)))
    out["tokens_per_example"] = tokens_per_example
    with PeakMemory(suite.device) as warm_memory:
        result = trainer.train(stop_at=1)
    warm = step_seconds(result.log, plan.train_batch)[-1]
    out["warmup_step_s"] = warm
    steps = plan.timed_steps
    if suite.fits("train", f"{steps} timed steps", 1.2 * steps * warm):
        with PeakMemory(suite.device) as memory:
            result = trainer.train(stop_at=1 + steps)
        per_step = step_seconds(result.log, plan.train_batch)[1:]
        s_per_step = statistics.median(per_step)
        out.update(timed_steps=len(per_step), step_seconds=per_step, s_per_step=s_per_step,
                   examples_per_s=plan.train_batch / s_per_step,
                   tokens_per_s=plan.train_batch * tokens_per_example / s_per_step,
                   peak_mem_gb=memory.peak_gib, estimated_s_per_step_at_peak_batch=s_per_step * plan.peak_batch
                   / plan.train_batch)
        suite.log(f"train: {s_per_step:.2f} s/step at batch {plan.train_batch}")
    else:
        out.update(timed_steps=0, peak_mem_gb=warm_memory.peak_gib)
    suite.save()
    estimate = out.get("s_per_step", warm) * plan.peak_batch / plan.train_batch
    if suite.fits("train", f"one step at batch {plan.peak_batch}", 1.2 * estimate):
        trainer.config.batch.size = trainer.sampler.batch_size = plan.peak_batch
        with PeakMemory(suite.device) as memory:
            result = trainer.train(stop_at=trainer.step + 1)
        reserved = torch.cuda.max_memory_reserved(suite.device) / GIB if suite.cuda else memory.peak_gib
        out["peak_batch_step"] = {"batch": plan.peak_batch, "seconds": step_seconds(result.log, plan.peak_batch)[-1],
                                  "peak_mem_gb": memory.peak_gib, "peak_reserved_gb": reserved}
        out["peak_mem_gb"] = memory.peak_gib
        out["fits_80gb"] = reserved <= USABLE_80GB_GIB
        out["fits_80gb_basis"] = f"allocator reserve of the batch-{plan.peak_batch} step <= {USABLE_80GB_GIB} GiB"
    elif suite.cuda and "s_per_step" in out:  # gradient caching: the chunk, not the batch, sets the peak
        reserved = torch.cuda.max_memory_reserved(suite.device) / GIB
        out["fits_80gb"] = reserved <= USABLE_80GB_GIB
        out["fits_80gb_basis"] = (f"allocator reserve of the timed steps (same chunk of {plan.train_chunk} as a "
                                  f"batch-{plan.peak_batch} step) <= {USABLE_80GB_GIB} GiB")
    if not suite.cuda:
        out["fits_80gb_basis"] = "CPU run: the figure that decides it comes from the GPU run"
        out.pop("fits_80gb", None)
    del trainer
    release_memory()


# ------------------------------------------------------------------ quantized
def section_quantized(suite: Suite, out: dict[str, Any]) -> None:
    plan, device = suite.plan, suite.device
    docs = suite.random_ids(plan.quant_docs, plan.doc_tokens, seed=7)
    suite.drop_encoder()
    out.update(docs=plan.quant_docs, batch=plan.quant_batch)
    reference: torch.Tensor | None = None
    estimate = 45.0 if suite.cuda else 5.0  # a load (and a few batches), until one was timed
    for name in ("bf16", "8bit", "4bit"):
        if not suite.fits("quantized", name, estimate):
            continue
        started = time.monotonic()
        row: dict[str, Any] = {}
        try:
            encoder = SparseEncoder.from_pretrained(str(suite.model_dir), device=str(device), dtype=suite.dtype,
                                                    quantization=None if name == "bf16" else name)
        except ModelLoadError as exc:
            if suite.cuda:
                raise
            encoder = SparseEncoder.from_pretrained(str(suite.model_dir), device=str(device), dtype=suite.dtype)
            with torch.no_grad():
                for module in encoder.backbone.body.layers.modules():
                    if isinstance(module, torch.nn.Linear):
                        module.weight.copy_(round_weights(module.weight, int(name[0])))
            row["real_path_error"] = str(exc)
            how = "per-row int8 absmax" if name == "8bit" else "NF4 levels per block of 64, absmax scales"
            suite.substitute(f"quantized {name}", f"weights rounded in place ({how}): the real path said: {exc}")
        row["load_s"] = time.monotonic() - started
        row["weights_gb"] = (torch.cuda.memory_allocated(device) if suite.cuda else
                             sum(p.numel() * p.element_size() for p in encoder.backbone.model.parameters())) / GIB
        encoded = encoder.inputs.encode_ids(docs, is_query=False)
        inputs = encoder.inputs
        batches = [inputs.collate(encoded[i:i + plan.quant_batch]).to(device)
                   for i in range(0, len(encoded), plan.quant_batch)]
        with torch.inference_mode():
            encoder.forward(batches[0])
            with PeakMemory(device) as memory:
                seconds, pooled = timed(lambda: [encoder.forward(b).float().cpu() for b in batches], device)
        vectors = torch.cat(pooled)
        row.update(docs_per_s=len(docs) / seconds, peak_mem_gb=memory.peak_gib,
                   activation_peak_gb=memory.above_gib)
        estimate = 1.2 * (time.monotonic() - started)  # the next format: about as long again
        if reference is None and name == "bf16":
            reference = vectors
        elif reference is not None:
            row["drift_vs_bf16"] = cosine_and_overlap(reference, vectors)
        out[name] = row
        suite.log(f"quantized {name}: {row['docs_per_s']:.1f} docs/s, weights {row['weights_gb']:.2f} GiB")
        del encoder, batches
        release_memory()
        suite.save()


# ------------------------------------------------------------------ main
# Each section fills its dict in place: what it measured before a failure stays in the JSON.
RUNNERS: dict[str, Callable[[Suite, dict[str, Any]], None]] = {
    "encode": section_encode, "query": section_query, "train": section_train, "quantized": section_quantized}


def attempt(suite: Suite, name: str, fn: Callable[[], Any]) -> bool:
    """Run one part; a failure is recorded (status and traceback) instead of ending the run."""
    started = time.monotonic()
    try:
        fn()
        suite.result["sections"][name] = "done"
    except Exception as exc:  # noqa: BLE001 - one failed section must not lose the others
        suite.result["sections"][name] = f"failed: {type(exc).__name__}: {exc}"[:500]
        suite.result.setdefault("errors", {})[name] = traceback.format_exc()[-4000:]
        suite.log(f"{name} failed: {exc}")
    release_memory()  # after the handler: also what a failed part's frames held
    suite.result.setdefault("section_seconds", {})[name] = time.monotonic() - started
    suite.save()
    return suite.result["sections"][name] == "done"


def run(args: argparse.Namespace) -> int:
    suite = Suite(args)
    try:
        ready = attempt(suite, "setup", suite.setup)
        for name in SECTIONS:
            suite.budget.enter(name)
            if not ready:
                suite.result["sections"][name] = "skipped: setup failed"
            elif suite.budget.left() <= 0:
                suite.result["sections"][name] = "skipped: no time left in its share of the deadline"
                suite.result["skipped"].append({"section": name, "what": "all", "reason": "would pass the deadline"})
            else:
                suite.log(f"section {name} ({suite.budget.left():.0f}s in its share)")
                out = suite.result.setdefault(name, {})
                attempt(suite, name, lambda: RUNNERS[name](suite, out))
    finally:
        suite.cleanup()
    suite.save()
    print_summary(suite.result)
    return 0 if all(not status.startswith("failed") for status in suite.result["sections"].values()) else 1


def print_summary(result: dict[str, Any]) -> None:
    encode, query, train, quantized = (result.get(s, {}) for s in SECTIONS)

    def show(value: Any) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    lines = [f"device {result['device']}  ({result['elapsed_s']:.0f}s of {result['deadline_s']:g}s)",
             f"encode    mfu {show(encode.get('mfu'))}  speedup_vs_naive {show(encode.get('speedup_vs_naive'))}  "
             f"docs/s {show(encode.get('docs_per_s'))}",
             f"query     p50 {show(query.get('p50_ms'))} ms  bound {show(query.get('bound_ms'))} ms",
             f"train     {show(train.get('s_per_step'))} s/step  timed_steps {show(train.get('timed_steps'))}  "
             f"peak {show(train.get('peak_mem_gb'))} GiB",
             "quantized " + "  ".join(f"{k} {show(quantized[k].get('docs_per_s'))} docs/s"
                                      for k in ("bf16", "8bit", "4bit") if k in quantized),
             f"sections  {result['sections']}",
             f"skipped   {len(result['skipped'])}  substitutions {len(result['substitutions'])}"]
    print("\n".join(lines))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="directory for gpu_suite.json")
    parser.add_argument("--tiny", action="store_true", help="the tiny Mistral on CPU: every section, about a minute")
    parser.add_argument("--deadline", type=float, default=470.0,
                        help="seconds for the whole run; measurements that would pass it are skipped (default 470)")
    parser.add_argument("--device", help="default: cuda, or cpu with --tiny")
    parser.add_argument("--scratch", help="where the random model is saved (default: the system temp directory)")
    args = parser.parse_args(argv)
    if args.deadline <= 0:
        parser.error("--deadline must be positive")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
