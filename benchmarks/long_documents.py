"""Long documents: cut at the model's maximum length versus encoded in overlapping windows.

One model, one BEIR dataset, two indexes on the local engine that differ only in how a document
longer than the model's ``max_length`` becomes a vector:

- **cut** (the default): the text is truncated at ``max_length`` tokens;
- **windows** (``--chunk-tokens N --chunk-overlap M``): windows of N tokens, neighbours sharing M,
  max-pooled into one vector, the same max the pooling takes over tokens.

The script reports how many documents exceed the limit, the encode time of both (in process,
model loaded once, same batch size), the number of windows, and nDCG@10 / Recall@100 of each index
with the same query vectors (encoded once), with the per-query record of windows against cut
and a paired randomisation test (``splade-es compare``'s code).

    python benchmarks/long_documents.py --dataset ../shared/data/scifact --model ./bundle \\
        --chunk-overlap 64 --work /tmp/long-docs --out benchmarks/results/long_documents_scifact.json

``--limit N`` keeps the first N documents (and the queries judged on them): a quick run for checking
the script, e.g. with a tiny model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from splade_cli import run

ROOT = Path(__file__).resolve().parents[1]



def subset(dataset: Path, limit: int, out: Path) -> Path:
    """The first ``limit`` documents, every query judged on them, and those judgments."""
    out.mkdir(parents=True, exist_ok=True)
    lines = (dataset / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:limit]
    ids = {json.loads(line)["_id"] for line in lines}
    (out / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    header, *rows = (dataset / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    kept = [row for row in rows if row.split("\t")[1] in ids]
    (out / "qrels").mkdir(exist_ok=True)
    (out / "qrels" / "test.tsv").write_text("\n".join([header, *kept]) + "\n", encoding="utf-8")
    judged = {row.split("\t")[0] for row in kept}
    queries = [line for line in (dataset / "queries.jsonl").read_text(encoding="utf-8").splitlines()
               if line.strip() and json.loads(line)["_id"] in judged]
    (out / "queries.jsonl").write_text("\n".join(queries) + "\n", encoding="utf-8")
    return out


def encode(encoder, documents, windows: dict[str, int], batch: int, path: Path) -> dict[str, float]:
    """Encode every document (timed), write ``{"id", "features"}`` lines."""
    texts = [d.text for d in documents]
    started = time.perf_counter()
    vectors = []
    for begin in range(0, len(texts), batch):
        vectors += encoder.encode_documents(texts[begin:begin + batch], show_progress=False, **windows)
    seconds = time.perf_counter() - started
    with path.open("w", encoding="utf-8") as handle:
        for document, vector in zip(documents, vectors):
            handle.write(json.dumps({"id": document.id, "features": vector.to_features()}) + "\n")
    lengths = [len(v) for v in vectors]
    return {"seconds": round(seconds, 2), "docs_per_s": round(len(texts) / seconds, 2),
            "features_per_doc_mean": round(float(np.mean(lengths)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--chunk-tokens", type=int,
                        help="Window size (default: the text tokens one input holds, max_length less specials).")
    parser.add_argument("--chunk-overlap", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32, help="Documents per encode call.")
    parser.add_argument("--limit", type=int, help="Only the first N documents (a quick check).")
    parser.add_argument("--work", type=Path, default=Path("long-docs"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "long_documents.json")
    args = parser.parse_args()

    from splade_es.io.corpus import read_corpus, resolve_corpus
    from splade_es.model import SparseEncoder
    from splade_es.toolkit.eval.compare import compare

    if (args.work / "engine").exists():
        shutil.rmtree(args.work / "engine")  # both indexes are built by this run
    args.work.mkdir(parents=True, exist_ok=True)
    dataset = subset(args.dataset, args.limit, args.work / "data") if args.limit else args.dataset.resolve()
    documents = list(read_corpus(resolve_corpus(dataset, None, None)))
    encoder = SparseEncoder.from_pretrained(args.model, device="cpu")
    max_length, room = encoder.config.max_length, encoder.inputs.window_room()
    size = args.chunk_tokens or room
    windows = {"chunk_tokens": size, "chunk_overlap": args.chunk_overlap}
    tokens = [len(ids) for ids in encoder.tokenizer([d.text for d in documents], add_special_tokens=False)["input_ids"]]
    window_count = len(encoder.inputs.encode_windows([d.text for d in documents], False, size, args.chunk_overlap)[1])
    started = datetime.now(timezone.utc)
    report = {
        "benchmark": "long_documents", "dataset": str(args.dataset), "model": args.model,
        "started": started.isoformat(timespec="seconds"), "machine": f"{platform.node()}, {os.cpu_count()} CPU",
        "load_average_at_start": os.getloadavg(), "documents": len(documents), "max_length": max_length,
        "chunk_tokens": size, "chunk_overlap": args.chunk_overlap,
        "text_tokens": {"p50": int(np.percentile(tokens, 50)), "p90": int(np.percentile(tokens, 90)),
                        "max": max(tokens)},
        "text_tokens_per_input": room,
        "documents_cut": sum(t > room for t in tokens),
        "windows": window_count, "encode": {}, "eval": {},
    }
    query_vectors = args.work / "queries.jsonl"
    run("encode", "--model", args.model, "--query", "--json", "--input", str(dataset / "queries.jsonl"),
        "--output", str(query_vectors))
    engine = ["--data-dir", str(args.work / "engine")]
    results = []
    for name, chosen in (("cut", {}), ("windows", windows)):
        vectors = args.work / f"vectors-{name}.jsonl"
        report["encode"][name] = encode(encoder, documents, chosen, args.batch, vectors)
        index = f"long-{name}"
        run("ingest", "--index", index, "--corpus", str(dataset), "--vectors", str(vectors), "--model", args.model,
            *engine, "--state-dir", str(args.work / "state"), "--failures", str(args.work / "failures.jsonl"),
            "--no-progress")
        result = json.loads(run("eval", "--dataset", str(dataset), "--index", index, *engine, "--query-vectors",
                                str(query_vectors), "--json", "--no-progress"))
        results.append(result)
        report["eval"][name] = {k: result["metrics"][k] for k in ("ndcg@10", "recall@100", "mrr@10", "map")}
        print(f"{name}: {report['encode'][name]}, {report['eval'][name]}", file=sys.stderr)
    paired = compare(results, ["cut", "windows"])[1]
    report["windows_against_cut"] = {"better": paired.wins, "same": paired.ties, "worse": paired.losses,
                                     "p_value": paired.p_value}
    report["encode_cost_ratio"] = round(report["encode"]["windows"]["seconds"] / report["encode"]["cut"]["seconds"], 3)
    report["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    report["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
