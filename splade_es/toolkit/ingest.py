"""Corpus -> sparse vectors -> engine, overlapped, retried, resumable and shardable.

Encoding runs in the calling thread while earlier bulk requests are in flight on a small
thread pool (torch releases the GIL while it computes). Documents are indexed by corpus
id, so replaying any part of a run never duplicates. A checkpoint records how many
records of this shard are known to be indexed (a contiguous prefix, in corpus order);
``resume`` skips exactly those and replays the rest.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from splade_es.errors import SpladeError
from splade_es.io.corpus import BadRecord, Document
from splade_es.toolkit.engines.base import BulkFailure, Engine, EngineError, EngineUnavailable
from splade_es.toolkit.engines.rest import bulk_line
from splade_es.toolkit.layouts import Layout

Features = dict[str, float]
VectorSource = Callable[[list[Document]], list[Features]]


def encoded_vectors(encoder, pruning) -> VectorSource:
    """Document vectors from a loaded encoder, one batch at a time."""
    def encode(documents: list[Document]) -> list[Features]:
        vectors = encoder.encode_documents([d.text for d in documents], pruning=pruning, show_progress=False)
        return [vector.to_features() for vector in vectors]

    return encode


def no_vectors(documents: list[Document]) -> list[Features]:
    """For layouts whose documents carry no vector of ours (text, ELSER)."""
    return [{} for _ in documents]


@dataclass
class IngestOptions:
    index: str
    alias: str | None = None
    chunk_docs: int = 500
    chunk_bytes: int = 8 * 1024 * 1024
    concurrency: int = 2
    encode_batch: int = 256
    max_retries: int = 8
    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    resume: bool = False
    failures_path: Path = Path("failures.jsonl")
    state_dir: Path | None = None
    rank: int = 0
    world_size: int = 1
    show_progress: bool = True


@dataclass
class IngestSummary:
    index: str
    alias: str | None = None
    indexed: int = 0
    failed: int = 0
    skipped: int = 0  # bad records passed over with --skip-bad
    resumed: int = 0  # records a previous run had already indexed
    empty: int = 0
    duplicate_ids: int = 0
    features: int = 0
    retries: int = 0
    seconds: float = 0.0
    index_docs: int | None = None
    index_size_bytes: int | None = None
    failures_file: str | None = None
    duplicate_examples: list[str] = field(default_factory=list)

    @property
    def docs_per_second(self) -> float:
        return self.indexed / self.seconds if self.seconds else 0.0

    @property
    def mean_features(self) -> float:
        return self.features / self.indexed if self.indexed else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "docs_per_second": round(self.docs_per_second, 2),
                "mean_features_per_doc": round(self.mean_features, 2)}

    def merge(self, other: IngestSummary) -> None:
        for name in ("indexed", "failed", "skipped", "resumed", "empty", "duplicate_ids", "features", "retries"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.seconds = max(self.seconds, other.seconds)
        self.duplicate_examples = (self.duplicate_examples + other.duplicate_examples)[:10]


class Checkpoint:
    """How far this shard got, written atomically after every acknowledged bulk request."""

    def __init__(self, path: Path, identity: dict[str, Any]) -> None:
        self.path = path
        self.identity = identity
        self.done = 0
        self.index: str | None = None
        self.complete = False

    @classmethod
    def open(cls, state_dir: Path, identity: dict[str, Any], resume: bool) -> Checkpoint:
        key = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        checkpoint = cls(state_dir / f"ingest-{key}.json", identity)
        if resume and checkpoint.path.is_file():
            saved = json.loads(checkpoint.path.read_text())
            checkpoint.done, checkpoint.index = int(saved["done"]), saved.get("index")
            checkpoint.complete = bool(saved.get("complete"))
        return checkpoint

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_suffix(".tmp")
        staging.write_text(json.dumps({**self.identity, "done": self.done, "index": self.index,
                                       "complete": self.complete}))
        staging.replace(self.path)


@dataclass
class _Pending:
    id: str
    body: dict[str, Any]
    line: bytes  # its action and source lines of a _bulk body, serialised once


@dataclass
class _Chunk:
    first: int  # shard positions [first, last)
    last: int
    documents: list[_Pending]
    features: int



class _Watermark:
    """The contiguous prefix of shard positions whose bulk requests all succeeded."""

    def __init__(self, start: int) -> None:
        self.value = start
        self._finished: dict[int, int] = {}

    def finish(self, first: int, last: int) -> bool:
        self._finished[first] = last
        moved = False
        while self.value in self._finished:
            self.value = self._finished.pop(self.value)
            moved = True
        return moved


def shard(records: Iterable[Document | BadRecord], rank: int, world_size: int) -> Iterator[Document | BadRecord]:
    """Record ``i`` of the corpus belongs to rank ``i % world_size``."""
    for position, record in enumerate(records):
        if position % world_size == rank:
            yield record


class Ingester:
    """One shard's run: call :meth:`prepare_index` (rank 0 first), then :meth:`run`."""

    def __init__(self, engine: Engine, layout: Layout, options: IngestOptions,
                 identity: dict[str, Any]) -> None:
        self.engine = engine
        self.layout = layout
        self.options = options
        state_dir = options.state_dir or _default_state_dir()
        self.checkpoint = Checkpoint.open(state_dir, {**identity, "target": options.alias or options.index,
                                                      "rank": options.rank, "world_size": options.world_size},
                                          options.resume)
        self._failures_lock = threading.Lock()

    # ---------------------------------------------------------------- index
    def target_index(self, proposed: str | None = None) -> str:
        """The concrete index: the resumed one, ``proposed`` (a versioned name), or --index."""
        if self.checkpoint.index:
            return self.checkpoint.index
        if self.options.alias:
            return proposed or versioned_name(self.options.index)
        return self.options.index

    def prepare_index(self, index: str) -> None:
        """Create the index with its mapping, or check that an existing one fits this layout (and model)."""
        self.layout.prepare(self.engine)
        if self.engine.exists(index):
            self.layout.check(self.engine.mappings(index), index)
            return
        try:
            self.engine.create_index(index, self.layout.create_body(self.engine.info))
        except EngineError as exc:
            if "already_exists" not in str(exc) and "already exists" not in str(exc):
                raise
            self.layout.check(self.engine.mappings(index), index)

    # ---------------------------------------------------------------- run
    def run(self, index: str, records: Iterable[Document | BadRecord], vectors: VectorSource,
            total: int | None = None) -> IngestSummary:
        """Encode and index this shard's ``records``; returns what happened."""
        options = self.options
        summary = IngestSummary(index=index, alias=options.alias)
        self.checkpoint.index = index
        if self.checkpoint.complete:
            summary.resumed = self.checkpoint.done
            return summary
        start = time.monotonic()
        failures = options.failures_path.open("a" if options.resume else "w", encoding="utf-8")
        watermark = _Watermark(self.checkpoint.done)
        seen: set[str] = set()
        pending: set[Future] = set()
        bar = tqdm(total=total, unit="doc", desc=f"ingest {index}", disable=not options.show_progress,
                   initial=0, smoothing=0.1)
        position = 0
        try:
            with ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="bulk") as pool:
                block: list[tuple[int, Document]] = []
                for record in records:
                    if position < self.checkpoint.done:
                        position += 1
                        summary.resumed += 1
                        bar.update(1)
                        continue
                    if isinstance(record, BadRecord):
                        summary.skipped += 1
                        self._record_failure(failures, {"where": record.where, "reason": record.reason})
                        watermark.finish(position, position + 1)
                        position += 1
                        continue
                    if record.id in seen:
                        summary.duplicate_ids += 1
                        if len(summary.duplicate_examples) < 10:
                            summary.duplicate_examples.append(record.id)
                    seen.add(record.id)
                    block.append((position, record))
                    position += 1
                    if len(block) >= options.encode_batch:
                        pending |= self._submit(pool, index, block, vectors, summary)
                        block = []
                        pending = self._drain(pending, watermark, summary, failures, bar, options.concurrency * 2)
                if block:
                    pending |= self._submit(pool, index, block, vectors, summary)
                self._drain(pending, watermark, summary, failures, bar, 0)
            self.checkpoint.done = max(self.checkpoint.done, watermark.value)
            self.checkpoint.complete = watermark.value >= position
            self.checkpoint.save()
        finally:
            bar.close()
            failures.close()
        summary.seconds = time.monotonic() - start
        if summary.failed or summary.skipped:
            summary.failures_file = str(options.failures_path)
        elif not options.resume:
            options.failures_path.unlink(missing_ok=True)
        return summary

    def finish(self, summary: IngestSummary) -> IngestSummary:
        """Refresh, measure the index and, with an alias, point it at the new index."""
        self.engine.refresh(summary.index)
        stats = self.engine.stats(summary.index)
        summary.index_docs, summary.index_size_bytes = stats.docs, stats.size_bytes
        if self.options.alias and not summary.failed:
            self.engine.point_alias(self.options.alias, summary.index)
        return summary

    def _submit(self, pool: ThreadPoolExecutor, index: str, block: list[tuple[int, Document]],
                vectors: VectorSource, summary: IngestSummary) -> set[Future]:
        features = vectors([document for _, document in block])
        if len(features) != len(block):
            raise SpladeError(f"got {len(features)} vectors for {len(block)} documents")
        chunks, current, size, first = [], [], 0, block[0][0]
        count = 0
        for (position, document), vector in zip(block, features):
            if self.layout.needs_vectors and not vector:
                summary.empty += 1
            body = self.layout.document(document, vector)
            line = bulk_line(index, document.id, body)
            if current and (len(current) >= self.options.chunk_docs or size + len(line) > self.options.chunk_bytes):
                chunks.append(_Chunk(first, position, current, count))
                current, size, first, count = [], 0, position, 0
            current.append(_Pending(document.id, body, line))
            size += len(line)
            count += len(vector)
        chunks.append(_Chunk(first, block[-1][0] + 1, current, count))
        return {pool.submit(self._send, index, chunk) for chunk in chunks}

    def _send(self, index: str, chunk: _Chunk) -> tuple[_Chunk, list[BulkFailure], int]:
        """One chunk, retrying 429/502/503/504 (whole request or per document) with backoff."""
        todo, retries, delay, final = chunk.documents, 0, self.options.initial_backoff, []
        while True:
            try:
                failures = self._bulk(index, todo)
            except EngineError as exc:
                if not (exc.retryable or isinstance(exc, EngineUnavailable)) or retries >= self.options.max_retries:
                    raise
            else:
                final += [f for f in failures if not f.retryable]
                again = {f.id for f in failures if f.retryable}
                if not again:
                    return chunk, final, retries
                if retries >= self.options.max_retries:
                    return chunk, final + [f for f in failures if f.retryable], retries
                todo = [pending for pending in todo if pending.id in again]
            retries += 1
            time.sleep(delay)
            delay = min(delay * 2, self.options.max_backoff)

    def _bulk(self, index: str, documents: list[_Pending]) -> list[BulkFailure]:
        bulk_raw = getattr(self.engine, "bulk_raw", None)
        if bulk_raw is not None:
            return bulk_raw(b"".join(pending.line for pending in documents))
        return self.engine.bulk(index, [(pending.id, pending.body) for pending in documents])

    def _drain(self, pending: set[Future], watermark: _Watermark, summary: IngestSummary, failures,
               bar, keep: int) -> set[Future]:
        """Wait until at most ``keep`` requests are in flight, booking the finished ones."""
        while len(pending) > keep:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                chunk, failed, retries = future.result()
                summary.retries += retries
                summary.failed += len(failed)
                summary.indexed += len(chunk.documents) - len(failed)
                summary.features += chunk.features
                for failure in failed:
                    self._record_failure(failures, {"id": failure.id, "status": failure.status,
                                                    "reason": failure.reason})
                bar.update(len(chunk.documents))
                if watermark.finish(chunk.first, chunk.last):
                    self.checkpoint.done = watermark.value
                    self.checkpoint.save()
        return pending

    def _record_failure(self, handle, entry: dict[str, Any]) -> None:
        with self._failures_lock:
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
            handle.flush()


def versioned_name(base: str) -> str:
    """``base-YYYYMMDD-HHMMSS``: a new index for a zero-downtime reindex behind an alias."""
    return f"{base}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def _default_state_dir() -> Path:
    from platformdirs import user_state_dir

    return Path(user_state_dir("splade-es"))

