"""`splade-es serve`: the HTTP service against the local engine and a real OpenSearch node.

The service must answer exactly what `splade-es search` and the Searcher answer, batch
concurrent queries, refuse bad input with a 4xx, survive engine and model failures with a
5xx that names no secret, and serve an inspection page that works in a real browser.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import ExitStack
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from click.testing import CliRunner

from conftest import SHARED_DATA, engine_url
from splade_es.model import SparseEncoder
from splade_es.toolkit.cli import main
from splade_es.toolkit.engines.base import EngineError
from splade_es.toolkit.engines.connect import connect
from splade_es.toolkit.engines.credentials import Credentials
from splade_es.toolkit.query.pipeline import QueryPipeline
from splade_es.toolkit.query.searcher import Searcher
from splade_es.toolkit.serve import SearchService, Server, ServiceSettings, create_app
from splade_es.toolkit.serve.app import PAGE_DIR
from splade_es.toolkit.serve.batching import Batcher
from toolkit.fault_proxy import FaultProxy

SUBSET_DOCS = 200
QUERIES = ["boundary layer transition on a flat plate", "heat transfer at supersonic speed", "lift of a wing body"]
PASSWORD = "S3rve-pa55word"
USERNAME = "serve-user"


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serve-corpus")
    lines = (SHARED_DATA / "cranfield" / "corpus.jsonl").read_text().splitlines()[:SUBSET_DOCS]
    (out / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    return out


def _bundle(tiny_bert_dir, directory: Path) -> Path:
    return SparseEncoder.from_pretrained(str(tiny_bert_dir), device="cpu").save_pretrained(directory)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_bert_dir) -> Path:
    """A tiny masked-LM bundle: fast enough to encode the subset in a second."""
    return _bundle(tiny_bert_dir, tmp_path_factory.mktemp("serve-model") / "bundle")


@pytest.fixture(scope="module")
def vectors_file(bundle, corpus, tmp_path_factory) -> Path:
    from splade_es.io.corpus import read_corpus, resolve_corpus

    documents = list(read_corpus(resolve_corpus(corpus, None, None)))
    vectors = SparseEncoder.from_pretrained(str(bundle), device="cpu").encode_documents([d.text for d in documents])
    path = tmp_path_factory.mktemp("serve-vectors") / "vectors.jsonl"
    path.write_text("".join(json.dumps({"id": d.id, "features": v.to_features()}) + "\n"
                            for d, v in zip(documents, vectors)))
    return path


def _ingest(model: Path, corpus: Path, vectors: Path, args: list[str], state: Path) -> str:
    index = f"serve-{uuid.uuid4().hex[:8]}"
    result = CliRunner().invoke(main, ["ingest", "--index", index, "--corpus", str(corpus), "--model", str(model),
                                       "--vectors", str(vectors), "--no-progress", "--state-dir", str(state), *args])
    assert result.exit_code == 0, result.output
    return index


@pytest.fixture(scope="module", params=["local", "opensearch"])
def indexed(request, bundle, corpus, vectors_file, tmp_path_factory):
    """The subset, indexed with the bundle's vectors, in the local engine or a real OpenSearch node."""
    if request.param == "local":
        data_dir = tmp_path_factory.mktemp("serve-local")
        args, engine = ["--data-dir", str(data_dir)], connect(None, "local", data_dir)
    else:
        url = engine_url("opensearch")
        args, engine = ["--url", url], connect(url)
    index = _ingest(bundle, corpus, vectors_file, args, tmp_path_factory.mktemp("serve-state"))
    yield {"kind": request.param, "engine": engine, "index": index, "args": args}
    if request.param != "local":
        engine.delete_index(index)
    engine.close()


@pytest.fixture(scope="module")
def pipeline(indexed) -> QueryPipeline:
    return QueryPipeline.open(Searcher(indexed["engine"], indexed["index"]))


