"""Engine detection against the real nodes: kind, version and capabilities read from the server."""

from __future__ import annotations

import pytest
import urllib3

from splade_es.toolkit.engines.base import EngineError
from splade_es.toolkit.engines.connect import connect
from toolkit.fault_proxy import FaultProxy


@pytest.mark.parametrize("target", ["opensearch", "elasticsearch"], indirect=True)
@pytest.mark.parametrize("root_allowed", [True, False])
def test_credentials_without_monitor_privilege_still_detect_kind_and_capabilities(target, root_allowed):
    """A user who may search and index but not read node info (HTTP 403 on _nodes, maybe on /)."""
    direct = target["engine"].info

    def refuse(method: str, path: str) -> int | None:
        return 403 if path.startswith("/_nodes") or (path == "/" and not root_allowed) else None

    with FaultProxy(target["url"], refuse=refuse) as proxy:
        engine = connect(proxy.url)
        try:
            restricted = engine.info
        finally:
            engine.close()
    assert proxy.injected >= 1 + (not root_allowed)
    assert restricted.kind == direct.kind == target["kind"]
    root_answers = urllib3.request("GET", target["url"]).status == 200  # the ES integ-test node has no GET /
    assert restricted.version == (direct.version if root_allowed and root_answers else "unknown")
    assert restricted.capabilities == direct.capabilities


@pytest.mark.parametrize("target", ["opensearch", "elasticsearch"], indirect=True)
def test_capabilities_match_what_the_node_can_do(target):
    """Detected capabilities agree with the node's own answer to a mapping that uses each type."""
    engine, index = target["engine"], target["index"]
    for field_type, detected in (("rank_features", engine.info.capabilities.rank_features),
                                 ("sparse_vector", engine.info.capabilities.sparse_vector_field)):
        try:
            engine.create_index(index, {"mappings": {"properties": {"v": {"type": field_type}}}})
        except EngineError as exc:
            assert not detected, f"{field_type} detected but refused: {exc}"
        else:
            assert detected, f"{field_type} not detected but accepted"
            engine.delete_index(index)


def test_wrong_credentials_are_one_clear_error():
    with FaultProxy("http://127.0.0.1:9", refuse=lambda method, path: 401) as proxy:
        with pytest.raises(EngineError, match=r"refused the credentials \(HTTP 401\)"):
            connect(proxy.url, credentials=None)


def test_the_cluster_uuid_names_the_engine_and_only_an_unreadable_one_falls_back_to_the_url():
    """Checkpoints follow the cluster: its uuid from the root endpoint, or from the cluster state
    where the root answers 405; the URL only where neither may be read (credentials). An outage,
    a 408, 429 or 5xx is an error: falling back then would silently key the run by URL."""
    from splade_es.toolkit.engines.base import EngineError, EngineUnavailable
    from splade_es.toolkit.engines.opensearch import OpenSearchEngine

    def engine_answering(reply, state=None):
        engine = object.__new__(OpenSearchEngine)

        def send(method, path, body=None, params=None, ndjson=False):
            answer = reply if path == "/" else state
            if isinstance(answer, Exception):
                raise answer
            return answer
        engine._send = send
        return engine

    assert engine_answering({"cluster_uuid": "u-1"})._cluster_uuid() == "u-1"
    assert engine_answering({"cluster_uuid": "_na_"})._cluster_uuid() is None  # not formed yet
    root_405 = EngineError("Incorrect HTTP method for uri [/]", 405)  # a distribution without the root handler
    assert engine_answering(root_405, {"metadata": {"cluster_uuid": "u-2"}})._cluster_uuid() == "u-2"
    for refusal in (EngineError("forbidden", 403), root_405):
        assert engine_answering(refusal, EngineError("forbidden", 403))._cluster_uuid() is None
    for failure in (EngineUnavailable("cannot reach"), EngineError("overloaded", 503),
                    EngineError("too_many_requests", 429), EngineError("timeout", 408)):
        with pytest.raises(EngineError):
            engine_answering(failure)._cluster_uuid()
        with pytest.raises(EngineError):  # the same when the cluster state is the one that fails
            engine_answering(root_405, failure)._cluster_uuid()


def test_a_client_timeout_is_told_apart_from_an_unreachable_engine():
    """A request that timed out may still be running in the engine (a force merge): both clients'
    timeouts become EngineTimeout, other connection failures stay EngineUnavailable."""
    from types import SimpleNamespace

    import elastic_transport
    import opensearchpy

    from splade_es.toolkit.engines.base import EngineTimeout, EngineUnavailable
    from splade_es.toolkit.engines.elastic import ElasticsearchEngine
    from splade_es.toolkit.engines.opensearch import OpenSearchEngine

    def failing(kind, error):
        engine = object.__new__(kind)
        engine._url = "http://node:9200"

        def perform_request(*args, **kwargs):
            raise error
        client = SimpleNamespace(perform_request=perform_request)
        engine.client = SimpleNamespace(transport=client, perform_request=perform_request)
        return engine

    cases = [(OpenSearchEngine, opensearchpy.ConnectionTimeout("TIMEOUT", "read timed out", None), EngineTimeout),
             (OpenSearchEngine, opensearchpy.ConnectionError("N/A", "refused", None), EngineUnavailable),
             (ElasticsearchEngine, elastic_transport.ConnectionTimeout("read timed out"), EngineTimeout),
             (ElasticsearchEngine, elastic_transport.ConnectionError("refused"), EngineUnavailable)]
    for kind, error, expected in cases:
        with pytest.raises(EngineUnavailable) as raised:
            failing(kind, error)._send("POST", "/i/_forcemerge")
        assert type(raised.value) is expected, (kind.__name__, error)
