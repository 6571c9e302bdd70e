"""The HTTP side of the service (Starlette): routes, request bodies, status codes, the page.

Every failure becomes one line of JSON, ``{"error": "..."}``: a client's mistake a 4xx
(400 bad input, 413 body too large, 404/405), the engine's failure a 502 (503 when it cannot
be reached), the model's a 500. Messages pass through :func:`scrub`, so no credential the
service holds leaves it, and no failure stops it from answering the next request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from splade_es.errors import ConfigError, InputError, SpladeError
from splade_es.toolkit.engines.base import EngineError, EngineUnavailable
from splade_es.toolkit.engines.credentials import scrub
from splade_es.toolkit.serve.batching import Overloaded
from splade_es.toolkit.serve.service import SearchService

PAGE_DIR = Path(__file__).parent / "page"
# The page loads nothing from elsewhere, and the browser is told to refuse anything that tries.
PAGE_HEADERS = {"content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
                "x-content-type-options": "nosniff"}
_log = logging.getLogger("splade_es.serve")
Handler = Callable[[Request], Awaitable[Response]]


class BodyTooLarge(Exception):
    """The request body is over the service's limit (answered 413)."""


def create_app(service: SearchService, secrets: Sequence[str] = ()) -> Starlette:
    """The ASGI app of ``service``; ``secrets`` (the engine credentials) are masked in every reply."""

    def observed(route: str, work: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await work(request)
            except Exception as exc:  # noqa: BLE001 - every failure is answered, none stops the service
                response = failure(exc, secrets)
            service.metrics.observe_request(route, response.status_code, time.perf_counter() - started)
            return response

        return endpoint

    def json_post(handler: Callable[[Any], Awaitable[dict[str, Any]]]) -> Handler:
        async def work(request: Request) -> Response:
            return JSONResponse(await handler(await read_json(request, service.settings.max_body_bytes)))

        return work

    async def health(request: Request) -> Response:
        return JSONResponse(service.health())

    async def metrics(request: Request) -> Response:
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    async def page(request: Request) -> Response:
        return FileResponse(PAGE_DIR / "index.html", headers=PAGE_HEADERS)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.batcher.start()
        try:
            yield
        finally:
            await service.batcher.stop()

    routes = [
        Route("/", observed("page", page), methods=["GET"]),
        Route("/search", observed("search", json_post(service.search)), methods=["POST"]),
        Route("/encode", observed("encode", json_post(service.encode)), methods=["POST"]),
        Route("/health", observed("health", health), methods=["GET"]),
        Route("/metrics", observed("metrics", metrics), methods=["GET"]),
        Mount("/page", StaticFiles(directory=PAGE_DIR), name="page"),
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON, refused (413) as soon as it is longer than ``limit`` bytes: a declared
    length over the limit is refused before anything is read."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body is {declared} bytes; this service takes at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is over {limit} bytes, the most this service takes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise InputError("the body is empty: send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"the body is not valid JSON: {exc}") from None


def failure(exc: Exception, secrets: Sequence[str]) -> Response:
    """The status and one-line message for a failed request."""
    if isinstance(exc, BodyTooLarge):
        status, message = 413, str(exc)
    elif isinstance(exc, (InputError, ConfigError)):
        status, message = 400, str(exc)
    elif isinstance(exc, Overloaded):
        status, message = 503, str(exc)
    elif isinstance(exc, EngineUnavailable):
        status, message = 503, f"the engine is unreachable: {exc}"
    elif isinstance(exc, EngineError) and exc.status == 400:  # the engine refused what the client asked for
        status, message = 400, f"the engine refused the request: {exc}"
    elif isinstance(exc, EngineError):
        status, message = 502, f"the engine failed: {exc}"
    elif isinstance(exc, SpladeError):
        status, message = 500, f"the model failed: {exc}"
    else:
        status, message = 500, f"internal error: {type(exc).__name__}: {exc}"
    message = " ".join(scrub(message, secrets).split())[:1000]  # masked before spaces fold, so secrets still match
    if status >= 500:
        _log.error("%s", message)
    return error(status, message)


def error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status)
