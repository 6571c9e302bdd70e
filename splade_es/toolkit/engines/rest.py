"""What Elasticsearch and OpenSearch share: the REST API, written once.

The two clients differ only in how a request is sent and how errors look; subclasses
supply :meth:`RestEngine._send` and the capability rules, everything else is here.
"""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import orjson

from splade_es.toolkit.engines.base import (PROBE_PATTERN, BulkFailure, Capabilities, Engine, EngineError, EngineInfo,
                                            EngineTimeout, IndexStats)

_log = logging.getLogger(__name__)

_UNREADABLE = (401, 403, 404, 405)  # answers that say "not for you here", not "try again"


def _assigned(uuid: Any) -> str | None:
    """A cluster uuid, or None before the cluster has formed ("_na_")."""
    return str(uuid) if uuid and uuid != "_na_" else None


# Only what failure handling reads: a reply of 500 acknowledgements shrinks to a few bytes.
_BULK_REPLY = "errors,items.*._id,items.*.status,items.*.error"


# Query types whose presence decides the query form, each with a body the server will parse.
_QUERY_PROBES: dict[str, dict[str, Any]] = {
    "rank_feature": {"field": "splade_es_probe.x"},
    "sparse_vector": {"field": "splade_es_probe", "query_vector": {"x": 1.0}},
    "neural_sparse": {"splade_es_probe": {"query_tokens": {"x": 1.0}}},
    "hybrid": {"queries": [{"match_all": {}}]},
}
_RRF_PROBE = {"size": 0, "retriever": {"rrf": {"retrievers": [{"standard": {"query": {"match_all": {}}}}] * 2}}}


