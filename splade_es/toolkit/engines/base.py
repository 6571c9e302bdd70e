"""The one engine interface the rest of the toolkit talks to.

Ingest, query and evaluation call these methods and never ask which engine is behind
them; differences (field types, query flavours) are described by :class:`Capabilities`,
read from the server itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from splade_es.errors import SpladeError

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
PROBE_PATTERN = "splade-es-capability-probe-*"  # matches no index: searches on it only parse


class EngineError(SpladeError):
    """The engine answered with an error (``status`` is its HTTP status)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE_STATUS


class EngineUnavailable(EngineError):
    """The engine could not be reached at all."""


class EngineTimeout(EngineUnavailable):
    """The request was sent but no answer came in time: the engine may still be working on it."""


@dataclass(frozen=True)
class Capabilities:
    """What this server can do, detected rather than assumed."""

    rank_features: bool
    sparse_vector_field: bool
    sparse_vector_query: bool = False
    neural_sparse: bool = False
    english_analyzer: bool = True  # analysis-common; test-only nodes may lack it
    rrf_retriever: bool = False  # Elasticsearch's native reciprocal rank fusion
    hybrid_query: bool = False  # OpenSearch neural-search: hybrid query + normalization pipelines
    score_ranker: bool = False  # OpenSearch 2.19+: RRF in the hybrid query (score-ranker-processor, pagination_depth)
    token_pruning: bool = False  # Elasticsearch 8.15+: the sparse_vector query's pruning_config

    def field_types(self) -> list[str]:
        return [name for name, ok in (("rank_features", self.rank_features),
                                      ("sparse_vector", self.sparse_vector_field)) if ok]


@dataclass(frozen=True)
class EngineInfo:
    kind: str  # "opensearch", "elasticsearch" or "local"
    version: str
    capabilities: Capabilities
    location: str  # URL without credentials, or the local data directory
    cluster: str | None = None  # the cluster's uuid where readable: the same whichever node's URL was given

    @property
    def identity(self) -> str:
        """What names this engine across runs: its cluster uuid, else its location."""
        return f"cluster {self.cluster}" if self.cluster else self.location


@dataclass(frozen=True)
class BulkFailure:
    """One document the engine refused."""

    id: str
    status: int
    reason: str

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE_STATUS


@dataclass
class IndexStats:
    docs: int
    size_bytes: int
    indices: list[str] = field(default_factory=list)


class Engine(ABC):
    """Index management, bulk writes and search over one cluster (or local store)."""

    info: EngineInfo

    @abstractmethod
    def create_index(self, name: str, body: dict[str, Any]) -> None:
        """Create ``name`` from a mapping/settings body; an existing index is an error."""

    @abstractmethod
    def delete_index(self, name: str) -> bool:
        """Delete ``name``; returns False when it did not exist."""

    @abstractmethod
    def exists(self, name: str) -> bool:
        """Whether an index or alias called ``name`` exists."""

    @abstractmethod
    def mappings(self, name: str) -> dict[str, dict[str, Any]]:
        """``{concrete index: mappings}`` for an index or an alias."""

    @abstractmethod
    def alias_targets(self, alias: str) -> list[str]:
        """Indices the alias points at (empty when there is no such alias)."""

    @abstractmethod
    def point_alias(self, alias: str, index: str) -> list[str]:
        """Atomically make ``alias`` point at ``index`` only; returns the indices it left."""

    @abstractmethod
    def bulk(self, index: str, documents: Sequence[tuple[str, dict[str, Any]]]) -> list[BulkFailure]:
        """Index (create or replace) documents by id in one request; returns the refused ones.

        A whole-request failure raises :class:`EngineError` (``retryable`` for 429/502/503/504).
        """

    @abstractmethod
    def search(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        """A search response in the engines' shape (``hits.hits[]._id/_score/_source``)."""

    def msearch(self, index: str, bodies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Several searches; engines override this with one round trip."""
        return [self.search(index, body) for body in bodies]

    @abstractmethod
    def count(self, index: str) -> int:
        """Documents in the index or alias."""

    @abstractmethod
    def stats(self, index: str) -> IndexStats:
        """Document count and size on disk."""

    @abstractmethod
    def get(self, index: str, doc_id: str) -> dict[str, Any] | None:
        """The stored ``_source`` of one document, or None."""

    @abstractmethod
    def refresh(self, index: str) -> None:
        """Make everything written so far searchable."""

    def settle(self, index: str) -> None:
        """Flush and refresh: what was written is searchable and on disk, so timings compare
        indices in the same state (the local engine has nothing more to do)."""
        self.refresh(index)

    def segments_per_shard(self, index: str) -> int | None:
        """The most segments a primary shard of the index holds; None on an engine without segments."""
        return None

    def force_merge(self, index: str, max_segments: int) -> None:
        """Merge each shard down to at most ``max_segments`` segments; a no-op without segments."""

    @abstractmethod
    def put_meta(self, index: str, meta: dict[str, Any]) -> None:
        """Replace the concrete index's mapping ``_meta`` (the record of what was loaded into it)."""

    def refresh_interval(self, index: str) -> str | None:
        """The index's own ``refresh_interval`` (None: the cluster's default). A bulk load turns
        periodic refresh off and restores this afterwards; an engine without it says None."""
        return None

    def shard_layout(self, index: str) -> tuple[int, int] | None:
        """``(primary shards, replicas)`` of an existing index; None on an engine without shards."""
        return None

    def set_refresh_interval(self, index: str, value: str | None) -> None:
        """Set ``refresh_interval`` (None: back to the cluster's default); a no-op without periodic refresh."""

    def has_inference(self, inference_id: str) -> bool:
        """Whether the cluster can run this inference endpoint (or trained model); only
        Elasticsearch with machine learning can."""
        return False

    def put_pipeline(self, name: str, body: dict[str, Any]) -> None:
        """Create or replace an ingest pipeline (used for ELSER on Elasticsearch before 8.15)."""
        raise EngineError(f"{self.info.kind} at {self.info.location} does not run splade-es ingest pipelines", 400)

    def close(self) -> None:
        """Release connections and files."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
