"""OpenSearch 1.x-3.x through opensearch-py 3.x."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import opensearchpy

from splade_es.toolkit.engines.base import Capabilities, EngineError, EngineTimeout, EngineUnavailable
from splade_es.toolkit.engines.credentials import Credentials
from splade_es.toolkit.engines.elastic import version_tuple
from splade_es.toolkit.engines.pool import (DEAD_NODE_BACKOFF, MAX_DEAD_NODE_BACKOFF, ReportsDeadNodes,
                                            failover_options)
from splade_es.toolkit.engines.rest import RestEngine, error_reason, has_rank_features


class _Pool(ReportsDeadNodes, opensearchpy.ConnectionPool):
    """opensearch-py builds a new pool on every sniff, reusing the connection objects: a node set
    aside stays aside across that rebuild. Otherwise a node the cluster still lists right after it
    died (a sniff on its failure) comes back at once and takes the request's other tries."""

    def __init__(self, connections: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(connections, *args, **kwargs)
        now = time.time()
        for connection in list(self.connections):
            until, failures = getattr(connection, "_set_aside", (0.0, 0))
            if until > now:
                self.connections.remove(connection)
                self.dead.put((until, connection))
                self.dead_count[connection] = failures

    def mark_dead(self, connection: Any, *args: Any, **kwargs: Any) -> None:
        super().mark_dead(connection, *args, **kwargs)
        failures = self.dead_count.get(connection, 0)
        if failures:  # kept on the connection, which outlives this pool
            backoff = self.dead_timeout * 2 ** min(failures - 1, self.timeout_cutoff)
            connection._set_aside = (time.time() + backoff, failures)

    def mark_live(self, connection: Any) -> None:
        super().mark_live(connection)
        connection._set_aside = (0.0, 0)


class OpenSearchEngine(RestEngine):
    kind = "opensearch"

    def __init__(self, urls: str | Sequence[str], credentials: Credentials, version: str, modules: set[str],
                 timeout: float, sniff: bool = False) -> None:
        urls = [urls] if isinstance(urls, str) else list(urls)
        sniffing = {"sniff_on_start": True, "sniff_on_connection_fail": True, "sniff_timeout": timeout} if sniff else {}
        self.client = opensearchpy.OpenSearch(urls, timeout=timeout, **failover_options(urls), **sniffing,
                                              connection_pool_class=_Pool, dead_timeout=DEAD_NODE_BACKOFF,
                                              timeout_cutoff=int(MAX_DEAD_NODE_BACKOFF).bit_length() - 1,
                                              headers=credentials.headers(), **credentials.tls_options(urls[0]))
        if sniff:  # each request may try every node found
            pool = self.client.transport.connection_pool
            self.client.transport.max_retries = len(getattr(pool, "connections", [pool])) - 1
        self._url = ",".join(urls)
        super().__init__(self._url, version, modules)

    @classmethod
    def detect_capabilities(cls, version: str, modules: set[str], queries: set[str]) -> Capabilities:
        # The score-ranker-processor (RRF) and the hybrid query's pagination_depth came with 2.19;
        # an unknown version (restricted credentials) falls back to fusing client-side.
        return Capabilities(
            rank_features=has_rank_features(modules, queries),
            sparse_vector_field=False,
            neural_sparse="neural_sparse" in queries,
            score_ranker="hybrid" in queries and version_tuple(version) >= (2, 19),
        )

    def _send(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None,
              ndjson: bool = False) -> Any:
        headers = {"content-type": "application/x-ndjson"} if ndjson else None
        try:
            reply = self.client.transport.perform_request(method, path, params=params, body=body, headers=headers)
        except opensearchpy.exceptions.ConnectionError as exc:
            unavailable = EngineTimeout if isinstance(exc, opensearchpy.exceptions.ConnectionTimeout) else EngineUnavailable
            raise unavailable(f"cannot reach OpenSearch at {self._url}: {exc.error}") from None
        except opensearchpy.exceptions.TransportError as exc:
            status = exc.status_code if isinstance(exc.status_code, int) else None
            raise EngineError(error_reason(exc.info, status or 0), status) from None
        if method == "HEAD" and reply is False:
            raise EngineError("not found", 404)
        return reply

    def close(self) -> None:
        self.client.close()
