"""From a dataset, an index and a method name to an :class:`EvalResult`: checks the index,
encodes the queries (or reads them precomputed), and runs the method."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from splade_es.errors import ConfigError, InputError
from splade_es.io.corpus import read_vectors
from splade_es.model.config import Pruning
from splade_es.toolkit.elser import check_available, recorded_plan
from splade_es.toolkit.engines.base import Engine
from splade_es.toolkit.eval.beir import BeirDataset
from splade_es.toolkit.eval.methods import Bm25Method, ElserMethod, HybridMethod, Method, SpladeMethod
from splade_es.toolkit.eval.runner import EvalResult, evaluate_method
from splade_es.toolkit.query.forms import TokenPruning
from splade_es.toolkit.query.pipeline import QueryPipeline
from splade_es.toolkit.query.searcher import Searcher
from splade_es.toolkit.query.tuned import as_report, resolve


@dataclass
class EvalSettings:
    method: str = "splade"
    model: str | None = None  # default: the model recorded in the index
    adapter: str | None = None
    query_vectors: str | None = None  # splade-es encode --json output, by query id
    query_top_k: int | None = None  # unset pruning and two-phase: the index's tuned record (use_tuned), else defaults
    query_min_weight: float | None = None
    two_phase: int | None = None  # 0: off
    two_phase_window: int | None = None
    use_tuned: bool = True
    k: int = 1000
    batch_size: int = 64
    hybrid_mode: str = "rrf"
    inference_id: str | None = None  # default: the one recorded in the ELSER index
    device: str | None = None
    show_progress: bool = True
    encoder: Any = None  # an already loaded SparseEncoder of ``model`` (the benchmark's); else loaded here
    token_pruning: TokenPruning | None = None  # Elasticsearch's, in place of two-phase search


def check_index(engine: Engine, index: str) -> int:
    """The document count; a missing or empty index is an error that says what to run."""
    if not engine.exists(index):
        raise ConfigError(f"no index named {index!r} at {engine.info.location}: build it with 'splade-es ingest'")
    docs = engine.count(index)
    if docs == 0:
        raise ConfigError(f"index {index!r} is empty: ingest the dataset's corpus into it first")
    return docs


def evaluate_index(engine: Engine, dataset: BeirDataset, index: str, settings: EvalSettings) -> EvalResult:
    check_index(engine, index)
    encode_seconds = None
    method: Method
    if settings.method in ("splade", "hybrid"):
        searcher = Searcher(engine, index, two_phase=settings.two_phase, two_phase_window=settings.two_phase_window,
                            use_tuned=settings.use_tuned, token_pruning=settings.token_pruning)
        if searcher.meta.field not in searcher.meta.field_names:
            raise ConfigError(f"index {index!r} has no vector field {searcher.meta.field!r} in its mapping")
        vectors, encode_seconds, query_settings = query_vectors(searcher, dataset, settings)
        method = (SpladeMethod(searcher, vectors) if settings.method == "splade"
                  else HybridMethod(searcher, vectors, settings.hybrid_mode))
    elif settings.method == "bm25":
        method = Bm25Method(engine, index)
    elif settings.method == "elser":
        plan = recorded_plan(engine, index)
        if settings.inference_id and settings.inference_id != plan.inference_id:
            raise ConfigError(f"index {index!r} was expanded by {plan.inference_id!r}; query it with the same "
                              f"endpoint, not {settings.inference_id!r}")
        check_available(engine, plan)
        method = ElserMethod(plan)
    else:
        raise ConfigError(f"unknown method {settings.method!r}: choose splade, bm25, elser or hybrid")
    result = evaluate_method(engine, index, method, dataset, settings.k, settings.batch_size, settings.show_progress,
                             encode_seconds)
    if settings.method in ("splade", "hybrid"):
        result.settings, result.tuned = query_settings, searcher.tuned
    return result


def query_vectors(searcher: Searcher, dataset: BeirDataset, settings: EvalSettings
                  ) -> tuple[dict[str, dict[str, float]], float | None, dict[str, dict[str, Any]]]:
    """Query vectors by query id, the seconds spent encoding them (None when precomputed), and
    the query settings in force with their sources."""
    explicit = {"query_top_k": settings.query_top_k, "query_min_weight": settings.query_min_weight}
    if settings.query_vectors:
        vectors = {doc_id: features for _, doc_id, features in read_vectors(settings.query_vectors)}
        missing = [qid for qid in dataset.queries if qid not in vectors]
        if missing:
            raise InputError(f"{settings.query_vectors}: no vector for {len(missing)} of the {len(dataset.queries)} "
                             f"queries (e.g. query {missing[0]!r})")
        values, sources = resolve(explicit, searcher.tuned, {})  # the file's vectors are as the model pruned them
        pruning = Pruning(top_k=values["query_top_k"], min_weight=values["query_min_weight"] or 0.0)
        vectors = {qid: pruning.apply(v) for qid, v in vectors.items()}
        return vectors, None, as_report({**values, **searcher.settings}, {**sources, **searcher.sources})
    pipeline = QueryPipeline.open(searcher, settings.model, settings.adapter, settings.device, settings.query_top_k,
                                  settings.query_min_weight, encoder=settings.encoder)
    ids = list(dataset.queries)
    started = time.perf_counter()
    encoded = pipeline.encode([dataset.queries[qid] for qid in ids], show_progress=settings.show_progress)
    return dict(zip(ids, encoded)), time.perf_counter() - started, as_report(pipeline.settings, pipeline.sources)
