"""The embedded engine's BM25 against bm25s, side by side on one corpus.

It decided that bm25s sits under the local engine (docs/BENCHMARKS.md: at 100k documents the
formula evaluated per query took 8.1 ms, bm25s 2.7 ms, same top 10s); it now checks that the
engine's path (bm25s's eager scores, summed by the engine over its own rows) stays as fast and
as exact as bm25s's own ``get_scores``, at any size. Both score the same tokens (the local engine's English analysis: lower-cased words, Lucene's
stop words, Porter stemming) with Lucene's BM25 (k1 1.2, b 0.75); documents with an empty field
stay out of bm25s's index, as Lucene's docCount leaves them out. For each backend, in its own
process (so its peak resident memory is its own):

- ``build``: wall time and peak RSS of indexing the corpus's ``text`` field; ``load_saved``: reading
  the built index back from disk (the local engine's cache; bm25s's ``save``/``load``), what each
  new process pays;
- ``query``: p50/p99 of scoring one query against every document and taking the top 10, over the
  corpus's queries (both hand the engine a score per document, which is what a ``match`` clause
  inside a ``bool`` needs);
- agreement: every query's top 10 ids and scores compared between the two (max |diff|).

    python benchmarks/bm25_backends.py --corpus /tmp/scale-100k --out benchmarks/results/bm25_backends_100k.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from memory import peak_rss_bytes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _texts(corpus: Path) -> list[str]:
    with (corpus / "corpus.jsonl").open("rb") as handle:
        return [str(orjson.loads(line).get("text") or "") for line in handle if line.strip()]


def _queries(corpus: Path, limit: int) -> list[str]:
    lines = (corpus / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()][:limit]


def child(backend: str, corpus: Path, limit: int) -> dict:
    from splade_es.toolkit.engines.local import BM25, analyze
    from splade_es.toolkit.eval.bm25_reference import AnalysedBm25s  # light: numpy and bm25s only

    texts = _texts(corpus)
    started = time.perf_counter()
    scorer = BM25(texts) if backend == "local" else AnalysedBm25s(texts, analyze)
    build = time.perf_counter() - started
    del texts
    with tempfile.TemporaryDirectory() as saved:  # what a new process pays: loading the saved index
        if backend == "local":
            np.savez(f"{saved}/bm25.npz", **scorer.arrays())
            started = time.perf_counter()
            with np.load(f"{saved}/bm25.npz") as arrays:
                scorer = BM25.from_arrays({key: arrays[key] for key in arrays.files})
        else:
            scorer.retriever.save(saved)
            started = time.perf_counter()
            scorer.retriever = type(scorer.retriever).load(saved, mmap=False)
        load = time.perf_counter() - started
    took, tops = [], []
    for query in _queries(corpus, limit):
        started = time.perf_counter()
        scores = scorer.score(query)
        top = np.argpartition(-scores, 10)[:10]
        top = top[np.lexsort((top, -scores[top]))]
        took.append((time.perf_counter() - started) * 1000)
        tops.append([[int(i), float(scores[i])] for i in top if scores[i] > 0])
    return {"backend": backend, "build_s": round(build, 2), "load_saved_s": round(load, 3), "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1),
            # np.percentile, not eval.runner's: importing the runner pulls in the engine clients,
            # tens of MB that would sit in both backends' peak RSS
            "query_ms": {f"p{q}": round(float(np.percentile(took, q)), 3) for q in (50, 99)},
            "queries": len(took), "tops": tops}


def agreement(a: list, b: list) -> dict:
    """Same top-10 ids (ties broken by id in both), and the largest score difference."""
    same = sum(1 for x, y in zip(a, b) if [i for i, _ in x] == [i for i, _ in y])
    worst = max((abs(s - t) for x, y in zip(a, b) for (_, s), (_, t) in zip(x, y)), default=0.0)
    return {"queries_with_identical_top10": same, "queries": len(a), "max_abs_score_diff": worst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True, help="a BEIR directory (corpus.jsonl, queries.jsonl)")
    parser.add_argument("--queries", type=int, default=200, help="at most this many queries (default 200)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", choices=["local", "bm25s"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.corpus, args.queries)))
        return
    load_start, runs = list(os.getloadavg()), {}
    for backend in ("local", "bm25s"):
        done = subprocess.run([sys.executable, __file__, "--child", backend, "--corpus", str(args.corpus),
                               "--queries", str(args.queries)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{backend} failed:\n{done.stderr[-3000:]}")
        runs[backend] = json.loads(done.stdout.strip().splitlines()[-1])
    result = {"corpus": str(args.corpus), "docs": sum(1 for _ in (args.corpus / "corpus.jsonl").open("rb")),
              "agreement": agreement(runs["local"].pop("tops"), runs["bm25s"].pop("tops")),
              "backends": list(runs.values()), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "load_average_start": load_start, "date": time.strftime("%Y-%m-%d"),
              "commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                       text=True, check=False).stdout.strip()}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
