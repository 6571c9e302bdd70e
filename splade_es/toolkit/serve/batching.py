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


class Overloaded(RuntimeError):
    """More requests wait for the encoder than the service queues (answered 503, retry later)."""


class Batcher(Generic[T]):
    """Runs ``encode`` on one worker thread (the model is not shared between threads), over
    batches of at most ``max_batch`` texts gathered for at most ``window_s`` seconds; at most
    ``max_waiting`` requests wait, later ones are refused with :class:`Overloaded`.

    ``on_batch(texts, seconds)`` hears of every model call (for the metrics).
    """

    def __init__(self, encode: EncodeFn, max_batch: int = 16, window_s: float = 0.005,
                 on_batch: Callable[[int, float], None] | None = None, max_waiting: int = 1024) -> None:
        if max_batch < 1 or window_s < 0 or max_waiting < 1:
            raise ValueError("a batch holds at least one text, the window cannot be negative, one request may wait")
        self.encode_fn, self.max_batch, self.window_s, self.max_waiting = encode, max_batch, window_s, max_waiting
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
        if self._arrived is None or self._worker is None:
            raise RuntimeError("the batcher is not started")
        if self._worker.done():  # never queue behind a worker that will not take the job
            raise RuntimeError("the encoder worker has stopped; restart the service")
        if len(self._waiting) >= self.max_waiting:
            raise Overloaded(f"{len(self._waiting)} requests already wait for the encoder; retry later")
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
            batch = self._take()
            try:
                await self._encode(batch)
            except BaseException as exc:  # noqa: BLE001 - no request of this batch is left without an answer
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("stopped"))
                if not isinstance(exc, Exception):
                    raise

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
            except Exception as exc:  # noqa: BLE001
                if len(jobs) == 1:
                    jobs[0].future.set_exception(exc)
                else:  # one request's text (or a batch too big for memory) must not fail the others
                    for job in jobs:
                        await self._encode_alone(job)
                continue
            self.on_batch(len(texts), loop.time() - started)
            start = 0
            for job in jobs:
                if not job.future.done():
                    job.future.set_result(encoded[start:start + len(job.texts)])
                start += len(job.texts)

    async def _encode_alone(self, job: _Job[T]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            encoded = await loop.run_in_executor(self._executor, self.encode_fn, job.texts, job.query)
        except Exception as exc:  # noqa: BLE001 - this request's own failure
            if not job.future.done():
                job.future.set_exception(exc)
            return
        self.on_batch(len(job.texts), loop.time() - started)
        if not job.future.done():
            job.future.set_result(encoded)
