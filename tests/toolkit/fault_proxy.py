"""A loopback HTTP proxy in front of a real engine that fails or slows some bulk requests."""

from __future__ import annotations

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class FaultProxy:
    """Forward everything to ``upstream``; bulk request n gets ``faults(n)`` (a status, or ``"drop"``
    to close the connection without a reply) or passes.

    - ``items(doc_id, attempt)`` -> a status refuses one document inside a bulk request whose
      reply is 200: the document is taken out of what reaches the engine (so it really is not
      indexed) and its item in the reply says ``status`` (429, 400, ...), as a real engine's
      per-item rejection does. ``attempt`` counts the bulk requests that carried that id.
    - ``max_bytes``: a bulk body larger than this is answered 413, as ``http.max_content_length`` does.
    - ``on_bulk(n)`` is called while bulk request n is held (after ``delay``), before it is
      forwarded: a test can kill the client mid-request there.
    - Any other request gets ``refuse(method, path)`` (a status) or passes, which is how a test
      plays credentials that lack a privilege.

    ``seen_headers`` and ``seen_bodies`` keep what the client sent, for tests that check it.
    """

    def __init__(self, upstream: str, faults=lambda n: None, delay: float = 0.0,
                 refuse=lambda method, path: None, items=None, max_bytes: int | None = None,
                 on_bulk=None) -> None:
        target = urlsplit(upstream)
        self.upstream = (target.hostname, target.port)
        self.faults, self.delay, self.refuse = faults, delay, refuse
        self.items, self.max_bytes, self.on_bulk = items, max_bytes, on_bulk
        self.bulk_requests = 0
        self.injected = 0
        self.too_large = 0
        self.refused_items = 0
        self.attempts: dict[str, int] = {}
        self.seen_headers: list[dict[str, str]] = []
        self.seen_bodies: list[bytes] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                proxy.seen_headers.append(dict(self.headers))
                proxy.seen_bodies.append(body)
                path = self.path.split("?")[0]
                refused: dict[int, tuple[str, int]] = {}
                if path.endswith("/_bulk"):
                    with proxy._lock:
                        proxy.bulk_requests += 1
                        number = proxy.bulk_requests
                        status = proxy.faults(number)
                        if status is None and proxy.max_bytes is not None and len(body) > proxy.max_bytes:
                            status = 413
                            proxy.too_large += 1
                    if status is None and proxy.items is not None:
                        body, refused = proxy._take_out(body)
                else:
                    status = proxy.refuse(self.command, path)
                if status == "drop":  # the connection dies without a reply, as when a node goes away
                    with proxy._lock:
                        proxy.injected += 1
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if status is not None:
                    with proxy._lock:
                        proxy.injected += 1
                    payload = b'{"error":{"type":"injected","reason":"fault proxy"},"status":%d}' % status
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                if path.endswith("/_bulk"):
                    time.sleep(proxy.delay)
                    if proxy.on_bulk is not None:
                        proxy.on_bulk(number)
                connection = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                if refused and not body:  # every document refused: answer for the engine
                    reply, data = None, json.dumps({"errors": True, "items": []}).encode()
                else:
                    connection.request(self.command, self.path, body=body or None, headers=headers)
                    reply = connection.getresponse()
                    data = reply.read()
                if refused:
                    data = _put_back(data, refused)
                if reply is None:
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    connection.close()
                    return
                self.send_response(reply.status)
                for key, value in reply.getheaders():
                    if key.lower() not in _HOP_HEADERS:
                        self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                connection.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _take_out(self, body: bytes) -> tuple[bytes, dict[int, tuple[str, int]]]:
        """Drop the documents ``items`` refuses from an NDJSON bulk body: ``{item number: (id, status)}``."""
        lines = body.split(b"\n")
        kept, refused = [], {}
        for number in range(len(lines) // 2):
            action, source = lines[2 * number], lines[2 * number + 1]
            doc_id = next(iter(json.loads(action).values()))["_id"]
            with self._lock:
                self.attempts[doc_id] = self.attempts.get(doc_id, 0) + 1
                status = self.items(doc_id, self.attempts[doc_id])
                if status is not None:
                    self.refused_items += 1
            if status is None:
                kept += [action, source]
            else:
                refused[number] = (doc_id, status)
        return (b"\n".join(kept) + b"\n" if kept else b""), refused

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _put_back(data: bytes, refused: dict[int, tuple[str, int]]) -> bytes:
    """The engine's bulk reply with an error item for each refused document, in request order."""
    reply = json.loads(data)
    items = list(reply.get("items", []))
    total = len(items) + len(refused)
    merged, forwarded = [], iter(items)
    for number in range(total):
        if number in refused:
            doc_id, status = refused[number]
            error = {"type": "es_rejected_execution_exception" if status == 429 else "mapper_parsing_exception",
                     "reason": "injected by the fault proxy"}
            merged.append({"index": {"_id": doc_id, "status": status, "error": error}})
        else:
            merged.append(next(forwarded, {"index": {"status": 201}}))
    reply["errors"], reply["items"] = True, merged
    return json.dumps(reply).encode()


class NoProxy:
    """Stands in for :class:`FaultProxy` where there is no server to put one in front of (the local engine)."""

    url = None
    delay = 0.0
    on_bulk = None
    bulk_requests = 0

    def __enter__(self) -> NoProxy:
        return self

    def __exit__(self, *exc) -> None:
        pass
