"""Retrieval methods under evaluation: each turns one query into request bodies and the
replies into a ranking, so every method runs through the same batched multi-search."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from splade_es.errors import ConfigError
from splade_es.toolkit.elser import ElserPlan
from splade_es.toolkit.elser import query as elser_query
from splade_es.toolkit.engines.base import Engine
from splade_es.toolkit.mappings import analysed_text_fields
from splade_es.toolkit.query.forms import bm25_query
from splade_es.toolkit.query.searcher import Searcher

METHODS = ("splade", "bm25", "elser", "hybrid")
Ranking = list[tuple[str, float]]


class Method(ABC):
    name: str

    @abstractmethod
    def bodies(self, query_id: str, text: str, k: int) -> list[dict[str, Any]]:
        """The search bodies for one query (none when it has nothing to search for)."""

    def ranking(self, replies: Sequence[dict[str, Any]], k: int) -> Ranking:
        """``[(document id, score)]`` best first."""
        hits = replies[0]["hits"]["hits"] if replies else []
        return [(str(hit["_id"]), float(hit["_score"])) for hit in hits]


class SpladeMethod(Method):
    """The exact sparse dot product of the model's query vector with the stored vectors."""

    name = "splade"

    def __init__(self, searcher: Searcher, vectors: Mapping[str, Mapping[str, float]]) -> None:
        self.searcher, self.vectors = searcher, vectors

    def bodies(self, query_id: str, text: str, k: int) -> list[dict[str, Any]]:
        vector = self.vectors.get(query_id)
        if not vector:
            return []
        return [{**self.searcher.sparse_body(vector, k), "_source": False}]


class HybridMethod(SpladeMethod):
    """BM25 and the sparse query fused by RRF (or linear), natively where the engine can."""

    name = "hybrid"

    def __init__(self, searcher: Searcher, vectors: Mapping[str, Mapping[str, float]], mode: str = "rrf",
                 sparse_weight: float = 0.5) -> None:
        super().__init__(searcher, vectors)
        self.mode, self.sparse_weight = mode, sparse_weight

    def bodies(self, query_id: str, text: str, k: int) -> list[dict[str, Any]]:
        vector = self.vectors.get(query_id)
        if not vector:
            return [{**self.searcher.body(self.searcher.bm25_query(text), k), "_source": False}]
        bodies, _ = self.searcher.hybrid_bodies(vector, text, k, self.mode, sparse_weight=self.sparse_weight,
                                                window=k)
        return [{**body, "_source": False} for body in bodies]

    def ranking(self, replies: Sequence[dict[str, Any]], k: int) -> Ranking:
        hits, scores = Searcher.fuse(self.mode, replies, k, self.sparse_weight)
        return [(str(hit["_id"]), score) for hit, score in zip(hits, scores)]


class Bm25Method(Method):
    """BEIR's Elasticsearch baseline over the index's analysed text fields."""

    name = "bm25"

    def __init__(self, engine: Engine, index: str) -> None:
        self.fields = analysed_text_fields(engine.mappings(index))
        if not self.fields:
            raise ConfigError(f"index {index!r} has no text fields to run BM25 on")

    def bodies(self, query_id: str, text: str, k: int) -> list[dict[str, Any]]:
        if not text.strip():
            return []
        return [{"query": bm25_query(text, self.fields), "size": k, "_source": False, "track_total_hits": False}]



class ElserMethod(Method):
    """ELSER v2 expands the query inside Elasticsearch (the ``sparse_vector`` query with an
    inference endpoint), against the ELSER field built by ``ingest --encoder elser``."""

    name = "elser"

    def __init__(self, plan: ElserPlan) -> None:
        self.plan = plan

    def bodies(self, query_id: str, text: str, k: int) -> list[dict[str, Any]]:
        if not text.strip():
            return []
        return [{"query": elser_query(self.plan, text), "size": k, "_source": False, "track_total_hits": False}]
