"""Run every query of a dataset through one method, in multi-search batches, and score the run.

Latency per query is the engine's own ``took`` (summed over the query's requests): what the
cluster spent, free of client and network noise. QPS is queries over the wall time of all
multi-search requests. Query encoding is timed apart (``encode_ms``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from splade_es.io.atomic import atomic_text_file
from splade_es.toolkit.engines.base import Engine
from splade_es.toolkit.eval.methods import Method
from splade_es.toolkit.eval.metrics import Run, evaluate


@dataclass
class EvalResult:
    dataset: str
    method: str
    index: str
    split: str
    k: int
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    latency_ms: dict[str, float]
    qps: float
    queries: int
    skipped_queries: int = 0
    empty_queries: int = 0  # queries with nothing to search for (e.g. every term pruned)
    encode_ms: float | None = None  # per query, mean
    engine: dict[str, str] = field(default_factory=dict)
    index_docs: int | None = None
    index_size_bytes: int | None = None
    run: Run = field(default_factory=dict, repr=False)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # query settings and their sources (splade)
    tuned: dict[str, Any] | None = None  # the index's tuned record, when it was in force

    def to_dict(self, per_query: bool = True) -> dict[str, Any]:
        """The aggregate first, then the details (``splade-es eval --json``)."""
        data: dict[str, Any] = {
            "dataset": self.dataset, "method": self.method, "index": self.index,
            "metrics": {name: round(value, 6) for name, value in self.metrics.items()},
            "latency_ms": self.latency_ms, "qps": self.qps, "queries": self.queries,
            "split": self.split, "k": self.k, "skipped_queries": self.skipped_queries,
            "empty_queries": self.empty_queries, "encode_ms": self.encode_ms, "engine": self.engine,
            "index_docs": self.index_docs, "index_size_bytes": self.index_size_bytes,
            "settings": self.settings,
        }
        if per_query:
            data["per_query"] = {qid: {name: round(value, 6) for name, value in values.items()}
                                 for qid, values in self.per_query.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], method: str | None = None) -> EvalResult:
        """An ``eval --json`` object back as a result (without its run), e.g. to report it; ``method``
        renames it (two hybrid modes share one method name)."""
        names = ("dataset", "index", "split", "k", "metrics", "latency_ms", "qps", "queries", "skipped_queries",
                 "empty_queries", "encode_ms", "engine", "index_docs", "index_size_bytes")
        return cls(method=method or data["method"], per_query=data.get("per_query", {}),
                   **{name: data[name] for name in names if name in data})


def run_queries(engine: Engine, index: str, method: Method, queries: Mapping[str, str], k: int,
                batch_size: int = 64, show_progress: bool = True) -> tuple[Run, list[float], float, int]:
    """``(run, engine latency per searched query, search wall seconds, queries with no request)``."""
    run: Run = {}
    took: list[float] = []
    empty = 0
    wall = 0.0
    ids = list(queries)
    with tqdm(total=len(ids), unit="query", desc=f"{method.name} on {index}", disable=not show_progress) as bar:
        for start in range(0, len(ids), batch_size):
            batch = ids[start:start + batch_size]
            plan = [(qid, method.bodies(qid, queries[qid], k)) for qid in batch]
            flat = [body for _, bodies in plan for body in bodies]
            began = time.perf_counter()
            replies = engine.msearch(index, flat) if flat else []
            wall += time.perf_counter() - began
            position = 0
            for qid, bodies in plan:
                mine = replies[position:position + len(bodies)]
                position += len(bodies)
                if not bodies:
                    empty += 1
                    run[qid] = {}
                    continue
                run[qid] = dict(method.ranking(mine, k)[:k])
                took.append(float(sum(float(reply.get("took", 0.0)) for reply in mine)))
            bar.update(len(batch))
    return run, took, wall, empty


def evaluate_method(engine: Engine, index: str, method: Method, dataset, k: int = 1000, batch_size: int = 64,
                    show_progress: bool = True, encode_seconds: float | None = None) -> EvalResult:
    """Search every judged query of ``dataset`` (a :class:`~splade_es.toolkit.eval.beir.BeirDataset`)."""
    run, took, wall, empty = run_queries(engine, index, method, dataset.queries, k, batch_size, show_progress)
    means, per_query = evaluate(dataset.qrels, run)
    stats = engine.stats(index)
    searched = len(dataset.queries) - empty
    return EvalResult(
        dataset=dataset.name, method=method.name, index=index, split=dataset.split, k=k, metrics=means,
        per_query=per_query, latency_ms=percentiles(took), qps=round(searched / wall, 2) if wall > 0 else 0.0,
        queries=len(dataset.queries), skipped_queries=dataset.skipped_queries, empty_queries=empty,
        encode_ms=round(encode_seconds * 1000 / len(dataset.queries), 3) if encode_seconds is not None else None,
        engine={"kind": engine.info.kind, "version": engine.info.version},
        index_docs=stats.docs, index_size_bytes=stats.size_bytes, run=run)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    return {f"p{p}": round(float(np.percentile(values, p)), 3) for p in (50, 95, 99)}


def write_trec_run(path: str | Path, run: Run, tag: str) -> None:
    """``query Q0 document rank score tag`` lines, ranks from 1 in score order (trec_eval's input)."""
    lines = []
    for qid, docs in run.items():
        ordered = sorted(docs.items(), key=lambda item: (-item[1], item[0]))
        lines += [f"{qid} Q0 {did} {rank} {score:.6f} {tag}" for rank, (did, score) in enumerate(ordered, start=1)]
    with atomic_text_file(path) as handle:
        handle.write("".join(line + "\n" for line in lines))
