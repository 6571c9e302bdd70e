"""What the service does for each request, apart from HTTP: the query encoder is loaded once,
queries are encoded in batches, and every search goes through the :class:`QueryPipeline` that
``splade-es search`` uses, so both answer a query with the same hits and explanations."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from anyio import to_thread

from splade_es import __version__
from splade_es.toolkit.inspection.terms import TermOrigin
from splade_es.toolkit.query.pipeline import QueryPipeline
from splade_es.toolkit.serve.batching import Batcher
from splade_es.toolkit.serve.metrics import Metrics
from splade_es.toolkit.serve.requests import EncodeRequest, SearchRequest


@dataclass(frozen=True)
class ServiceSettings:
    """Limits and batching; the defaults suit a CPU MiniLM (docs/BENCHMARKS.md)."""

    max_k: int = 100
    max_texts: int = 64  # per /encode request
    max_body_bytes: int = 1 << 20
    max_batch: int = 16  # texts per encoder call; 1 turns batching off
    window_ms: float = 5.0  # how long the first waiting text waits for others


@dataclass(frozen=True)
class Encoded:
    """One text's vector and, for a query, which of its terms are its own (the rest are expansions);
    both come from the encoder thread, which alone uses the tokenizer."""

    vector: dict[str, float]
    origin: TermOrigin | None = None


class SearchService:
    """One index and its query encoder, for the lifetime of a server."""

    def __init__(self, pipeline: QueryPipeline, settings: ServiceSettings | None = None) -> None:
        self.pipeline = pipeline
        self.settings = settings or ServiceSettings()
        self.metrics = Metrics()
        self.batcher: Batcher[Encoded] = Batcher(self._encode, self.settings.max_batch, self.settings.window_ms / 1000,
                                                 self.metrics.observe_batch)
        self.started = time.time()

    def _encode(self, texts: list[str], query: bool) -> list[Encoded]:
        """One batch through the model (on the batcher's thread)."""
        if not query:
            return [Encoded(vector) for vector in self.pipeline.encode_documents(texts)]
        return [Encoded(vector, self.pipeline.origin(text)) for vector, text in zip(self.pipeline.encode(texts), texts)]

    async def search(self, body: Any) -> dict[str, Any]:
        """``POST /search``: the report ``splade-es search --json`` prints for the same query."""
        searcher = self.pipeline.searcher
        request = SearchRequest.parse(body, self.settings.max_k, searcher.meta.field_names)
        if request.method == "bm25":
            result = await to_thread.run_sync(searcher.bm25_search, request.query, request.k, request.filters)
            return self.pipeline.report(request.query, result, {}, 0.0, TermOrigin(()))
        started = time.perf_counter()
        encoded = (await self.batcher.encode([request.query], query=True))[0]
        encode_ms = (time.perf_counter() - started) * 1000
        result = await to_thread.run_sync(partial(self.pipeline.search, request.query, encoded.vector, request.k,
                                                  request.filters, request.explain, request.hybrid,
                                                  request.hybrid_weight))
        return self.pipeline.report(request.query, result, encoded.vector, encode_ms, encoded.origin)

    async def encode(self, body: Any) -> dict[str, Any]:
        """``POST /encode``: ``{feature: weight}`` per text, as ``splade-es encode`` writes them."""
        request = EncodeRequest.parse(body, self.settings.max_texts)
        encoded = await self.batcher.encode(request.texts, query=request.query)
        return {"model": self.pipeline.model, "query": request.query, "vectors": [e.vector for e in encoded]}

    def health(self) -> dict[str, Any]:
        """``GET /health``: what is loaded and where it searches (never a credential)."""
        searcher, info = self.pipeline.searcher, self.pipeline.searcher.engine.info
        return {"status": "ok", "version": __version__, "model": self.pipeline.model,
                "query_encoder": "static" if self.pipeline.static else "model", "index": searcher.meta.index,
                "form": searcher.form, "text_fields": searcher.meta.text_fields,
                "fields": sorted(searcher.meta.field_names),
                "engine": {"kind": info.kind, "version": info.version, "location": info.location},
                "settings": asdict(self.settings), "uptime_s": round(time.time() - self.started, 3)}
