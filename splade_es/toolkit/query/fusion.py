"""Hybrid retrieval: BM25 and the sparse query, fused by rank (RRF) or by normalised score.

Where the engine fuses natively one request does it; otherwise both lists come back in one
multi-search and are fused here with the engines' own formulas, over the same ``window`` hits
of each list, so both paths rank alike:

| fusion | native where | otherwise |
|---|---|---|
| RRF | Elasticsearch ``rrf`` retriever (probed: module and licence); OpenSearch 2.19+ ``hybrid`` query + ``score-ranker-processor`` | here |
| linear | OpenSearch 2.10+ ``hybrid`` query + ``normalization-processor`` (min-max, arithmetic mean) | here (also on Elasticsearch) |

Linear fusion normalises each list as OpenSearch's min-max does: ``(s - min) / (max - min)``,
except that the lowest hit gets :data:`MIN_MAX_FLOOR` (0.001), not 0, and a list whose scores
are all equal gives 1; a document missing from a list scores 0 there, and the weights sum to 1,
so the arithmetic mean is the weighted sum. OpenSearch takes each subquery's top ``window``
per shard (``pagination_depth``, 2.19+; before, ``size`` = ``window`` and the top ``k`` are
kept here); with more than one shard it may therefore see more candidates than the client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from splade_es.errors import ConfigError
from splade_es.toolkit.engines.base import Capabilities

MODES = ("rrf", "linear")
RANK_CONSTANT = 60  # the RRF constant of Cormack et al. and of both engines' defaults
MIN_MAX_FLOOR = 0.001  # OpenSearch's min-max score of a list's lowest hit

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
    """Weighted sum of min-max normalised scores (OpenSearch's: the lowest hit gets
    :data:`MIN_MAX_FLOOR`); a document missing from a list scores 0 there."""
    scores: dict[str, float] = {}
    hits: dict[str, dict[str, Any]] = {}
    for ranked, weight in zip(lists, weights):
        if not ranked:
            continue
        values = [float(hit["_score"]) for hit in ranked]
        low, span = min(values), max(values) - min(values)
        for hit, value in zip(ranked, values):
            normalised = max((value - low) / span, MIN_MAX_FLOOR) if span > 0 else 1.0
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


def native(capabilities: Capabilities, mode: str) -> str | None:
    """How this engine fuses ``mode`` itself: ``"retriever"`` (Elasticsearch), ``"hybrid"``
    (OpenSearch: one query, both lists inside it), or None (fused here)."""
    if mode == "rrf" and capabilities.rrf_retriever:
        return "retriever"
    if capabilities.hybrid_query and (mode == "linear" or capabilities.score_ranker):
        return "hybrid"
    return None


def native_body(capabilities: Capabilities, mode: str, bm25: dict[str, Any], sparse: dict[str, Any],
                size: int, window: int, sparse_weight: float) -> dict[str, Any] | None:
    """One search body that fuses the top ``window`` of both lists inside the engine and returns
    ``size`` hits (``window`` where OpenSearch cannot set the depth: keep the first ``size``),
    or None where the engine cannot fuse ``mode``."""
    how = native(capabilities, mode)
    if how == "retriever":
        return {"size": size, "retriever": {"rrf": {
            "retrievers": [{"standard": {"query": bm25}}, {"standard": {"query": sparse}}],
            "rank_window_size": window, "rank_constant": RANK_CONSTANT}}}
    if how is None:
        return None
    if mode == "rrf":
        processor = {"score-ranker-processor": {"combination": {"technique": "rrf", "rank_constant": RANK_CONSTANT}}}
    else:
        processor = {"normalization-processor": {
            "normalization": {"technique": "min_max"},
            "combination": {"technique": "arithmetic_mean",
                            "parameters": {"weights": [1.0 - sparse_weight, sparse_weight]}}}}
    hybrid: dict[str, Any] = {"queries": [bm25, sparse]}
    if capabilities.score_ranker:  # 2.19+: each subquery's depth, independent of size
        hybrid["pagination_depth"] = window
    else:  # before 2.19 each subquery returns from + size hits
        size = window
    return {"size": size, "query": {"hybrid": hybrid}, "search_pipeline": {"phase_results_processors": [processor]}}
