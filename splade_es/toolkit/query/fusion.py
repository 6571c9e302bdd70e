"""Hybrid retrieval: BM25 and the sparse query, fused by rank (RRF) or by normalised score.

Where the engine fuses natively (Elasticsearch's ``rrf`` retriever, OpenSearch's ``hybrid``
query with a normalisation pipeline) one request does it; otherwise both lists come back in
one multi-search and are fused here with the same formulas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from splade_es.errors import ConfigError
from splade_es.toolkit.engines.base import Capabilities

MODES = ("rrf", "linear")
RANK_CONSTANT = 60  # the RRF constant of Cormack et al. and of both engines' defaults

Hits = list[dict[str, Any]]


def rrf(lists: Sequence[Hits], rank_constant: int = RANK_CONSTANT) -> list[tuple[float, dict[str, Any]]]:
    """Reciprocal rank fusion: ``sum over lists of 1 / (rank_constant + rank)``, rank from 1."""
    scores: dict[str, float] = {}
    hits: dict[str, dict[str, Any]] = {}
    for ranked in lists:
        for rank, hit in enumerate(ranked, start=1):
            scores[hit["_id"]] = scores.get(hit["_id"], 0.0) + 1.0 / (rank_constant + rank)
            hits.setdefault(hit["_id"], hit)
    return _ordered(scores, hits)


def linear(lists: Sequence[Hits], weights: Sequence[float]) -> list[tuple[float, dict[str, Any]]]:
    """Weighted sum of min-max normalised scores; a document missing from a list scores 0 there."""
    scores: dict[str, float] = {}
    hits: dict[str, dict[str, Any]] = {}
    for ranked, weight in zip(lists, weights):
        if not ranked:
            continue
        values = [float(hit["_score"]) for hit in ranked]
        low, span = min(values), max(values) - min(values)
        for hit, value in zip(ranked, values):
            normalised = (value - low) / span if span > 0 else 1.0
            scores[hit["_id"]] = scores.get(hit["_id"], 0.0) + weight * normalised
            hits.setdefault(hit["_id"], hit)
    return _ordered(scores, hits)


def _ordered(scores: dict[str, float], hits: dict[str, dict[str, Any]]) -> list[tuple[float, dict[str, Any]]]:
    return [(score, hits[doc_id]) for doc_id, score in sorted(scores.items(), key=lambda item: (-item[1], item[0]))]


def fuse(mode: str, lists: Sequence[Hits], sparse_weight: float) -> list[tuple[float, dict[str, Any]]]:
    """``lists`` is ``[bm25_hits, sparse_hits]``."""
    if mode == "rrf":
        return rrf(lists)
    if mode == "linear":
        return linear(lists, [1.0 - sparse_weight, sparse_weight])
    raise ConfigError(f"unknown hybrid mode {mode!r}: choose {', '.join(MODES)}")


def native_body(capabilities: Capabilities, mode: str, bm25: dict[str, Any], sparse: dict[str, Any],
                size: int, window: int, sparse_weight: float) -> dict[str, Any] | None:
    """One search body that fuses inside the engine, or None where the engine cannot."""
    if mode == "rrf" and capabilities.rrf_retriever:
        return {"size": size, "retriever": {"rrf": {
            "retrievers": [{"standard": {"query": bm25}}, {"standard": {"query": sparse}}],
            "rank_window_size": window, "rank_constant": RANK_CONSTANT}}}
    if capabilities.hybrid_query:
        if mode == "rrf":
            processor = {"score-ranker-processor": {"combination": {"technique": "rrf", "rank_constant": RANK_CONSTANT}}}
        else:
            processor = {"normalization-processor": {
                "normalization": {"technique": "min_max"},
                "combination": {"technique": "arithmetic_mean",
                                "parameters": {"weights": [1.0 - sparse_weight, sparse_weight]}}}}
        return {"size": size, "query": {"hybrid": {"queries": [bm25, sparse]}},
                "search_pipeline": {"phase_results_processors": [processor]}}
    return None
