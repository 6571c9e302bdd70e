"""Training step time: the sparse max-projection pooling versus autograd through full logits.

Runs ``splade-es train`` steps of a config in fresh subprocesses, one per setting:

- ``sparse``: the trainer as shipped (LM head applied chunk by chunk, per-text maxima only,
  gradient scattered through each maximum's position);
- ``full``: the encoder's fallback (``Backbone.head = None``): the model's own forward
  returns ``[batch, seq, vocab]`` logits and autograd keeps them for the backward pass;

each in float32 and, where the device does bf16 natively, with bf16 autocast. Time per step
is the median over the steps after the warm-up, from the trainer's own log; memory is the
peak growth of RSS (CPU) or of allocated memory (GPU) over the loaded model.

    python benchmarks/train_step.py --config configs/quickstart-minilm.toml \\
        --override 'model.backbone="start"' --override 'data.datasets=[{path = "/abs/pairs.jsonl"}]'

Prints a table and one JSON object (``--json-out`` writes it to a file).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from memory import rss_bytes


def worker(args: argparse.Namespace) -> dict:
    """One setting: build the trainer, run warm-up + timed steps, read the step times back."""
    import torch

    from splade_es.trainer.config import TrainConfig
    from splade_es.trainer.loop import Trainer

    with tempfile.TemporaryDirectory() as scratch:
        overrides = [*args.override, f'run.output_dir="{scratch}"', "run.tensorboard=false", "run.log_every=1",
                     f"run.save_every={args.warmup + args.steps + 1}", f"optim.max_steps={args.warmup + args.steps}",
                     f"run.cpu_bf16={str(args.bf16).lower()}", f"run.bf16={str(args.bf16).lower()}"]
        config = TrainConfig.load(args.config, overrides)
        trainer = Trainer(config, show_progress=False)
        if args.impl == "full":
            trainer.encoder.backbone.head = None
        cuda = trainer.device.type == "cuda"
        base = torch.cuda.memory_allocated() if cuda else rss_bytes()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            result = trainer.train()
        except torch.OutOfMemoryError:
            return {"impl": args.impl, "bf16": args.bf16, "oom": True}
        peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        with open(result.log, encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    timed = [config.batch.size / float(row["examples_per_s"]) for row in rows[args.warmup:]]
    step = statistics.median(timed)
    return {"impl": args.impl, "bf16": args.bf16, "oom": False, "device": str(trainer.device),
            "batch": config.batch.size, "steps": len(timed), "s_per_step": step,
            "examples_per_s": config.batch.size / step, "peak_mem_mb": max(peak - base, 0) / 2**20,
            "final_loss": float(rows[-1]["loss"])}


def measure(args: argparse.Namespace, impl: str, bf16: bool) -> dict:
    command = [sys.executable, __file__, "--worker", "--impl", impl, "--config", args.config,
               "--steps", str(args.steps), "--warmup", str(args.warmup)]
    command += [f"--override={override}" for override in args.override]
    if bf16:
        command.append("--bf16")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker failed ({impl}, bf16={bf16}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bf16_is_native() -> bool:
    import torch

    from splade_es.trainer.loop import cpu_bf16_enabled

    return torch.cuda.is_available() or cpu_bf16_enabled("auto")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a splade-es train TOML config")
    parser.add_argument("--override", action="append", default=[], help="section.key=value, as for splade-es train")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--impls", default="sparse,full", help="comma-separated: sparse, full")
    parser.add_argument("--json-out", help="also write the result object to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=["sparse", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    precisions = [False, True] if bf16_is_native() else [False]
    runs = [measure(args, impl, bf16) for bf16 in precisions for impl in args.impls.split(",")]
    result = {"config": args.config, "overrides": args.override, "host": platform.node(),
              "python": platform.python_version(), "runs": runs}
    print(f"{'impl':<8} {'bf16':<5} {'s/step':>8} {'examples/s':>11} {'peak MB':>9}")
    for run in runs:
        if run["oom"]:
            print(f"{run['impl']:<8} {run['bf16']!s:<5} {'OOM':>8}")
            continue
        print(f"{run['impl']:<8} {run['bf16']!s:<5} {run['s_per_step']:8.2f} {run['examples_per_s']:11.2f} "
              f"{run['peak_mem_mb']:9.0f}")
    print(json.dumps(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