@pytest.fixture(scope="module")
def served(pipeline):
    """The service on a free loopback port for the module's tests."""
    service = SearchService(pipeline, ServiceSettings(max_body_bytes=64 * 1024))
    with Server(create_app(service), "127.0.0.1", 0).running() as server:
        yield {"url": server.url, "service": service, "pipeline": pipeline}


# ---------------------------------------------------------------- a client
def call(url: str, method: str, path: str, body=None, raw: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict | str]:
    """One request over a fresh connection: the status and the decoded body."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        connection.request(method, path, body=payload, headers={"content-type": "application/json", **(headers or {})})
        reply = connection.getresponse()
        data = reply.read()
    finally:
        connection.close()
    text = data.decode()
    return reply.status, (json.loads(text) if reply.getheader("content-type", "").startswith("application/json")
                          else text)


def _stable(report: dict) -> dict:
    """A search report without its timings."""
    return {key: value for key, value in report.items() if key not in ("took_ms", "encode_ms")}


def _without_origin(hits: list[dict]) -> list[dict]:
    """Hits as :meth:`Hit.to_dict` has them: without the ``expansion`` flag the report adds."""
    return [{**hit, "contributions": [{k: v for k, v in c.items() if k != "expansion"} for c in hit["contributions"]]}
            for hit in hits]


def _cli_search(indexed, *args: str) -> dict:
    result = CliRunner().invoke(main, ["search", "--index", indexed["index"], *indexed["args"], "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# ---------------------------------------------------------------- answers
def test_search_answers_exactly_what_the_cli_and_the_searcher_answer(indexed, served):
    searcher = Searcher(indexed["engine"], indexed["index"])
    for query in QUERIES:
        status, report = call(served["url"], "POST", "/search", {"query": query, "k": 7, "explain": True})
        assert status == 200, report
        assert len(report["hits"]) == 7 and report["hits"][0]["contributions"]
        assert _stable(report) == _stable(_cli_search(indexed, "--k", "7", "--explain", query))
        vector = {term: value["weight"] for term, value in report["query_vector"].items()}
        direct = searcher.search(vector, 7, explain=True)
        assert _without_origin(report["hits"]) == [hit.to_dict() for hit in direct.hits]
    query, engine, index = QUERIES[0], indexed["engine"], indexed["index"]
    term = engine.get(index, report["hits"][0]["id"])["splade_terms"][0]  # a keyword some documents hold
    hybrid = {"query": query, "k": 5, "hybrid": "rrf", "filter": {"splade_terms": term}}
    status, report = call(served["url"], "POST", "/search", hybrid)
    assert status == 200 and report["hybrid"] == "rrf" and report["hits"], report
    assert all(term in engine.get(index, hit["id"])["splade_terms"] for hit in report["hits"])
    assert _stable(report) == _stable(_cli_search(indexed, "--k", "5", "--hybrid", "rrf", "--filter",
                                                  f"splade_terms={term}", query))
    status, report = call(served["url"], "POST", "/search", {"query": query, "k": 5, "method": "bm25"})
    assert status == 200 and report["form"] == "bm25"
    direct = searcher.bm25_search(query, 5)
    assert [(h["id"], h["score"]) for h in report["hits"]] == [(h.id, h.score) for h in direct.hits]


def test_encode_returns_the_models_vectors(served, bundle):
    encoder = SparseEncoder.from_pretrained(str(bundle), device="cpu")
    texts = ["shock wave interaction", "the lift of a delta wing at supersonic speed"]
    status, reply = call(served["url"], "POST", "/encode", {"texts": texts, "query": True})
    assert status == 200 and reply["query"] is True
    assert reply["vectors"] == [v.to_features() for v in encoder.encode_queries(texts)]
    status, reply = call(served["url"], "POST", "/encode", {"texts": texts})
    assert status == 200 and reply["query"] is False
    documents = [v.to_features() for v in encoder.encode_documents(texts)]
    assert reply["vectors"] == documents and documents != [v.to_features() for v in encoder.encode_queries(texts)]


def _samples(url: str) -> dict[tuple[str, tuple], float]:
    from prometheus_client.parser import text_string_to_metric_families

    status, text = call(url, "GET", "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_health_and_metrics_report_what_was_served(indexed, served):
    status, health = call(served["url"], "GET", "/health")
    assert status == 200 and health["status"] == "ok"
    assert health["index"] == indexed["index"] and health["engine"]["kind"] == indexed["engine"].info.kind
    assert health["model"] == served["pipeline"].model and health["query_encoder"] == "model"
    from splade_es import __version__
    assert health["version"] == __version__
    before = _samples(served["url"])
    for query in QUERIES:
        assert call(served["url"], "POST", "/search", {"query": query})[0] == 200
    assert call(served["url"], "POST", "/search", {"query": " "})[0] == 400
    after = _samples(served["url"])

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("splade_es_requests_total", route="search", status="200") == len(QUERIES)
    assert grew("splade_es_requests_total", route="search", status="400") == 1
    assert grew("splade_es_request_seconds_count", route="search") == len(QUERIES) + 1
    assert grew("splade_es_request_seconds_bucket", route="search", le="+Inf") == len(QUERIES) + 1
    assert grew("splade_es_encode_batch_texts_sum") == len(QUERIES)  # the bad one never reached the model


# ---------------------------------------------------------------- batching
def test_texts_arriving_together_share_model_calls_and_a_lone_text_waits_at_most_the_window():
    calls: list[list[str]] = []

    def encode(texts: list[str], query: bool) -> list[str]:
        calls.append(texts)
        time.sleep(0.02)
        return [text.upper() for text in texts]

    async def scenario() -> tuple[list[list[str]], float, float]:
        batcher: Batcher[str] = Batcher(encode, max_batch=8, window_s=0.5)
        await batcher.start()
        try:
            together = await asyncio.gather(*(batcher.encode([f"q{i}"]) for i in range(16)))
            started = time.perf_counter()
            await batcher.encode(["alone"])
            lone = time.perf_counter() - started
            unbatched: Batcher[str] = Batcher(encode, max_batch=1, window_s=0.5)
            await unbatched.start()
            started = time.perf_counter()
            await unbatched.encode(["alone"])
            immediate = time.perf_counter() - started
            await unbatched.stop()
        finally:
            await batcher.stop()
        return together, lone, immediate

    together, lone, immediate = asyncio.run(scenario())
    assert together == [[f"Q{i}"] for i in range(16)]  # each caller gets its own text back, in order
    assert [len(batch) for batch in calls[:2]] == [8, 8], calls  # 16 at once: two full batches, not 16 calls
    assert 0.5 <= lone < 0.5 + 0.02 + 0.25  # alone: the window, the call, and no second window
    assert immediate < 0.25  # a full batch (max 1) is not held for the window


def test_one_bad_text_fails_only_its_request_and_a_broken_batch_answers_every_waiter():
    """A failing batch is retried text by text, so only the request whose text fails hears of it;
    an error after the model call (here: the metrics hook) answers that batch's requests instead
    of leaving them waiting, and the worker goes on; past ``max_waiting`` requests are refused."""
    from splade_es.toolkit.serve.batching import Overloaded

    def encode(texts: list[str], query: bool) -> list[str]:
        if "bad" in texts:
            raise ValueError("cannot encode 'bad'")
        return [text.upper() for text in texts]

    hooks = {"raise": True}

    def on_batch(texts: int, seconds: float) -> None:
        if hooks.pop("raise", False):
            raise RuntimeError("metrics hook broke")

    async def scenario():
        batcher: Batcher[str] = Batcher(encode, max_batch=8, window_s=0.2, on_batch=on_batch, max_waiting=3)
        await batcher.start()
        try:
            broken = await asyncio.wait_for(asyncio.gather(batcher.encode(["a"]), batcher.encode(["b"]),
                                                           return_exceptions=True), 5)
            mixed = await asyncio.wait_for(asyncio.gather(batcher.encode(["ok1"]), batcher.encode(["bad"]),
                                                          batcher.encode(["ok2"]), return_exceptions=True), 5)
            crowd = await asyncio.gather(*(batcher.encode([f"c{i}"]) for i in range(4)), return_exceptions=True)
            after = await asyncio.wait_for(batcher.encode(["still"]), 5)
        finally:
            await batcher.stop()
        return broken, mixed, crowd, after

    broken, mixed, crowd, after = asyncio.run(scenario())
    assert all(isinstance(r, RuntimeError) and "metrics hook broke" in str(r) for r in broken), broken
    assert mixed[0] == ["OK1"] and mixed[2] == ["OK2"] and isinstance(mixed[1], ValueError), mixed
    assert [r for r in crowd if isinstance(r, Overloaded)] and ["C0"] in crowd, crowd
    assert after == ["STILL"]


def test_concurrent_searches_are_encoded_together_and_answer_as_alone(served, monkeypatch):
    pipeline = served["pipeline"]
    sizes: list[int] = []
    encode = pipeline.encode

    def counted(texts, show_progress=None):
        sizes.append(len(texts))
        return encode(texts, show_progress)

    queries = [f"{word} flow over a {shape}" for word in ("laminar", "turbulent", "supersonic")
               for shape in ("cone", "plate", "cylinder", "wing")]
    alone = {q: call(served["url"], "POST", "/search", {"query": q, "k": 5})[1] for q in queries}
    monkeypatch.setattr(pipeline, "encode", counted)
    service = SearchService(pipeline, ServiceSettings(max_batch=8, window_ms=100))
    answers: dict[str, dict] = {}
    with Server(create_app(service), "127.0.0.1", 0).running() as server:
        start = threading.Barrier(len(queries))

        def client(query: str) -> None:
            start.wait()
            status, answers[query] = call(server.url, "POST", "/search", {"query": query, "k": 5})
            assert status == 200

        threads = [threading.Thread(target=client, args=(q,)) for q in queries]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert sum(sizes) == len(queries) and max(sizes) <= 8
    assert len(sizes) < len(queries) and max(sizes) > 1, sizes
    for query in queries:  # batched with others, a query still gets its own hits (padding moves floats by ~1e-7)
        got, want = answers[query]["hits"], alone[query]["hits"]
        assert [h["id"] for h in got] == [h["id"] for h in want]
        assert [h["score"] for h in got] == pytest.approx([h["score"] for h in want], rel=1e-4)


# ---------------------------------------------------------------- failures
@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("/search", {"query": "  "}, 400, "'query' is empty"),
    ("/search", {"k": 3}, 400, "'query' is missing"),
    ("/search", {"query": "wing", "k": 0}, 400, "'k' must be between 1 and 100"),
    ("/search", {"query": "wing", "k": 101}, 400, "'k' must be between 1 and 100"),
    ("/search", {"query": "wing", "k": "5"}, 400, "'k' must be an integer, got a string"),
    ("/search", {"query": "wing", "k": True}, 400, "'k' must be an integer, got a boolean"),
    ("/search", {"query": "wing", "filter": {"colour": "red"}}, 400, "unknown field 'colour' in 'filter'"),
    ("/search", {"query": "wing", "filter": {"title": {"x": 1}}}, 400, "'filter.title' must be"),
    ("/search", {"query": "wing", "size": 3}, 400, "unknown field(s) 'size'"),
    ("/search", {"query": "wing", "hybrid": "max"}, 400, "'hybrid' must be one of rrf, linear"),
    ("/search", {"query": "wing", "method": "bm25", "hybrid": "rrf"}, 400, "leave it out with method bm25"),
    ("/search", {"query": "wing", "method": "elser"}, 400, "'method' must be one of splade, bm25"),
    ("/search", ["wing"], 400, "the body must be a JSON object, got a list"),
    ("/search", b"{not json", 400, "the body is not valid JSON"),
    ("/search", b"", 400, "the body is empty"),
    ("/encode", {"texts": []}, 400, "'texts' must hold 1 to 64 strings"),
    ("/encode", {"texts": ["a", 3]}, 400, "'texts[1]' must be a string, got a number"),
    ("/search", b"x" * (64 * 1024 + 1), 413, "this service takes at most 65536"),
    ("/nowhere", {}, 404, "Not Found: POST /nowhere"),
    ("/health", {}, 405, "Method Not Allowed: POST /health"),
])
def test_bad_input_is_a_4xx_with_one_line_and_the_service_keeps_serving(served, path, body, status, message):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    got, reply = call(served["url"], "POST", path, raw=raw)
    assert got == status, reply
    assert list(reply) == ["error"] and message in reply["error"] and "\n" not in reply["error"]
    assert call(served["url"], "POST", "/search", {"query": QUERIES[0], "k": 2})[0] == 200


def test_a_streamed_body_over_the_limit_is_refused_without_reading_it_all(served):
    """No content-length (chunked): the service counts as it reads and stops at the limit."""
    parts = urlsplit(served["url"])
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    chunks = (b" " * 16384 for _ in range(64))  # 1 MiB, 16x the limit
    try:
        connection.request("POST", "/search", body=chunks, encode_chunked=True)
        reply = connection.getresponse()
        assert reply.status == 413 and "over 65536 bytes" in json.loads(reply.read())["error"]
    except (BrokenPipeError, ConnectionResetError):  # refused mid-body: the server closed the connection
        pass
    finally:
        connection.close()
    assert call(served["url"], "POST", "/search", {"query": QUERIES[0], "k": 2})[0] == 200


def test_a_failing_engine_is_a_5xx_naming_no_secret_then_good_answers(pipeline, indexed):
    """OpenSearch through a proxy that fails its searches, with credentials in the URL; the local
    engine with its search raising a message that quotes the password."""
    credentials = Credentials(username=USERNAME, password=PASSWORD)
    failing: dict[str, object] = {"mode": None}
    with ExitStack() as stack:
        if indexed["kind"] == "local":
            engine = stack.enter_context(connect(None, "local", indexed["args"][1]))
            search = engine.search

            def flaky(index, body):
                if failing["mode"]:
                    raise EngineError(f"disk failed reading with {PASSWORD} in hand", 500)
                return search(index, body)

            engine.search = flaky
            modes = [("fail", 502)]
        else:
            proxy = stack.enter_context(FaultProxy(engine_url("opensearch"), refuse=lambda method, path: (
                failing["mode"] if path.endswith("/_search") else None)))
            host = proxy.url.removeprefix("http://")
            engine = stack.enter_context(connect(f"http://{USERNAME}:{PASSWORD}@{host}", credentials=credentials))
            modes = [(503, 502), ("drop", 503)]
        service = SearchService(QueryPipeline(Searcher(engine, indexed["index"]), pipeline.encoder, pipeline.model))
        secrets = credentials.secrets()
        server = stack.enter_context(Server(create_app(service, secrets), "127.0.0.1", 0).running())
        for mode, status in modes:
            failing["mode"] = mode
            got, reply = call(server.url, "POST", "/search", {"query": QUERIES[1]})
            assert got == status, reply
            assert reply["error"].startswith("the engine") and "\n" not in reply["error"]
            assert not any(secret in reply["error"] for secret in secrets), reply
            failing["mode"] = None
            got, reply = call(server.url, "POST", "/search", {"query": QUERIES[1], "k": 3})
            assert got == 200 and len(reply["hits"]) == 3


def test_a_failing_model_is_a_500_then_good_answers(served, monkeypatch):
    encoder = served["pipeline"].encoder
    encode_queries = encoder.encode_queries
    failures = iter([RuntimeError("out of memory")])

    def flaky(*args, **kwargs):
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return encode_queries(*args, **kwargs)

    monkeypatch.setattr(encoder, "encode_queries", flaky)
    status, reply = call(served["url"], "POST", "/search", {"query": QUERIES[2]})
    assert status == 500 and reply == {"error": "internal error: RuntimeError: out of memory"}
    status, reply = call(served["url"], "POST", "/search", {"query": QUERIES[2], "k": 4})
    assert status == 200 and len(reply["hits"]) == 4


# ---------------------------------------------------------------- static queries, the command
@pytest.fixture(scope="module")
def static_index(tiny_bert_dir, corpus, vectors_file, tmp_path_factory) -> dict:
    """An index built with a bundle whose queries then became static (``splade-es idf``)."""
    data_dir = tmp_path_factory.mktemp("serve-static")
    bundle = _bundle(tiny_bert_dir, data_dir / "bundle")
    index = _ingest(bundle, corpus, vectors_file, ["--data-dir", str(data_dir)], data_dir / "state")
    result = CliRunner().invoke(main, ["idf", "--model", str(bundle), "--corpus", str(corpus)])
    assert result.exit_code == 0, result.output
    return {"index": index, "args": ["--data-dir", str(data_dir)], "data_dir": data_dir, "bundle": bundle}


def test_a_static_query_bundle_is_served_without_its_backbone(static_index, no_backbone):
    engine = connect(None, "local", static_index["data_dir"])
    pipeline = QueryPipeline.open(Searcher(engine, static_index["index"]))
    assert pipeline.static
    with Server(create_app(SearchService(pipeline)), "127.0.0.1", 0).running() as server:
        status, health = call(server.url, "GET", "/health")
        assert health["query_encoder"] == "static"
        status, report = call(server.url, "POST", "/search", {"query": QUERIES[0], "explain": True})
        assert status == 200 and report["hits"]
        assert not any(term["expansion"] for term in report["query_vector"].values())
        assert _stable(report) == _stable(_cli_search(static_index, "--explain", QUERIES[0]))
        status, reply = call(server.url, "POST", "/encode", {"texts": ["wing"], "query": True})
        assert status == 200 and reply["vectors"] == pipeline.encode(["wing"])
        status, reply = call(server.url, "POST", "/encode", {"texts": ["wing"]})
        assert status == 400 and "static-query bundle" in reply["error"]
    engine.close()


def test_the_serve_command_listens_and_answers(static_index):
    """The command itself, in its own process: port 0, the URL on stdout, stopped by SIGTERM."""
    help_text = CliRunner().invoke(main, ["serve", "--help"]).output
    assert "Examples:" in help_text and "POST /search" in help_text and "--batch-window-ms" in help_text
    process = subprocess.Popen([sys.executable, "-m", "splade_es.toolkit.cli", "serve", "--index",
                                static_index["index"], *static_index["args"], "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), process.stderr.read()
        status, health = call(url, "GET", "/health")
        assert status == 200 and health["index"] == static_index["index"]
        status, report = call(url, "POST", "/search", {"query": QUERIES[1], "k": 3})
        assert status == 200 and len(report["hits"]) == 3
    finally:
        process.terminate()
        stopped = process.wait(30)
    errors = process.stderr.read()
    assert stopped in (0, -signal.SIGTERM) and "Traceback" not in errors, errors  # uvicorn re-raises the signal


def test_serve_refuses_a_missing_index_in_one_line(static_index):
    result = CliRunner().invoke(main, ["serve", "--index", "nothing-here", *static_index["args"], "--port", "0"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "no index or alias named" in result.output


# ---------------------------------------------------------------- the page, in a real browser
class _Dom(HTMLParser):
    """What the page rendered: hit ids per list, the first SPLADE hit's terms and their classes."""

    def __init__(self) -> None:
        super().__init__()
        self.state, self.lists, self.first_terms, self.vector_terms = "", {}, [], []
        self._list, self._term, self._in_first_hit, self._in_vector = None, None, False, False

    def handle_starttag(self, tag: str, attrs) -> None:
        attrs = dict(attrs)
        if tag == "body":
            self.state = attrs.get("data-state", "")
        elif tag == "ol" and attrs.get("id"):
            self._list = attrs["id"]
            self._in_vector = attrs["id"] == "vector"
            self.lists[self._list] = []
        elif tag == "li" and "hit" in attrs.get("class", "").split():
            self.lists[self._list].append(attrs.get("data-id"))
            self._in_first_hit = self._list == "splade-hits" and len(self.lists[self._list]) == 1
        elif tag == "span" and "term" in attrs.get("class", "").split():
            self._term = attrs["class"].split()[1]

    def handle_data(self, data: str) -> None:
        if self._term is not None:
            target = self.vector_terms if self._in_vector else (self.first_terms if self._in_first_hit else None)
            if target is not None:
                target.append((data, self._term))
            self._term = None

    def handle_endtag(self, tag: str) -> None:
        if tag == "ol":
            self._list, self._in_vector, self._in_first_hit = None, False, False


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def _browse(url: str, *args: str) -> str:
    """The page's DOM after its scripts ran (and its searches came back), from headless Chromium."""
    result = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--virtual-time-budget=20000", *args, url], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.parametrize("indexed", ["opensearch"], indirect=True)  # the page is the same on any engine