class RestEngine(Engine):
    """An engine reached over HTTP through its official Python client."""

    kind: str

    def __init__(self, location: str, version: str, modules: set[str]) -> None:
        queries = {name for name, body in _QUERY_PROBES.items() if self._parses({"size": 0, "query": {name: body}})}
        capabilities = replace(self.detect_capabilities(version, modules, queries),
                               english_analyzer=self._has_analyzer("english"), rrf_retriever=self._parses(_RRF_PROBE),
                               hybrid_query="hybrid" in queries)
        self.info = EngineInfo(self.kind, version, capabilities, location, self._cluster_uuid())

    def _cluster_uuid(self) -> str | None:
        """The cluster's uuid: from the root endpoint, or from the cluster state where the root is
        refused (a distribution without the root handler answers 405). None where neither may be
        read (credentials) or it is not assigned yet; any other failure (an outage, 408, 429, 5xx)
        is an error: a silent fallback would key this run's checkpoint by URL."""
        try:
            return _assigned(self._send("GET", "/").get("cluster_uuid"))
        except EngineError as exc:
            if exc.status not in _UNREADABLE:
                raise
        try:
            reply = self._send("GET", "/_cluster/state/metadata", params={"filter_path": "metadata.cluster_uuid"})
        except EngineError as exc:
            if exc.status not in _UNREADABLE:
                raise
            return None
        return _assigned(reply.get("metadata", {}).get("cluster_uuid"))

    def _has_analyzer(self, name: str) -> bool:
        try:
            self._send("POST", "/_analyze", {"analyzer": name, "text": "probe"})
        except EngineError as exc:
            if exc.status == 400:
                return False
            raise
        return True

    def _parses(self, body: dict[str, Any]) -> bool:
        """Whether the server accepts this search body: it parses (and licence-checks) it before
        touching any index, and a pattern matching nothing needs no privilege on existing data."""
        try:
            self._send("POST", f"/{PROBE_PATTERN}/_search", body,
                       {"allow_no_indices": "true", "ignore_unavailable": "true"})
        except EngineError as exc:
            if exc.status in (400, 401, 403):
                return False
            raise
        return True

    @classmethod
    @abstractmethod
    def detect_capabilities(cls, version: str, modules: set[str], queries: set[str]) -> Capabilities:
        """Field types and queries this server supports, from its version, its modules (empty
        when the node list was not readable) and the query types it parsed."""

    @abstractmethod
    def _send(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None,
              ndjson: bool = False) -> Any:
        """One request; raises EngineError / EngineUnavailable; returns the decoded body."""

    # ---------------------------------------------------------------- indices
    def create_index(self, name: str, body: dict[str, Any]) -> None:
        self._send("PUT", f"/{url_part(name)}", body, {"wait_for_active_shards": "1"})

    def delete_index(self, name: str) -> bool:
        return self._found("DELETE", f"/{url_part(name)}")

    def exists(self, name: str) -> bool:
        return self._found("HEAD", f"/{url_part(name)}")

    def _found(self, method: str, path: str) -> bool:
        """Send a request whose 404 means "no such thing" rather than an error."""
        try:
            self._send(method, path)
        except EngineError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def mappings(self, name: str) -> dict[str, dict[str, Any]]:
        reply = self._send("GET", f"/{url_part(name)}/_mapping")
        return {index: body.get("mappings", {}) for index, body in reply.items()}

    def alias_targets(self, alias: str) -> list[str]:
        try:
            reply = self._send("GET", f"/_alias/{url_part(alias)}")
        except EngineError as exc:
            if exc.status == 404:
                return []
            raise
        return sorted(reply)

    def point_alias(self, alias: str, index: str) -> list[str]:
        old = [name for name in self.alias_targets(alias) if name != index]
        actions = [{"remove": {"index": name, "alias": alias}} for name in old]
        actions.append({"add": {"index": index, "alias": alias}})
        self._send("POST", "/_aliases", {"actions": actions})
        return old

    # ---------------------------------------------------------------- documents
    def bulk(self, index: str, documents: Sequence[tuple[str, dict[str, Any]]]) -> list[BulkFailure]:
        return self.bulk_raw(bulk_payload(index, documents))

    def bulk_raw(self, payload: bytes) -> list[BulkFailure]:
        """Send an NDJSON body made by :func:`bulk_payload` (lets callers size requests in bytes)."""
        reply = self._send("POST", "/_bulk", payload, {"filter_path": _BULK_REPLY}, ndjson=True)
        if not reply.get("errors"):
            return []
        failures = []
        for item in reply.get("items", []):
            result = next(iter(item.values()))
            if result.get("status", 200) >= 300:
                error = result.get("error", {})
                reason = error.get("reason", str(error)) if isinstance(error, dict) else str(error)
                kind = error.get("type", "error") if isinstance(error, dict) else "error"
                failures.append(BulkFailure(str(result.get("_id")), int(result["status"]), f"{kind}: {reason}"))
        return failures

    def search(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._send("POST", f"/{url_part(index)}/_search", body)

    def msearch(self, index: str, bodies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        header = orjson.dumps({"index": index})
        payload = b"".join(header + b"\n" + orjson.dumps(body) + b"\n" for body in bodies)
        reply = self._send("POST", "/_msearch", payload, ndjson=True)
        results = reply.get("responses", [])
        for result in results:
            if "error" in result:
                error = result["error"]
                raise EngineError(f"search failed: {error.get('reason', error) if isinstance(error, dict) else error}",
                                  result.get("status"))
        return results

    def count(self, index: str) -> int:
        return int(self._send("GET", f"/{url_part(index)}/_count")["count"])

    def stats(self, index: str) -> IndexStats:
        reply = self._send("GET", f"/{url_part(index)}/_stats/docs,store")
        primaries = reply["_all"]["primaries"]
        return IndexStats(int(primaries["docs"]["count"]), int(primaries["store"]["size_in_bytes"]),
                          sorted(reply.get("indices", {})))

    def get(self, index: str, doc_id: str) -> dict[str, Any] | None:
        try:
            reply = self._send("GET", f"/{url_part(index)}/_doc/{url_part(doc_id)}")
        except EngineError as exc:
            if exc.status == 404:
                return None
            raise
        return reply.get("_source") if reply.get("found") else None

    def put_meta(self, index: str, meta: dict[str, Any]) -> None:
        self._send("PUT", f"/{url_part(index)}/_mapping", {"_meta": meta})

    def refresh_interval(self, index: str) -> str | None:
        reply = self._send("GET", f"/{url_part(index)}/_settings",
                           params={"filter_path": "*.settings.index.refresh_interval"})
        return next((body["settings"]["index"]["refresh_interval"] for body in (reply or {}).values()), None)

    def shard_layout(self, index: str) -> tuple[int, int] | None:
        reply = self._send("GET", f"/{url_part(index)}/_settings",
                           params={"filter_path": "*.settings.index.number_of_shards,*.settings.index.number_of_replicas"})
        for body in (reply or {}).values():
            settings = body["settings"]["index"]
            return int(settings["number_of_shards"]), int(settings["number_of_replicas"])
        return None

    def set_refresh_interval(self, index: str, value: str | None) -> None:
        self._send("PUT", f"/{url_part(index)}/_settings", {"index": {"refresh_interval": value}})

    def refresh(self, index: str) -> None:
        self._send("POST", f"/{url_part(index)}/_refresh")

    def settle(self, index: str) -> None:
        self._send("POST", f"/{url_part(index)}/_flush")
        self.refresh(index)

    def segments_per_shard(self, index: str) -> int | None:
        reply = self._send("GET", f"/{url_part(index)}/_stats/segments", params={"level": "shards"})
        counts = [int(copy["segments"]["count"]) for body in reply.get("indices", {}).values()
                  for copies in body.get("shards", {}).values() for copy in copies
                  if copy.get("routing", {}).get("primary")]
        return max(counts) if counts else None

    def force_merge(self, index: str, max_segments: int, timeout: float = 3600.0) -> None:
        """A large index merges longer than the client waits: on a timeout the engine goes on
        merging, so wait for the segment count instead of failing (any other failure is raised)."""
        try:
            self._send("POST", f"/{url_part(index)}/_forcemerge", params={"max_num_segments": str(max_segments)})
            return
        except EngineTimeout:
            _log.warning("%s: force merge to %d segments still running after the request timed out; waiting",
                         index, max_segments)
            deadline = time.monotonic() + timeout
        while (self.segments_per_shard(index) or 0) > max_segments:
            if time.monotonic() > deadline:
                raise EngineError(f"{index}: force merge to {max_segments} segments not done after {timeout:g} s")
            time.sleep(2)


def has_rank_features(modules: set[str], queries: set[str]) -> bool:
    """mapper-extras brings the ``rank_features`` field and the ``rank_feature`` query together,
    so either one seen (module list, or a query the server parses) means both are there."""
    return "mapper-extras" in modules or "rank_feature" in queries


def bulk_line(index: str, doc_id: str, source: dict[str, Any], version: int | None = None) -> bytes:
    """One document's action and source lines of a ``_bulk`` body (NDJSON, UTF-8).

    With ``version`` the write is ``external_gte`` versioned: the engine keeps whichever copy of
    the id carries the higher version, so a request applied late (after a client timeout) cannot
    overwrite a later record, and a replay of the same copy rewrites it with itself.
    """
    action: dict[str, Any] = {"_index": index, "_id": doc_id}
    if version is not None:
        action.update(version=version, version_type="external_gte")
    return orjson.dumps({"index": action}) + b"\n" + orjson.dumps(source) + b"\n"


def bulk_payload(index: str, documents: Sequence[tuple[str, dict[str, Any]]]) -> bytes:
    """The NDJSON body of a ``_bulk`` request that indexes ``documents`` by id."""
    return b"".join(bulk_line(index, doc_id, source) for doc_id, source in documents)


def url_part(name: str) -> str:
    return quote(name, safe=",*")


def error_reason(body: Any, status: int) -> str:
    """The engine's own one-line reason, e.g. ``illegal_argument_exception: ...``."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        cause = (error.get("root_cause") or [error])[0]
        return f"HTTP {status} {cause.get('type', 'error')}: {cause.get('reason', '')}"
    return f"HTTP {status}: {str(body)[:300]}"
