"""Several nodes of one cluster behind one client: failover, dead-node backoff, optional sniffing.

Both official clients already keep a pool of nodes (opensearch-py's ``ConnectionPool``,
elastic-transport's ``NodePool``): requests go round-robin over the live nodes; a node that
fails is put aside for a while that doubles with each failure in a row and is tried again
after it (or at once, when every node is down). We configure the two alike rather than write a
third pool: with one URL nothing changes (no client-level retry, the callers' own backoff
applies, as before); with several, a request that meets a connection error or a 502/503/504
goes to the next node, each node tried at most once per request. A timed-out request is not
re-sent (the engine may still apply it). Sniffing (``sniff``) reads the cluster's other nodes
from ``_nodes/http`` at the start and again when a node fails.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

FAILOVER_STATUSES = (502, 503, 504)
DEAD_NODE_BACKOFF = 1.0  # seconds a failed node is set aside, doubled per failure in a row ...
MAX_DEAD_NODE_BACKOFF = 30.0  # ... up to this (opensearch-py: 1 s x 2^5 = 32 s)
_log = logging.getLogger("splade_es")


def failover_options(urls: Sequence[str]) -> dict[str, Any]:
    """Retry settings both clients take: one try per node, and none with a single node."""
    return {"max_retries": max(len(urls) - 1, 0), "retry_on_status": FAILOVER_STATUSES if len(urls) > 1 else (),
            "retry_on_timeout": False}


class ReportsDeadNodes:
    """A node pool mixin: one warning when a node starts failing, one when it answers again,
    instead of the clients' per-request tracebacks. With a single node there is nowhere else to
    go: the caller's own error says what failed, so the pool stays silent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._down: set[str] = set()
        self._lock = threading.Lock()

    def mark_dead(self, node: Any, *args: Any, **kwargs: Any) -> None:
        super().mark_dead(node, *args, **kwargs)
        name = node_url(node)
        with self._lock:
            first = name not in self._down
            self._down.add(name)
        if first and self._nodes() > 1:
            _log.warning("%s failed: its requests go to the other nodes (it is tried again after %.0fs, "
                         "then less often)", name, DEAD_NODE_BACKOFF)

    def mark_live(self, node: Any) -> None:
        super().mark_live(node)
        name = node_url(node)
        if name in self._down:
            with self._lock:
                self._down.discard(name)
            if self._nodes() > 1:
                _log.warning("%s answers again", name)

    def _nodes(self) -> int:
        """How many nodes the pool holds (sniffed ones included): elastic-transport's ``all()``,
        opensearch-py's ``orig_connections``."""
        return len(self.all()) if hasattr(self, "all") else len(getattr(self, "orig_connections", ()))


def node_url(node: Any) -> str:
    """A pool member's base URL (elastic-transport nodes have ``base_url``, opensearch-py connections ``host``)."""
    return str(getattr(node, "base_url", None) or node.host)


def quiet_client_logs() -> None:
    """The clients log each failed request with a traceback; :class:`ReportsDeadNodes` says it in one line."""
    for name in ("opensearch", "elastic_transport"):
        logging.getLogger(name).setLevel(logging.ERROR)