def test_the_page_shows_hits_and_explanations_in_headless_chromium(served, tmp_path):
    page = "".join(path.read_text() for path in PAGE_DIR.iterdir())
    assert "http://" not in page and "https://" not in page and "//cdn" not in page  # nothing from elsewhere
    status, text = call(served["url"], "GET", "/")
    assert status == 200 and '<form id="search"' in text

    query = QUERIES[0]
    dom = _Dom()
    dom.feed(_browse(f"{served['url']}/?q={quote(query)}&k=5", "--dump-dom"))
    assert dom.state == "done"
    _, sparse = call(served["url"], "POST", "/search", {"query": query, "k": 5, "explain": True})
    _, bm25 = call(served["url"], "POST", "/search", {"query": query, "k": 5, "method": "bm25"})
    assert dom.lists["splade-hits"] == [hit["id"] for hit in sparse["hits"]]
    assert dom.lists["bm25-hits"] == [hit["id"] for hit in bm25["hits"]]
    shown = sparse["hits"][0]["contributions"][:10]
    assert dom.first_terms == [(c["term"], "expansion" if c["expansion"] else "text") for c in shown]
    heaviest = sorted(sparse["query_vector"].items(), key=lambda item: (-item[1]["weight"], item[0]))[:48]
    assert dom.vector_terms == [(term, "expansion" if value["expansion"] else "text") for term, value in heaviest]
    assert {kind for _, kind in dom.vector_terms} == {"text", "expansion"}  # both kinds, marked apart

    screenshot = tmp_path / "page.png"
    _browse(f"{served['url']}/?q={quote(query)}", f"--screenshot={screenshot}", "--window-size=1400,1000")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_engine_refusals_are_the_clients_and_secrets_are_masked_before_spaces_fold():
    """An engine 400 (a filter value of the wrong type, say) is the request's fault: 400, not 502.
    A secret with runs of white space is masked before the message is folded to one line."""
    from splade_es.toolkit.serve.app import failure
    from splade_es.toolkit.serve.batching import Overloaded

    refused = failure(EngineError("search failed: number_format_exception: For input string: \"x\"", 400), [])
    assert refused.status_code == 400 and json.loads(refused.body)["error"].startswith("the engine refused")
    assert failure(EngineError("shard failure", 500), []).status_code == 502
    assert failure(Overloaded("busy"), []).status_code == 503
    secret = "pa  ss\tword"
    body = json.loads(failure(EngineError(f"login as admin with {secret}\nfailed", 500), [secret]).body)["error"]
    assert secret not in body and "pa ss word" not in body and "\n" not in body
