"""Listening: the app on uvicorn, in the foreground (``splade-es serve``) or on a thread (an
application or a test that wants the service inside its own process).

The socket is bound before uvicorn starts, so port 0 works (the system picks a free port) and
the address is known, and printed, before the first request can arrive.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.applications import Starlette


class Server:
    """``app`` listening on ``host:port`` (port 0: any free one; see :attr:`url`)."""

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 8000) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
            self.socket.listen(2048)  # connections made before uvicorn runs wait instead of being refused
        except OSError:
            self.socket.close()
            raise
        bound_host, bound_port = self.socket.getsockname()[:2]
        self.url = f"http://{f'[{bound_host}]' if family == socket.AF_INET6 else bound_host}:{bound_port}"
        # No access log (a line per query would drown the errors); uvicorn's own errors still show.
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5)
        self.uvicorn = uvicorn.Server(config)

    def run(self) -> None:
        """Serve until interrupted (Ctrl-C / SIGTERM finish the requests in flight, then stop)."""
        self.uvicorn.run(sockets=[self.socket])

    @contextmanager
    def running(self, timeout: float = 30.0) -> Iterator[Server]:
        """Serve on a thread while the block runs; the service is ready (lifespan done) inside it."""
        thread = threading.Thread(target=self.run, name="splade-es-serve", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not self.uvicorn.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start at {self.url}")
            time.sleep(0.01)
        try:
            yield self
        finally:
            self.uvicorn.should_exit = True
            thread.join(timeout)
