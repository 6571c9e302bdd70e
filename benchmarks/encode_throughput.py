"""encode_documents versus a naive implementation that materialises every logit.

Both run the same tokenisation, the same length-sorted batches of equal size
and the same pruning; only pooling differs. The naive path is the encoder's own
fallback (``Backbone.head = None``): full ``[batch, seq, vocab]`` logits, then
mask and max. Each measurement runs in a fresh subprocess so its peak memory
is its own (CPU: peak RSS growth during encoding; GPU: peak allocated bytes).

    python benchmarks/encode_throughput.py                       # tiny random Mistral, Cranfield docs
    python benchmarks/encode_throughput.py --model DIR --device cuda --docs 2048 --batch 32

Prints a table and one JSON object (``--json-out`` writes it to a file).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from memory import rss_bytes

from splade_es.model.tiny import build_tiny_mistral

ROOT = Path(__file__).resolve().parents[1]
CRANFIELD = ROOT.parent / "shared" / "data" / "cranfield" / "corpus.jsonl"


def load_texts(n: int) -> list[str]:
    if CRANFIELD.is_file():
        with CRANFIELD.open(encoding="utf-8") as handle:
            texts = [json.loads(line)["text"] for line in handle]
    else:
        texts = [("supersonic flow over a slender cone with heat transfer " * (1 + i % 8)).strip() for i in range(n)]
    return [texts[i % len(texts)] for i in range(n)]


def worker(args: argparse.Namespace) -> dict:
    """One measurement: load, warm up, time ``--docs`` documents at batch ``--batch``."""
    import torch

    from splade_es.model import SparseEncoder

    encoder = SparseEncoder.from_pretrained(args.model, device=args.device)
    encoder.batch_tokens = 1 << 40  # batches are fixed by document count alone
    encoder.max_batch_size = args.batch
    if args.impl == "naive":
        encoder.backbone.head = None
    texts = load_texts(args.docs)
    cuda = encoder.device.type == "cuda"
    # Baseline before the warm-up: freed CPU memory can stay in RSS afterwards.
    base = torch.cuda.memory_allocated() if cuda else rss_bytes()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    encoder.encode_documents(texts[: args.batch], show_progress=False)  # warm-up (same batch size)
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    try:
        vectors = encoder.encode_documents(texts, show_progress=False)
    except torch.OutOfMemoryError:
        return {"impl": args.impl, "batch": args.batch, "oom": True}
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "impl": args.impl,
        "batch": args.batch,
        "docs": len(texts),
        "seconds": seconds,
        "docs_per_s": len(texts) / seconds,
        "peak_mem_mb": max(peak - base, 0) / 2**20,
        "mean_features": sum(len(v) for v in vectors) / len(vectors),
        "device": str(encoder.device),
        "oom": False,
    }


def measure(model: str, impl: str, batch: int, docs: int, device: str | None) -> dict:
    command = [sys.executable, __file__, "--worker", "--model", model, "--impl", impl, "--batch", str(batch), "--docs", str(docs)]
    if device:
        command += ["--device", device]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        if "OutOfMemory" in done.stderr or "out of memory" in done.stderr:
            return {"impl": impl, "batch": batch, "oom": True}
        raise RuntimeError(f"worker failed ({impl}, batch {batch}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def largest_batch(model: str, impl: str, device: str | None, budget_mb: float, cap: int) -> int:
    """Largest power-of-two batch whose peak memory stays within the budget (and does not OOM)."""
    best, batch = 0, 1
    while batch <= cap:
        result = measure(model, impl, batch, batch, device)
        if result["oom"] or result["peak_mem_mb"] > budget_mb:
            break
        best, batch = batch, batch * 2
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory (default: build a tiny random Mistral)")
    parser.add_argument("--device", help="cpu / cuda (default: cuda when available)")
    parser.add_argument("--docs", type=int, default=256, help="documents per throughput run")
    parser.add_argument("--batch", type=int, default=16, help="documents per batch, equal for both implementations")
    parser.add_argument("--budget-mb", type=float, default=2048, help="memory budget for the largest-batch search")
    parser.add_argument("--max-batch", type=int, default=1024, help="stop the largest-batch search here")
    parser.add_argument("--json-out", help="also write the result object to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=["splade_es", "naive"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or str(build_tiny_mistral(Path(scratch) / "tiny-mistral"))
        runs = {impl: measure(model, impl, args.batch, args.docs, args.device) for impl in ("splade_es", "naive")}
        largest = {impl: largest_batch(model, impl, args.device, args.budget_mb, args.max_batch) for impl in runs}
    ours, naive = runs["splade_es"], runs["naive"]
    result = {
        "model": args.model or "tiny random Mistral (2 layers, hidden 64, vocab 32768), echo mode",
        "device": ours["device"],
        "host": platform.node(),
        "docs": args.docs,
        "batch": args.batch,
        "runs": runs,
        "throughput_ratio": ours["docs_per_s"] / naive["docs_per_s"],
        "peak_memory_ratio": naive["peak_mem_mb"] / max(ours["peak_mem_mb"], 1e-9),
        "largest_batch_within_budget": largest,
        "budget_mb": args.budget_mb,
    }
    print(f"{'impl':<10} {'docs/s':>9} {'peak MB':>9} {'largest batch':>14}")
    for impl, run in runs.items():
        print(f"{impl:<10} {run['docs_per_s']:9.2f} {run['peak_mem_mb']:9.1f} {largest[impl]:>14}")
    print(f"throughput ratio (splade_es / naive): {result['throughput_ratio']:.2f}x")
    print(f"peak memory ratio (naive / splade_es): {result['peak_memory_ratio']:.1f}x")
    print(json.dumps(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
