"""Several URLs of one cluster: round-robin, failover, dead-node backoff, cluster checks, URL parsing.

Fake nodes (loopback HTTP servers answering the few requests a client makes) count what reaches
each of them, so the order of requests and a dead node's pause can be seen; both clients
(opensearch-py and elasticsearch-py) are driven through the same engine code.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from splade_es.errors import SpladeError
from splade_es.toolkit.cli import main
from splade_es.toolkit.engines.base import EngineError, EngineUnavailable
from splade_es.toolkit.engines.connect import connect, resolve_urls


class FakeNode:
    """A node of cluster ``uuid`` that answers ``status`` to ``_count`` and counts the requests."""

    def __init__(self, kind: str, uuid: str = "cluster-a", port: int = 0, root: bool = True) -> None:
        self.kind, self.uuid, self.status, self.counts, self.dead = kind, uuid, 200, 0, False
        self.root = root  # False: the root answers 405, as a distribution without its handler does
        self.cluster: list[FakeNode] = [self]
        node = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                if node.dead:  # a kept-alive connection of a killed node: closed without a reply
                    self.close_connection = True
                    return
                path = self.path.split("?")[0]
                status, body = 200, {}
                if path == "/" and not node.root:
                    status, body = 405, {"error": "Incorrect HTTP method for uri [/] and method [GET]"}
                elif path == "/":
                    body = {"cluster_name": "fake", "cluster_uuid": node.uuid,
                            "version": {"number": "8.19.0" if node.kind == "elasticsearch" else "2.19.6"}}
                elif path == "/_cluster/state/metadata":
                    body = {"cluster_name": "fake", "metadata": {"cluster_uuid": node.uuid}}
                elif path == "/_nodes/_all/http":  # sniffing: every node of the cluster, by publish address
                    body = {"nodes": {f"n{i}": {"http": {"publish_address": other.url.split("//")[1]},
                                                "roles": ["data", "ingest", "master"]}
                                      for i, other in enumerate(node.cluster)}}
                elif path.startswith("/_nodes"):
                    body = {"nodes": {"n": {"version": "8.19.0" if node.kind == "elasticsearch" else "2.19.6",
                                            "modules": [], "plugins": []}}}
                elif path.endswith("/_count"):
                    node.counts += 1
                    status, body = node.status, {"count": 7}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                if node.kind == "elasticsearch":
                    self.send_header("X-Elastic-Product", "Elasticsearch")
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_HEAD = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def die(self) -> None:
        """Refuse new connections and drop open ones without a reply, as a killed node does."""
        self.dead = True
        self.server.shutdown()
        self.server.server_close()

    def revive(self) -> FakeNode:
        return FakeNode(self.kind, self.uuid, int(self.url.rsplit(":", 1)[1]))


@pytest.fixture(params=["opensearch", "elasticsearch"])
def nodes(request):
    started = [FakeNode(request.param) for _ in range(3)]
    for node in started:
        node.cluster = started
    yield started
    for node in started:
        if not node.dead:
            node.die()


def _count(engine, times: int) -> None:
    for _ in range(times):
        assert engine.count("docs") == 7


def test_requests_go_round_robin_over_every_node(nodes):
    engine = connect(",".join(node.url for node in nodes))
    assert engine.info.kind == nodes[0].kind
    _count(engine, 9)
    assert [node.counts for node in nodes] == [3, 3, 3]


def test_a_dead_node_is_set_aside_then_tried_again_after_its_backoff(nodes, caplog, monkeypatch):
    monkeypatch.setattr(f"splade_es.toolkit.engines.{'opensearch' if nodes[0].kind == 'opensearch' else 'elastic'}"
                        ".DEAD_NODE_BACKOFF", 0.5)
    engine = connect([node.url for node in nodes])
    nodes[1].die()
    with caplog.at_level(logging.WARNING, logger="splade_es"):
        _count(engine, 8)  # every request answered: the one that met the dead node went on to the next
    assert nodes[0].counts + nodes[2].counts == 8
    reports = [r.getMessage() for r in caplog.records if r.name == "splade_es"]
    assert sum(nodes[1].url in message and "failed" in message for message in reports) == 1
    time.sleep(0.6)
    revived = nodes[1] = nodes[1].revive()
    with caplog.at_level(logging.WARNING, logger="splade_es"):
        _count(engine, 6)
    assert revived.counts >= 1, "the node was not tried again after its backoff"
    assert any(revived.url in r.getMessage() and "answers again" in r.getMessage() for r in caplog.records)


def test_sniffing_finds_the_nodes_not_given(nodes):
    engine = connect(nodes[0].url, sniff=True)
    _count(engine, 9)
    assert [node.counts for node in nodes] == [3, 3, 3]
    nodes[2].die()
    _count(engine, 4)  # and fails over between them like given ones


def test_a_503_goes_to_the_next_node(nodes):
    engine = connect([node.url for node in nodes])
    nodes[0].status = 503
    _count(engine, 6)
    assert nodes[0].counts <= 2 and nodes[1].counts + nodes[2].counts == 6


def test_one_url_keeps_no_client_retry_and_the_pool_stays_silent(nodes, caplog):
    engine = connect(nodes[0].url)
    nodes[0].status = 503
    with caplog.at_level(logging.WARNING, logger="splade_es"), pytest.raises(EngineError) as failure:
        engine.count("docs")
    assert failure.value.status == 503 and nodes[0].counts == 1
    nodes[0].status = 200
    with caplog.at_level(logging.WARNING, logger="splade_es"):
        _count(engine, 2)
    # No "other nodes" to send it to: the caller's one-line error is the whole story.
    assert not [r.getMessage() for r in caplog.records if r.name == "splade_es"]


def test_a_node_down_at_the_start_is_reported_and_kept(nodes, caplog):
    nodes[2].die()
    with caplog.at_level(logging.WARNING, logger="splade_es"):
        engine = connect([node.url for node in nodes])
    assert any(nodes[2].url in r.getMessage() for r in caplog.records)
    _count(engine, 4)
    assert nodes[0].counts + nodes[1].counts == 4


def test_no_node_answering_is_one_error(nodes):
    for node in nodes:
        node.die()
    with pytest.raises(EngineUnavailable, match="no node answers"):
        connect([node.url for node in nodes])


@pytest.mark.parametrize("root", [True, False], ids=["root", "root-405"])
def test_nodes_of_different_clusters_are_refused(nodes, root):
    """Also where the root endpoint answers 405: the cluster state names the cluster then."""
    first, other = FakeNode(nodes[0].kind, root=root), FakeNode(nodes[0].kind, uuid="cluster-b", root=root)
    try:
        with pytest.raises(EngineError, match=f"{other.url} are nodes of different clusters"):
            connect([first.url, other.url])
        assert connect(first.url).info.cluster == "cluster-a"
    finally:
        first.die()
        other.die()


def test_different_credentials_in_the_urls_are_refused(nodes):
    with pytest.raises(EngineError, match="different user:password@"):
        connect([nodes[0].url.replace("://", "://a:x@"), nodes[1].url.replace("://", "://b:y@")])


def test_urls_repeat_split_on_commas_and_come_from_the_environment(monkeypatch):
    assert resolve_urls(["http://a:9200", " http://b:9200 ,http://c:9200,"]) == \
        ["http://a:9200", "http://b:9200", "http://c:9200"]
    monkeypatch.setenv("SPLADE_ES_URL", "http://a:9200,http://b:9200")
    assert resolve_urls(None) == resolve_urls(()) == ["http://a:9200", "http://b:9200"]
    monkeypatch.setenv("SPLADE_ES_URL", " ")
    assert resolve_urls(None) == []


def test_the_cli_passes_every_url_and_sniff(monkeypatch):
    seen = {}

    def fake_connect(url, engine_kind, data_dir, credentials, sniff=False):
        seen.update(urls=resolve_urls(url), sniff=sniff)
        raise SpladeError("stop here")

    monkeypatch.setattr("splade_es.toolkit.engines.connect.connect", fake_connect)
    result = CliRunner().invoke(main, ["search", "--index", "i", "--url", "http://a:1", "--url",
                                       "http://b:2,http://c:3", "--sniff", "query"])
    assert result.exit_code == 1 and "stop here" in result.output
    assert seen == {"urls": ["http://a:1", "http://b:2", "http://c:3"], "sniff": True}


def test_ingest_with_no_node_answering_fails_fast_in_one_line(tmp_path):
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "text": "wing"}\n')
    (tmp_path / "vectors.jsonl").write_text('{"id": "1", "features": {"wing": 1.0}}\n')
    started = time.monotonic()
    result = CliRunner().invoke(main, ["ingest", "--index", "i", "--corpus", str(tmp_path / "corpus.jsonl"), "--model",
                                       "m", "--vectors", str(tmp_path / "vectors.jsonl"), "--url", "http://127.0.0.1:1,http://127.0.0.1:2",
                                       "--state-dir", str(tmp_path)])
    assert result.exit_code == 1 and time.monotonic() - started < 30
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "no node answers" in errors[0] and "127.0.0.1:2" in errors[0]


def test_a_node_set_aside_stays_aside_when_sniffing_rebuilds_the_opensearch_pool():
    """opensearch-py rebuilds its pool on each sniff with the same connection objects; a node the
    cluster still lists right after it died must not come back live in the new pool (it took the
    request's remaining tries: the sniffing test above failed 2 runs in 5)."""
    from opensearchpy import Urllib3HttpConnection

    from splade_es.toolkit.engines.opensearch import _Pool

    connections = [(Urllib3HttpConnection(host="127.0.0.1", port=port), {"host": "127.0.0.1", "port": port})
                   for port in (9201, 9202, 9203)]
    dead = connections[2][0]
    first = _Pool(connections, dead_timeout=60)
    first.mark_dead(dead)
    rebuilt = _Pool(connections, dead_timeout=60)
    assert dead not in rebuilt.connections and len(rebuilt.connections) == 2
    rebuilt.mark_live(dead)
    assert dead in _Pool(connections, dead_timeout=60).connections
