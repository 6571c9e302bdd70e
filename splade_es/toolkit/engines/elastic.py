"""Elasticsearch 8.x / 9.x through elasticsearch-py 8.x."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import elastic_transport
import elasticsearch

from splade_es.toolkit.engines.base import Capabilities, EngineError, EngineTimeout, EngineUnavailable
from splade_es.toolkit.engines.credentials import Credentials
from splade_es.toolkit.engines.pool import (DEAD_NODE_BACKOFF, MAX_DEAD_NODE_BACKOFF, ReportsDeadNodes,
                                            failover_options)
from splade_es.toolkit.engines.rest import RestEngine, error_reason, has_rank_features, url_part

_JSON = "application/vnd.elasticsearch+json; compatible-with=8"
_NDJSON = "application/vnd.elasticsearch+x-ndjson; compatible-with=8"


def version_tuple(version: str) -> tuple[int, int]:
    """``(major, minor)``; ``(0, 0)`` when the server did not say (restricted credentials)."""
    major, minor, *_ = (version.split("-")[0].split(".") + ["0", "0"])
    return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else (0, 0)


class _Pool(ReportsDeadNodes, elastic_transport.NodePool):
    pass


class ElasticsearchEngine(RestEngine):
    kind = "elasticsearch"

    def __init__(self, urls: str | Sequence[str], credentials: Credentials, version: str, modules: set[str],
                 timeout: float, sniff: bool = False) -> None:
        urls = [urls] if isinstance(urls, str) else list(urls)
        auth: dict[str, Any] = {}
        if credentials.api_key:
            auth["api_key"] = credentials.api_key
        elif credentials.username:
            auth["basic_auth"] = (credentials.username, credentials.password or "")
        sniffing = {"sniff_on_start": True, "sniff_on_node_failure": True, "sniff_timeout": timeout} if sniff else {}
        self.client = elasticsearch.Elasticsearch(urls, request_timeout=timeout, **failover_options(urls), **sniffing,
                                                  node_pool_class=_Pool, dead_node_backoff_factor=DEAD_NODE_BACKOFF,
                                                  max_dead_node_backoff=MAX_DEAD_NODE_BACKOFF, **auth,
                                                  **credentials.tls_options(urls[0]))
        if sniff:  # each request may try every node found (the client passes its own setting per request)
            self.client = self.client.options(max_retries=len(self.client.transport.node_pool) - 1)
        self._url = ",".join(urls)
        super().__init__(self._url, version, modules)

    @classmethod
    def detect_capabilities(cls, version: str, modules: set[str], queries: set[str]) -> Capabilities:
        # The sparse_vector field (8.11) predates the query of that name (8.15), which came with pruning_config.
        return Capabilities(
            rank_features=has_rank_features(modules, queries),
            sparse_vector_field=version_tuple(version) >= (8, 11) or "sparse_vector" in queries,
            sparse_vector_query="sparse_vector" in queries,
            token_pruning="sparse_vector" in queries,
        )

    def _send(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None,
              ndjson: bool = False) -> Any:
        headers = {"accept": _JSON}
        if body is not None:
            headers["content-type"] = _NDJSON if ndjson else _JSON
        try:
            reply = self.client.perform_request(method, path, params=params, headers=headers, body=body)
        except elasticsearch.ApiError as exc:
            raise EngineError(error_reason(exc.body, exc.meta.status), exc.meta.status) from None
        except elastic_transport.TransportError as exc:
            unavailable = EngineTimeout if isinstance(exc, elastic_transport.ConnectionTimeout) else EngineUnavailable
            raise unavailable(f"cannot reach Elasticsearch at {self._url}: {exc.message}") from None
        if method == "HEAD":
            if reply.meta.status == 404:
                raise EngineError("not found", 404)
            return None
        return reply.body

    def has_inference(self, inference_id: str) -> bool:
        """An inference endpoint (8.11+) or, failing that, a trained model of that id."""
        for path, key in ((f"/_inference/{url_part(inference_id)}", "endpoints"),
                          (f"/_ml/trained_models/{url_part(inference_id)}", "trained_model_configs")):
            try:
                reply = self._send("GET", path)
            except EngineError as exc:
                if exc.status in (400, 404, 405, 410):  # no such endpoint, or no inference API at all
                    continue
                raise
            if reply.get(key) or reply.get("inference_id") or reply.get("model_id"):
                return True
        return False

    def put_pipeline(self, name: str, body: dict[str, Any]) -> None:
        self._send("PUT", f"/_ingest/pipeline/{url_part(name)}", body)

    def close(self) -> None:
        self.client.close()

