"""Texts that arrive together are encoded together.

A model encodes a batch of 16 queries in little more time than one (on CPU, MiniLM: about
3x the time of one; on a GPU nearly the same), so under load the service gathers the requests
that arrive within a short window into one encoder call. The window starts when the first
waiting request arrived, so a lone request waits at most the window, and a request that
arrived while the encoder was busy waits no longer than the batch before it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

# ``encode(texts, query)``: one model call; ``query`` False means documents.
EncodeFn = Callable[[list[str], bool], list[T]]


@dataclass
class _Job(Generic[T]):
    texts: list[str]
    query: bool
    arrived: float
    future: asyncio.Future[list[T]] = field(repr=False)


class Batcher(Generic[T]):
    """Runs ``encode`` on one worker thread (the model is not shared between threads), over
    batches of at most ``max_batch`` texts gathered for at most ``window_s`` seconds.

    ``on_batch(texts, seconds)`` hears of every model call (for the metrics).
    """

    def __init__(self, encode: EncodeFn, max_batch: int = 16, window_s: float = 0.005,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        if max_batch < 1 or window_s < 0:
            raise ValueError("a batch holds at least one text and the window cannot be negative")
        self.encode_fn, self.max_batch, self.window_s = encode, max_batch, window_s
        self.on_batch = on_batch or (lambda texts, seconds: None)
        self._waiting: deque[_Job[T]] = deque()
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Start the worker (inside the server's event loop)."""
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="splade-es-encode")
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker; requests still waiting get an error rather than no answer."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        while self._waiting:
            job = self._waiting.popleft()
            if not job.future.done():
                job.future.set_exception(RuntimeError("the service is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def encode(self, texts: Sequence[str], query: bool = True) -> list[T]:
        """The encodings of ``texts``, in order, from whichever batch they join."""
        if self._arrived is None:
            raise RuntimeError("the batcher is not started")
        loop = asyncio.get_running_loop()
        job: _Job[T] = _Job(list(texts), query, loop.time(), loop.create_future())
        self._waiting.append(job)
        self._arrived.set()
        return await job.future

    async def _run(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            deadline = self._waiting[0].arrived + self.window_s
            while self._waiting_texts() < self.max_batch and (left := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except asyncio.TimeoutError:
                    break
            await self._encode(self._take())

    def _waiting_texts(self) -> int:
        return sum(len(job.texts) for job in self._waiting)

    def _take(self) -> list[_Job[T]]:
        """The waiting jobs, oldest first, up to ``max_batch`` texts (a larger job goes alone)."""
        batch = [self._waiting.popleft()]
        size = len(batch[0].texts)
        while self._waiting and size + len(self._waiting[0].texts) <= self.max_batch:
            size += len(self._waiting[0].texts)
            batch.append(self._waiting.popleft())
        return batch

    async def _encode(self, batch: list[_Job[T]]) -> None:
        """One model call per kind of text in the batch (queries and documents use other templates)."""
        loop = asyncio.get_running_loop()
        for query in (True, False):
            jobs = [job for job in batch if job.query == query and not job.future.done()]  # done: client gone
            if not jobs:
                continue
            texts = [text for job in jobs for text in job.texts]
            started = loop.time()
            try:
                encoded = await loop.run_in_executor(self._executor, self.encode_fn, texts, query)
            except Exception as exc:  # noqa: BLE001 - every waiting request hears of the failure
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            self.on_batch(len(texts), loop.time() - started)
            start = 0
            for job in jobs:
                if not job.future.done():
                    job.future.set_result(encoded[start:start + len(job.texts)])
                start += len(job.texts)
