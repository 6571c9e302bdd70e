"""``splade-es serve``: the query encoder loaded once, behind HTTP.

``service`` does a request's work (the same :class:`~splade_es.toolkit.query.pipeline.QueryPipeline`
as ``splade-es search``), ``requests`` checks bodies, ``batching`` gathers concurrent queries into
one encoder call, ``metrics`` counts for ``GET /metrics``, ``app`` maps HTTP onto the service
(and serves the inspection page in ``page/``), ``server`` listens.
"""

from splade_es.toolkit.serve.app import create_app
from splade_es.toolkit.serve.server import Server
from splade_es.toolkit.serve.service import SearchService, ServiceSettings

__all__ = ["SearchService", "Server", "ServiceSettings", "create_app"]
