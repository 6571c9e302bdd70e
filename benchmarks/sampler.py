"""Training data at the paper's scale: sampling time per step and resident memory.

Generates a gooaq-sized dataset (``--lines``, 3M by default: short question, longer answer, as
``[anchor, positive]`` jsonl.gz lines), then in a fresh subprocess per implementation loads it
and draws ``--steps`` batches of ``--batch-size`` with the mixture sampler, as rank 0 of
``--world-size`` ranks. ``--module FILE`` measures another version of
``splade_es/trainer/data.py`` (the one before memory-mapping:
``git show f75eda0:splade_es/trainer/data.py > /tmp/data_before.py``). Memory is split into
anonymous (private to the rank) and file-backed (the page cache of the memory-mapped cache,
shared by every rank of a machine) resident bytes.

    python benchmarks/sampler.py --data /tmp/gooaq-3m.jsonl.gz --module /tmp/data_before.py --steps 20
    python benchmarks/sampler.py --data /tmp/gooaq-3m.jsonl.gz --json-out benchmarks/results/sampler_3m.json
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import inspect
import json
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from memory import status_bytes

WORDS = ("flow boundary layer wing lift drag pressure heat transfer shock wave mach number flat plate supersonic "
         "subsonic laminar turbulent transition velocity surface theory results body aircraft panel buckling stress "
         "cylinder cone jet nozzle temperature what how why when does the of and a to in is for on with").split()


def generate(path: Path, lines: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as handle:
        for _ in range(lines):
            question = " ".join(rng.choices(WORDS, k=rng.randint(5, 12))) + "?"
            answer = " ".join(rng.choices(WORDS, k=rng.randint(20, 60))) + "."
            handle.write(json.dumps([question, answer]) + "\n")


def _module(path: str | None):
    if path is None:
        from splade_es.trainer import data

        return data
    spec = importlib.util.spec_from_file_location("data_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def worker(args: argparse.Namespace) -> dict:
    """Load (twice where there is a cache: building it, then opening it), then sample."""
    from splade_es.trainer.config import DatasetConfig

    data = _module(args.module)
    spec = DatasetConfig(name="gooaq", path=args.data)
    cached = "cache_dir" in inspect.signature(data.load_dataset).parameters
    loads = []
    with tempfile.TemporaryDirectory() as cache:
        for _ in range(2 if cached else 1):
            started = time.perf_counter()
            dataset = data.load_dataset(spec, "count", 0, **({"cache_dir": cache} if cached else {}))
            loads.append(time.perf_counter() - started)
        anon_loaded, file_loaded = status_bytes("RssAnon"), status_bytes("RssFile")
        sampler = data.MixtureSampler([dataset], [1.0], args.batch_size, seed=0)
        times = []
        for step in range(args.steps):
            started = time.perf_counter()
            _, batch = sampler.batch(step, 0, args.world_size)
            times.append(time.perf_counter() - started)
        assert len(batch) == args.batch_size // args.world_size
        return {"module": args.module or "splade_es.trainer.data", "examples": len(dataset.examples),
                "load_s": [round(t, 2) for t in loads], "step_ms_median": round(1000 * statistics.median(times), 3),
                "step_ms_first": round(1000 * times[0], 3), "steps": args.steps,
                "rss_anon_mib_after_load": round(anon_loaded / 2**20, 1),
                "rss_file_mib_after_load": round(file_loaded / 2**20, 1),
                "rss_anon_mib_after_sampling": round(status_bytes("RssAnon") / 2**20, 1),
                "rss_file_mib_after_sampling": round(status_bytes("RssFile") / 2**20, 1),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a jsonl.gz file; generated there first when missing")
    parser.add_argument("--lines", type=int, default=3_000_000)
    parser.add_argument("--module", help="another data.py to measure (default: this checkout's)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--world-size", type=int, default=4)
    parser.add_argument("--json-out")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    path = Path(args.data)
    if not path.exists():
        started = time.perf_counter()
        generate(path, args.lines)
        print(f"generated {args.lines} lines in {time.perf_counter() - started:.0f} s: {path}", file=sys.stderr)
    command = [sys.executable, __file__, "--worker", "--data", str(path), "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--world-size", str(args.world_size)]
    if args.module:
        command += ["--module", args.module]
    result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    result.update(batch_size=args.batch_size, world_size=args.world_size, file_mib=round(path.stat().st_size / 2**20, 1),
                  machine=f"{platform.machine()}, {platform.processor() or platform.node()}",
                  python=platform.python_version(), date=time.strftime("%Y-%m-%d"))
    print(json.dumps(result, indent=1))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
