"""A loopback HTTP proxy in front of a real engine that fails or slows some bulk requests."""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class FaultProxy:
    """Forward everything to ``upstream``; bulk request n gets ``faults(n)`` (a status) or passes.

    Any other request gets ``refuse(method, path)`` (a status) or passes, which is how a
    test plays credentials that lack a privilege. ``delay`` seconds are added before each
    forwarded bulk request. ``seen_headers`` keeps every request's headers so a test can
    check what the client sent.
    """

    def __init__(self, upstream: str, faults=lambda n: None, delay: float = 0.0,
                 refuse=lambda method, path: None) -> None:
        target = urlsplit(upstream)
        self.upstream = (target.hostname, target.port)
        self.faults, self.delay, self.refuse = faults, delay, refuse
        self.bulk_requests = 0
        self.injected = 0
        self.seen_headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                proxy.seen_headers.append(dict(self.headers))
                path = self.path.split("?")[0]
                if path.endswith("/_bulk"):
                    with proxy._lock:
                        proxy.bulk_requests += 1
                        status = proxy.faults(proxy.bulk_requests)
                else:
                    status = proxy.refuse(self.command, path)
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
                connection = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                connection.request(self.command, self.path, body=body or None, headers=headers)
                reply = connection.getresponse()
                data = reply.read()
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

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
