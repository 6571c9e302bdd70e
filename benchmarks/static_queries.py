"""Inference-free queries versus the model's own query encoder, on CPU with the MiniLM model.

From the MiniLM start (``splade-es init-model``) two models are trained on Cranfield title ->
body pairs (no queries or judgments) with the same settings: ``configs/quickstart-minilm.toml``
(model queries) and ``configs/static-queries-minilm.toml`` (a query weight table trained with
the documents). For each dataset:

- (i)  model A's documents, model A's queries;
- (ii) model A's documents (the same index), IDF query weights of that corpus (``splade-es idf``
       in place: the index keeps answering, its document vectors are unchanged);
- (iii) model B's documents, model B's trained query table.

nDCG@10 comes from ``splade-es eval`` (pytrec_eval). On the first dataset the script also times,
for A before and after ``idf``: ``splade-es search`` as a fresh process from start to first result
(median of ``--repeats`` runs), and query encoding alone, one query at a time over all the
dataset's queries (p50/p99, after 5 warm-up queries). Everything runs on the local engine, in
``--work``; results are written to ``--out`` after every step.

    python benchmarks/static_queries.py --datasets ../shared/data/cranfield,../shared/data/scifact \\
        --out benchmarks/results/static_queries_minilm.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from datetime import date
from pathlib import Path

import numpy as np
from splade_cli import run

ROOT = Path(__file__).resolve().parents[1]



def train(config: str, start: Path, pairs: Path, output: Path, steps: int) -> Path:
    if not (output / "bundle").is_dir():
        run("train", "--config", str(ROOT / "configs" / config), "--override", f'model.backbone="{start}"',
            "--override", f'data.datasets=[{{path = "{pairs}"}}]', "--override", f'run.output_dir="{output}"',
            "--override", f"optim.max_steps={steps}")
    return output / "bundle"


def ndcg(dataset: Path, index: str, engine: list[str], model: str) -> float:
    data = json.loads(run("eval", "--dataset", str(dataset), "--index", index, *engine, "--model", model, "--json",
                          "--no-progress"))
    return data["metrics"]["ndcg@10"]


def first_result_seconds(index: str, engine: list[str], model: str, query: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run("search", "--index", index, *engine, "--model", model, "--k", "1", query)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def encoding_ms(model: str, queries: list[str]) -> dict[str, float]:
    from splade_es.model.static import load_query_encoder

    started = time.perf_counter()
    encoder = load_query_encoder(model, device="cpu")
    load_s = time.perf_counter() - started
    for text in queries[:5]:
        encoder.encode_queries(text)
    times = []
    for text in queries:
        started = time.perf_counter()
        encoder.encode_queries(text)
        times.append((time.perf_counter() - started) * 1000)
    return {"load_s": round(load_s, 3), "p50_ms": round(float(np.percentile(times, 50)), 3),
            "p99_ms": round(float(np.percentile(times, 99)), 3), "queries": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="../shared/data/cranfield,../shared/data/scifact")
    parser.add_argument("--train-corpus", default="../shared/data/cranfield", help="Where the title pairs come from.")
    parser.add_argument("--steps", type=int, default=150, help="Training steps of A and B (0: A is the untrained "
                                                                   "start, no B)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("bench-static"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "static_queries_minilm.json")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    engine = ["--data-dir", str(work / "engine")]
    result: dict = {"date": date.today().isoformat(), "machine": f"{platform.processor() or platform.machine()}, "
                    f"{os.cpu_count()} CPUs (shared), no GPU", "steps": args.steps, "datasets": {}}

    def save() -> None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    start = work / "start"
    if not start.is_dir():
        run("init-model", "--base", "minilm", "--output", str(start))
    pairs = work / "pairs.jsonl"
    if not pairs.is_file():
        run("pairs", "--corpus", args.train_corpus, "--output", str(pairs))
    # --steps 0: the untrained start is model A, and there is no model B (no trained table)
    model_a = train("quickstart-minilm.toml", start, pairs, work / "run-model", args.steps) if args.steps else start
    model_b = train("static-queries-minilm.toml", start, pairs, work / "run-static", args.steps) if args.steps else None
    for position, spec in enumerate(args.datasets.split(",")):
        dataset = Path(spec).resolve()
        name = dataset.name
        bundle = work / f"A-{name}"  # a copy per corpus: its IDF table goes in place
        shutil.rmtree(bundle, ignore_errors=True)
        shutil.copytree(model_a, bundle)
        row: dict = result["datasets"].setdefault(name, {})
        for label, model in (("A", bundle), ("B", model_b)) if model_b else (("A", bundle),):
            started = time.perf_counter()
            run("ingest", "--index", f"{name}-{label.lower()}", "--corpus", str(dataset), "--model", str(model),
                *engine, "--no-progress", "--state-dir", str(work / "state" / f"{name}-{label}"))
            row[f"ingest_{label}_s"] = round(time.perf_counter() - started, 1)
        queries = [json.loads(line)["text"] for line in (dataset / "queries.jsonl").read_text().splitlines()]
        row["ndcg10_model_queries"] = ndcg(dataset, f"{name}-a", engine, str(bundle))
        if position == 0:
            row["full"] = {"first_result_s": round(first_result_seconds(f"{name}-a", engine, str(bundle), queries[0],
                                                                        args.repeats), 3),
                           **encoding_ms(str(bundle), queries)}
        save()
        run("idf", "--model", str(bundle), "--corpus", str(dataset))
        row["ndcg10_idf_queries"] = ndcg(dataset, f"{name}-a", engine, str(bundle))
        if position == 0:
            row["static"] = {"first_result_s": round(first_result_seconds(f"{name}-a", engine, str(bundle),
                                                                          queries[0], args.repeats), 3),
                             **encoding_ms(str(bundle), queries)}
        if model_b is not None:
            row["ndcg10_trained_static_queries"] = ndcg(dataset, f"{name}-b", engine, str(model_b))
        save()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
