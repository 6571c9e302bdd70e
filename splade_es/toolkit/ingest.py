"""Corpus -> sparse vectors -> engine: overlapped, retried, resumable, shardable, and honest.

:func:`ingest_corpus` is the one entry point (the CLI and ``benchmark`` call it): prepare the
index, encode and bulk-load each rank's shard, gather, then check and finish.

What it promises, and how:

- *Nothing lost.* A checkpoint per shard holds a watermark (every shard position below it is
  settled: acknowledged by the engine, or recorded below) and the documents that failed or
  were skipped, with their reasons. ``resume`` skips the settled positions, re-sends what failed
  for a retryable reason, and reports what still fails. A run succeeds only when nothing failed
  or was skipped and, after a refresh, the index holds exactly the corpus's number of distinct
  ids; only then does an alias move.
- *Nothing doubled, later record wins.* Documents are indexed by corpus id. Two records with the
  same id are never in flight together (the later one waits for the earlier to settle, and an
  earlier copy inside one batch is dropped), and under torchrun a record goes to the rank its
  id hashes to, so one rank orders all copies of an id. Elasticsearch and OpenSearch enforce the
  order too: each write carries an external version (the load's epoch, then the record's shard
  position), so a request the engine applies late, after the client gave up on it, cannot
  overwrite a later copy; a load that starts over takes a higher epoch, so its records replace
  the old ones. (The local engine applies writes in order, in process.) A write refused for its
  version is a failure like any other unless a later copy of the id from this load settles it.
- *Faults survived.* 429/502/503/504 and connection errors are retried with full-jitter
  exponential backoff, per request and per refused item; a 413 splits the request in halves.
- *Kills survived.* The checkpoint (and the name of the index, before it is created) is written
  atomically; a replayed request only overwrites documents with themselves.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import random
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from splade_es.errors import ConfigError, InputError, SpladeError
from splade_es.io.atomic import atomic_text_file, atomic_write_text
from splade_es.io.corpus import BadRecord, Document
from splade_es.io.failpoints import failpoint
from splade_es.io.ranks import Group
from splade_es.io.weights import check_features
from splade_es.toolkit.engines.base import BulkFailure, Engine, EngineError, EngineUnavailable
from splade_es.toolkit.engines.rest import bulk_line
from splade_es.toolkit.layouts import Layout
from splade_es.toolkit.mappings import with_shards

Features = dict[str, float]
# Each document's vector, or a BadRecord saying why the engine would refuse it.
VectorSource = Callable[[list[Document]], list["Features | BadRecord"]]
_log = logging.getLogger(__name__)
CHECKPOINT_VERSION = 2
EPOCH_ORIGIN = 1_735_689_600  # 2025-01-01 UTC: epochs count seconds from here, so version = epoch << 32 fits a long


def document_version(epoch: int, position: int) -> int:
    """The external version of the record at ``position`` of a shard, in the load of ``epoch``:
    later records of a load, and every record of a later load, carry higher versions."""
    return (epoch << 32) | position


def encoded_vectors(encoder, pruning, chunking: dict[str, int] | None = None) -> VectorSource:
    """Document vectors from a loaded encoder, one batch at a time (long texts in windows with
    ``chunking``), checked as the engine will see them; a vector the engine would refuse comes
    back as a :class:`BadRecord` (skipped with ``--skip-bad``, else the run stops on it)."""
    def encode(documents: list[Document]) -> list[Features | BadRecord]:
        vectors = encoder.encode_documents([d.text for d in documents], pruning=pruning, show_progress=False,
                                           **(chunking or {}))
        return [_checked(vector.to_features(), f"{d.where} (encoder output)") for d, vector in zip(documents, vectors)]

    return encode


def _checked(features: Features, where: str) -> Features | BadRecord:
    try:
        return check_features(features, where)
    except InputError as exc:
        return BadRecord(where, str(exc).removeprefix(f"{where}: "))


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
    shards: int | None = None  # index layout; None: the cluster's default
    replicas: int | None = None
    seed: int | None = None  # of the backoff jitter (tests)
    resend_refused: bool = False  # resume re-sends permanent refusals (400s) too, not only retryable ones
    skip_bad: bool = False  # a vector the engine would refuse is skipped and reported, not fatal


@dataclass
class IngestSummary:
    index: str
    alias: str | None = None
    indexed: int = 0
    failed: int = 0  # documents the engine refused (still missing)
    skipped: int = 0  # bad records passed over with --skip-bad
    resumed: int = 0  # records a previous run had already settled
    retried: int = 0  # documents a previous run failed to index, sent again
    empty: int = 0
    duplicate_ids: int = 0
    features: int = 0
    retries: int = 0
    seconds: float = 0.0
    expected: int = 0  # distinct corpus ids: what the index must hold
    index_docs: int | None = None
    index_size_bytes: int | None = None
    complete: bool = False
    alias_moved: bool = False
    failures_file: str | None = None
    duplicate_examples: list[str] = field(default_factory=list)
    problem: str | None = None  # why the run is not complete, in one line

    @property
    def docs_per_second(self) -> float:
        return self.indexed / self.seconds if self.seconds else 0.0

    @property
    def mean_features(self) -> float:
        return self.features / self.indexed if self.indexed else 0.0

    @property
    def missing(self) -> int:
        return max(0, self.expected - (self.index_docs or 0)) if self.index_docs is not None else self.expected

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "missing": self.missing, "docs_per_second": round(self.docs_per_second, 2),
                "mean_features_per_doc": round(self.mean_features, 2)}

    def merge(self, other: IngestSummary) -> None:
        for name in ("indexed", "failed", "skipped", "resumed", "retried", "empty", "duplicate_ids", "features",
                     "retries", "expected"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.seconds = max(self.seconds, other.seconds)
        self.duplicate_examples = (self.duplicate_examples + other.duplicate_examples)[:10]
        files = [f for f in (self.failures_file, other.failures_file) if f]
        self.failures_file = ", ".join(files) or None


# ---------------------------------------------------------------- identity and checkpoint
def model_files_identity(*models: str | None) -> list[dict[str, Any]] | None:
    """The weight and config files of local model directories, and the snapshot a hub id resolves
    to (a retrained bundle in the same directory, or a new commit of a hub model, must not resume a
    load of the old one's vectors); None when no model is named."""
    patterns = ("*.safetensors", "*.bin", "*.pt", "*.json")
    files: list[dict[str, Any]] = []
    for model in filter(None, models):
        directory = Path(model).expanduser()
        if directory.is_dir():
            files += [file_identity(path, digest=False) for pattern in patterns
                      for path in sorted(directory.glob(pattern))]
        else:
            files.append({"hub": model, "revision": hub_revision(model)})
    return files or None


def hub_revision(repo_id: str) -> str | None:
    """The commit of the cached snapshot a hub id loads from (its folder's name), or None when
    the local cache lacks it; never asks the hub."""
    from splade_es.model.backbone import cached_hub_file

    for name in ("splade_config.json", "modules.json", "config.json", "adapter_config.json"):
        path = cached_hub_file(repo_id, name)
        if path is not None:
            return path.parent.name
    return None


def file_identity(path: str | Path, digest: bool = True) -> dict[str, Any]:
    """A file as a checkpoint knows it: where, how big, when last written and, with ``digest``, a
    hash of its content (a corpus rewritten in place with the same size and time is still another
    corpus; model weights, gigabytes each, go by size and time alone)."""
    resolved = Path(path).expanduser().resolve()
    stat = resolved.stat()
    identity: dict[str, Any] = {"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if digest:
        content = hashlib.blake2b(digest_size=16)
        with resolved.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                content.update(block)
        identity["blake2b"] = content.hexdigest()
    return identity


def same_identity(saved: Any, current: Any) -> bool:
    """Whether a recorded identity is the current one, reading records of earlier splade-es
    versions as they were written: those knew files without a content digest and hub models
    not at all, so a missing digest or hub entry is not a change."""
    if isinstance(saved, dict) and isinstance(current, dict):
        keys = set(saved) | set(current)
        if "blake2b" not in saved:
            keys.discard("blake2b")
        return all(same_identity(saved.get(k), current.get(k)) for k in keys)
    if isinstance(saved, list) and isinstance(current, list):
        return len(saved) == len(current) and all(map(same_identity, saved, current))
    if saved is None and isinstance(current, list):
        return all(isinstance(entry, dict) and "hub" in entry for entry in current)
    return saved == current


@dataclass
class Checkpoint:
    """How far one shard got, what failed and what was skipped; written atomically.

    ``done`` is the watermark: every shard position below it is settled. ``failed`` maps a
    document id to its position, status, reason and whether a resume may re-send it;
    ``skipped`` maps a position to the bad record's ``where`` and reason.
    """

    path: Path
    identity: dict[str, Any]
    index: str | None = None
    done: int = 0
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[int, dict[str, Any]] = field(default_factory=dict)
    refresh_interval: Any = None  # the index's own setting, restored when the load ends
    complete: bool = False
    epoch: int | None = None  # of this load's external versions (see :func:`document_version`)

    @classmethod
    def open(cls, state_dir: Path, key: dict[str, Any], identity: dict[str, Any], resume: bool,
             earlier_engine: str | None = None, wrote_here: Callable[[dict[str, Any]], bool] | None = None
             ) -> Checkpoint:
        """This run's checkpoint; with ``resume``, the saved one, refused if written for another run.
        ``earlier_engine``: what earlier versions keyed the engine by (its URL), so a load they
        left unfinished is found and carried over to this key, when ``wrote_here`` says its
        index on this cluster carries its load's epoch (the URL may now serve another cluster)."""
        checkpoint = cls(cls._path(state_dir, key), identity)
        if earlier_engine is not None and wrote_here is not None and not checkpoint.path.is_file():
            cls._adopt(cls._path(state_dir, {**key, "engine": earlier_engine}), checkpoint.path,
                       earlier_engine, identity["engine"], wrote_here)
        if not checkpoint.path.is_file():
            if resume:
                _log.warning("--resume: no checkpoint of this run in %s (same cluster, target and ranks?): "
                             "starting from the beginning", state_dir)
            return checkpoint
        if not resume:  # a fresh run starts over, reusing only an index this same run left behind
            try:
                saved = checkpoint.read()
            except InputError:
                return checkpoint
            checkpoint.index = saved.index if saved.index_is_orphan_of(identity) else None
            if saved.index == checkpoint.index or saved.index is None or not saved.complete:
                checkpoint.refresh_interval = saved.refresh_interval  # what a killed load had not restored
            return checkpoint
        saved = checkpoint.read()
        changed = [k for k in sorted(set(identity) | set(saved.identity))
                   if not same_identity(saved.identity.get(k), identity.get(k))]
        if changed:
            raise ConfigError(f"{checkpoint.path}: cannot resume: the {', '.join(changed)} changed since the "
                              "interrupted run (drop --resume to start over)")
        return saved

    @staticmethod
    def _path(state_dir: Path, key: dict[str, Any]) -> Path:
        return state_dir / f"ingest-{hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]}.json"

    @staticmethod
    def _adopt(earlier: Path, path: Path, earlier_engine: str, engine: str,
               wrote_here: Callable[[dict[str, Any]], bool]) -> None:
        """Move an earlier version's checkpoint to this key, naming the engine as this version does."""
        try:
            saved = json.loads(earlier.read_text(encoding="utf-8"))
            if saved["identity"].get("engine") != earlier_engine or not wrote_here(saved):
                return
            saved["identity"]["engine"] = engine
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return  # none, or unreadable: the new key's warning and checks apply as usual
        atomic_write_text(path, json.dumps(saved, ensure_ascii=False))
        earlier.unlink(missing_ok=True)

    def read(self) -> Checkpoint:
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            if saved.get("version") != CHECKPOINT_VERSION:
                raise ValueError(f"version {saved.get('version')!r}, this splade-es writes {CHECKPOINT_VERSION}")
            failed = {str(k): dict(v) for k, v in saved["failed"].items()}
            skipped = {int(k): dict(v) for k, v in saved["skipped"].items()}
            for entry in failed.values():
                int(entry["position"]), entry["where"], entry["status"], entry["reason"], bool(entry["retryable"])
            for entry in skipped.values():
                entry["where"], entry["reason"]
            epoch = saved.get("epoch")  # absent before versioned writes: the resumed load takes a new one
            return Checkpoint(self.path, dict(saved["identity"]), saved.get("index"), int(saved["done"]),
                              failed, skipped, saved.get("refresh_interval"), bool(saved["complete"]),
                              None if epoch is None else int(epoch))
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            raise InputError(f"{self.path}: not a readable ingest checkpoint ({type(exc).__name__}: {exc}); "
                             "delete it to start over") from None

    def reset(self) -> None:
        """Forget progress (not the refresh setting to restore): it was about another index."""
        self.done, self.failed, self.skipped, self.complete, self.epoch = 0, {}, {}, False, None

    def index_is_orphan_of(self, identity: dict[str, Any]) -> bool:
        """An incomplete index this same run left behind (killed early): the next run reuses it."""
        return bool(self.index) and not self.complete and same_identity(self.identity, identity)

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps({
            "version": CHECKPOINT_VERSION, "identity": self.identity, "index": self.index, "done": self.done,
            "failed": self.failed, "skipped": {str(k): v for k, v in self.skipped.items()},
            "refresh_interval": self.refresh_interval, "complete": self.complete, "epoch": self.epoch},
            ensure_ascii=False))


# ---------------------------------------------------------------- one shard
@dataclass
class _Pending:
    position: int
    id: str
    where: str
    line: bytes  # its action and source lines of a _bulk body, serialised once
    body: dict[str, Any]


@dataclass
class _Chunk:
    positions: list[int]  # the shard positions this request settles (dropped duplicates too)
    documents: list[_Pending]
    features: int


class _Watermark:
    """The contiguous prefix of shard positions that are settled."""

    def __init__(self, start: int) -> None:
        self.value = start
        self._settled: set[int] = set()

    def settle(self, positions: Iterable[int]) -> bool:
        self._settled.update(p for p in positions if p >= self.value)
        moved = False
        while self.value in self._settled:
            self._settled.discard(self.value)
            self.value += 1
            moved = True
        return moved


class LastPositions:
    """Each corpus id's last shard position, in 16 bytes per distinct id (a ``dict[str, int]``
    takes ~130 at ten-character ids): ids are kept as 64-bit BLAKE2b hashes, recent ones in a
    dict, older ones merged into sorted numpy arrays. Two distinct ids sharing a hash would count
    as one (a repeated id): at 1M ids the chance is about 3e-8, at 100M about 3e-4."""

    FLUSH = 1 << 16  # ids held in the dict before they are merged into the arrays

    def __init__(self) -> None:
        self._recent: dict[int, int] = {}
        self._keys = np.empty(0, dtype=np.uint64)
        self._positions = np.empty(0, dtype=np.int64)

    @staticmethod
    def _key(doc_id: str) -> int:
        return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")

    def get(self, doc_id: str) -> int | None:
        key = self._key(doc_id)
        position = self._recent.get(key)
        if position is not None:
            return position
        at = int(np.searchsorted(self._keys, np.uint64(key)))
        if at < self._keys.size and int(self._keys[at]) == key:
            return int(self._positions[at])
        return None

    def set(self, doc_id: str, position: int) -> None:
        self._recent[self._key(doc_id)] = position
        if len(self._recent) >= self.FLUSH:
            self._flush()

    def __len__(self) -> int:
        """Distinct ids seen."""
        self._flush()
        return int(self._keys.size)

    def _flush(self) -> None:
        """Merge the recent ids into the sorted arrays (updating known ids in place, inserting the
        new ones): at most the old and the new arrays are held at once."""
        if not self._recent:
            return
        keys = np.fromiter(self._recent.keys(), np.uint64, len(self._recent))
        positions = np.fromiter(self._recent.values(), np.int64, len(self._recent))
        order = np.argsort(keys)
        keys, positions = keys[order], positions[order]
        at = np.searchsorted(self._keys, keys)
        known = at < self._keys.size
        known[known] = self._keys[at[known]] == keys[known]
        self._positions[at[known]] = positions[known]
        self._keys = np.insert(self._keys, at[~known], keys[~known])
        self._positions = np.insert(self._positions, at[~known], positions[~known])
        self._recent = {}


def shard_of(record: Document | BadRecord, position: int, world_size: int) -> int:
    """A document goes to the rank its id hashes to (so one rank orders every copy of an id);
    a bad record, which may have no id, by its position."""
    if world_size == 1:
        return 0
    if isinstance(record, BadRecord):
        return position % world_size
    return zlib.crc32(record.id.encode("utf-8")) % world_size


def shard(records: Iterable[Document | BadRecord], rank: int, world_size: int) -> Iterator[Document | BadRecord]:
    for position, record in enumerate(records):
        if shard_of(record, position, world_size) == rank:
            yield record


class Ingester:
    """One shard's run: :meth:`prepare_index` (rank 0), :meth:`run`, then :meth:`finish` (rank 0)."""

    def __init__(self, engine: Engine, layout: Layout, options: IngestOptions,
                 identity: dict[str, Any]) -> None:
        self.engine = engine
        self.layout = layout
        self.options = options
        state_dir = options.state_dir or _default_state_dir()
        key = {"engine": engine.info.identity, "target": options.alias or options.index,
               "rank": options.rank, "world_size": options.world_size}
        full_identity = {**identity, "layout": layout.identity(), "engine": engine.info.identity,
                         "target": options.alias or options.index, "world_size": options.world_size}
        earlier = engine.info.location if engine.info.identity != engine.info.location else None
        self.checkpoint = Checkpoint.open(state_dir, key, full_identity, options.resume, earlier, self._wrote_here)
        self._lock = threading.Lock()
        self._rng = random.Random(options.seed)

    def _wrote_here(self, saved: dict[str, Any]) -> bool:
        """Whether a saved checkpoint's load wrote to this cluster: its index is here and carries
        that load's epoch (seconds-resolution, recorded in the index's ``_meta``)."""
        index, epoch = saved.get("index"), saved.get("epoch")
        try:
            return (bool(index) and epoch is not None and self.engine.exists(index)
                    and splade_meta(self.engine, index).get("epoch") == epoch)
        except EngineError:
            return False

    # ---------------------------------------------------------------- index
    def target_index(self, proposed: str | None = None) -> str:
        """The concrete index: the resumed (or orphaned) one, ``proposed`` (a versioned name), or --index."""
        if self.checkpoint.index:
            return self.checkpoint.index
        if self.options.alias:
            return proposed or versioned_name(self.options.index)
        return self.options.index

    def prepare_index(self, index: str) -> None:
        """Create the index (its name saved first, so a kill leaves no orphan) or check an existing one
        fits this layout; then switch periodic refresh off for the load."""
        self.layout.prepare(self.engine)
        if self.checkpoint.index not in (None, index):
            self.checkpoint.reset()
        self.checkpoint.index = index
        if self.engine.exists(index):
            self.layout.check(self.engine.mappings(index), index)
            self._check_shards(index)
        else:
            self.checkpoint.reset()  # a new index holds nothing an earlier run may have recorded
            self.checkpoint.index = index
            self.checkpoint.save()
            try:
                self.engine.create_index(index, with_shards(self.layout.create_body(self.engine.info),
                                                            self.options.shards, self.options.replicas))
            except EngineError as exc:
                if "already_exists" not in str(exc) and "already exists" not in str(exc):
                    raise
                self.layout.check(self.engine.mappings(index), index)
        self._choose_epoch(index)
        try:
            previous = self.engine.refresh_interval(index)
            if self.checkpoint.refresh_interval is None:  # the setting found first is the one to restore
                # "-1" is what a killed load left behind, not the index's own setting: that is the default.
                self.checkpoint.refresh_interval = {"value": None if previous == "-1" else previous}
            self.checkpoint.save()
            self.engine.set_refresh_interval(index, "-1")
        except EngineError as exc:
            if exc.status not in (401, 403):
                raise
            _log.warning("%s: these credentials may not change index settings (HTTP %s): loading with periodic "
                         "refresh on", index, exc.status)
            self.checkpoint.refresh_interval = None

    def _check_shards(self, index: str) -> None:
        """``--shards``/``--replicas`` shape a new index only: an existing one that differs is refused
        rather than loaded with a layout the user did not ask for (shards cannot change in place)."""
        if self.options.shards is None and self.options.replicas is None:
            return
        layout = self.engine.shard_layout(index)
        if layout is None:
            return
        wanted = (self.options.shards or layout[0], layout[1] if self.options.replicas is None else self.options.replicas)
        if wanted != layout:
            raise ConfigError(f"{index} exists with {layout[0]} shard(s) and {layout[1]} replica(s), not the "
                              f"{wanted[0]} and {wanted[1]} asked for: drop --shards/--replicas, or load into a "
                              "new index (--alias makes one per load)")

    def _choose_epoch(self, index: str) -> None:
        """The epoch of this load's external versions: the interrupted load's when resuming it, else
        one above any epoch recorded in the index (and not below the clock), recorded there before
        any write. A resume is refused once a newer load has written to the index: its records
        would win over the resumed ones, and the resumed load could not complete honestly."""
        recorded = int(splade_meta(self.engine, index).get("epoch", -1))
        if self.checkpoint.epoch is not None and recorded > self.checkpoint.epoch:
            raise ConfigError(f"{self.checkpoint.path}: cannot resume: a newer load (epoch {recorded}) wrote to "
                              f"{index} after the interrupted one (epoch {self.checkpoint.epoch}); drop --resume to "
                              "load again")
        if self.checkpoint.epoch is None:
            self.checkpoint.epoch = max(int(time.time()) - EPOCH_ORIGIN, recorded + 1)
            try:
                set_splade_meta(self.engine, index, "epoch", self.checkpoint.epoch)
            except EngineError as exc:
                if exc.status not in (401, 403):
                    raise
                _log.warning("%s: these credentials may not change the mapping (HTTP %s): the load's versions "
                             "follow the clock alone", index, exc.status)
            self.checkpoint.save()

    def restore_refresh(self, index: str, saved: dict[str, Any] | None = None) -> None:
        """Put back the refresh setting the load switched off (rank 0's record, or ``saved``)."""
        saved = saved if saved is not None else self.checkpoint.refresh_interval
        if saved is not None:
            self.engine.set_refresh_interval(index, saved.get("value"))

    # ---------------------------------------------------------------- run
    def run(self, index: str, records: Iterable[Document | BadRecord], vectors: VectorSource,
            total: int | None = None, epoch: int | None = None) -> tuple[IngestSummary, int]:
        """Encode and index this shard's ``records`` (with external versions of ``epoch``, when
        given); returns what happened and how many distinct ids the shard holds."""
        options, checkpoint = self.options, self.checkpoint
        summary = IngestSummary(index=index, alias=options.alias)
        if checkpoint.index not in (None, index):  # this rank's last run wrote another index: start over
            checkpoint.reset()
        checkpoint.index = index
        checkpoint.epoch = epoch
        start = time.monotonic()
        self._watermark = _Watermark(checkpoint.done)
        self._in_flight: dict[str, int] = {}
        last_position = LastPositions()  # the only state that grows with the corpus: 16 bytes per id
        retry_later: list[tuple[int, Document]] = []
        pending: set[Future] = set()
        bar = tqdm(total=total, unit="doc", desc=f"ingest {index}", disable=not options.show_progress,
                   smoothing=0.1)
        try:
            with ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="bulk") as pool:
                block: list[tuple[int, Document]] = []
                for position, record in enumerate(records):
                    if isinstance(record, BadRecord):
                        if position not in checkpoint.skipped:
                            checkpoint.skipped[position] = {"where": record.where, "reason": record.reason}
                        self._watermark.settle([position])
                        bar.update(1)
                        continue
                    if last_position.get(record.id) is not None:
                        summary.duplicate_ids += 1
                        if len(summary.duplicate_examples) < 10:
                            summary.duplicate_examples.append(record.id)
                    last_position.set(record.id, position)
                    if position in checkpoint.skipped:  # its vector was refused (--skip-bad) by an earlier run
                        bar.update(1)
                        continue
                    if position < checkpoint.done:
                        failure = checkpoint.failed.get(record.id)
                        if (failure is not None and failure["position"] == position
                                and (failure["retryable"] or options.resend_refused)):
                            retry_later.append((position, record))  # sent once the whole shard is read
                            continue
                        if failure is None or failure["position"] != position:
                            summary.resumed += 1  # indexed by an earlier run
                        bar.update(1)
                        continue
                    block.append((position, record))
                    if len(block) >= options.encode_batch:
                        pending = self._submit(pool, index, block, vectors, summary, pending, bar)
                        block = []
                        pending = self._drain(pending, summary, bar, options.concurrency * 2)
                if block:
                    pending = self._submit(pool, index, block, vectors, summary, pending, bar)
                # What a previous run failed to index, unless a later record of the same id superseded it.
                retry = [(p, d) for p, d in retry_later if last_position.get(d.id) == p]
                for p, d in retry_later:
                    if last_position.get(d.id) != p and checkpoint.failed.get(d.id, {}).get("position") == p:
                        checkpoint.failed.pop(d.id)  # superseded by a later copy, which settles on its own
                summary.retried = len(retry)
                for offset in range(0, len(retry), options.encode_batch):
                    pending = self._submit(pool, index, retry[offset:offset + options.encode_batch], vectors,
                                           summary, pending, bar)
                    pending = self._drain(pending, summary, bar, options.concurrency * 2)
                self._drain(pending, summary, bar, 0)
            checkpoint.done = max(checkpoint.done, self._watermark.value)
            summary.failed = len(checkpoint.failed)
            summary.skipped = len(checkpoint.skipped)
            checkpoint.save()
        finally:
            bar.close()
            self._write_failures(summary)
        summary.seconds = time.monotonic() - start
        return summary, len(last_position)

    def finish(self, summary: IngestSummary) -> IngestSummary:
        """Restore refresh, refresh, count; with an alias, point it at the index only if it is complete."""
        index = summary.index
        self.restore_refresh(index)
        self.engine.refresh(index)
        stats = self.engine.stats(index)
        # _count counts top-level documents; _stats would count nested ones (ELSER passages) too.
        stats.docs = self.engine.count(index)
        summary.index_docs, summary.index_size_bytes = stats.docs, stats.size_bytes
        problems = []
        if summary.failed:
            problems.append(f"{summary.failed} documents were refused")
        if summary.skipped:
            problems.append(f"{summary.skipped} records were malformed and skipped")
        if stats.docs < summary.expected:
            problems.append(f"the index holds {stats.docs} of the corpus's {summary.expected} documents "
                            f"({summary.expected - stats.docs} missing)")
        elif stats.docs > summary.expected:
            extra = f"the index holds {stats.docs} documents, more than the corpus's {summary.expected}"
            if self.options.alias:
                problems.append(extra)
            else:  # documents of an earlier load into the same index: they hide nothing missing, but say so
                _log.warning("%s: %s (left from earlier loads into the same index)", index, extra)
        if problems:
            where = f"; reasons in {summary.failures_file}" if summary.failures_file else ""
            summary.problem = ", ".join(problems) + where + "; fix the cause, then rerun with --resume"
        summary.complete = not problems
        self.checkpoint.complete = summary.complete
        self.checkpoint.save()
        if summary.complete:
            record_loaded(self.engine, index, {"corpus": self.checkpoint.identity.get("corpus"),
                                               "documents": stats.docs, "time": round(time.time())})
        if self.options.alias and summary.complete:
            self.engine.point_alias(self.options.alias, index)
            summary.alias_moved = True
        return summary

    # ---------------------------------------------------------------- sending
    def _submit(self, pool: ThreadPoolExecutor, index: str, block: list[tuple[int, Document]],
                vectors: VectorSource, summary: IngestSummary, pending: set[Future], bar) -> set[Future]:
        """Encode one block and queue its bulk requests; copies of an id keep corpus order."""
        latest = {document.id: position for position, document in block}
        dropped = [position for position, document in block if latest[document.id] != position]
        block = [(position, document) for position, document in block if latest[document.id] == position]
        if any(document.id in self._in_flight for _, document in block):
            pending = self._drain(pending, summary, bar, 0)  # an earlier copy must settle first
        features = vectors([document for _, document in block])
        if len(features) != len(block):
            raise SpladeError(f"got {len(features)} vectors for {len(block)} documents")
        failpoint("encoded")
        chunks: list[_Chunk] = []
        current: list[_Pending] = []
        size = count = 0
        epoch = self.checkpoint.epoch
        for (position, document), vector in zip(block, features):
            if isinstance(vector, BadRecord):
                if not self.options.skip_bad:
                    raise InputError(f"{vector.where}: {vector.reason}")
                self.checkpoint.skipped[position] = {"where": vector.where, "reason": vector.reason}
                dropped.append(position)  # settled: recorded as skipped
                continue
            if self.layout.needs_vectors and not vector:
                summary.empty += 1
            body = self.layout.document(document, vector)
            line = bulk_line(index, document.id, body, None if epoch is None else document_version(epoch, position))
            if current and (len(current) >= self.options.chunk_docs or size + len(line) > self.options.chunk_bytes):
                chunks.append(_Chunk([p.position for p in current], current, count))
                current, size, count = [], 0, 0
            current.append(_Pending(position, document.id, document.where, line, body))
            size += len(line)
            count += len(vector)
        if current:
            chunks.append(_Chunk([p.position for p in current], current, count))
        if dropped:  # earlier copies in the same block (superseded) and skipped vectors: settled, not sent
            if chunks:
                chunks[-1].positions += dropped
            else:
                self._watermark.settle(dropped)
            bar.update(len(dropped))
        for chunk in chunks:
            for item in chunk.documents:
                self._in_flight[item.id] = self._in_flight.get(item.id, 0) + 1
            pending.add(pool.submit(self._send, index, chunk))
        return pending

    def _send(self, index: str, chunk: _Chunk) -> tuple[_Chunk, list[BulkFailure], int]:
        """One chunk: retried with backoff on 429/502/503/504 and lost connections (whole request or
        per refused document); a 413 splits it. Returns the documents that still failed."""
        retries, final = 0, []
        todo = chunk.documents
        while todo:
            try:
                failures = self._bulk(index, todo)
            except EngineError as exc:
                if exc.status == 413:
                    if len(todo) == 1:
                        final.append(BulkFailure(todo[0].id, 413, "request_too_large: one document exceeds the "
                                                                  "engine's http.max_content_length"))
                        return chunk, final, retries
                    half = len(todo) // 2
                    for part in (todo[:half], todo[half:]):
                        _, failed, more = self._send(index, _Chunk([], part, 0))
                        final += failed
                        retries += more + 1
                    return chunk, final, retries
                if not (exc.retryable or isinstance(exc, EngineUnavailable)) or retries >= self.options.max_retries:
                    raise
            else:
                failpoint("acknowledged")
                final += [f for f in failures if not f.retryable]
                again = {f.id for f in failures if f.retryable}
                if not again:
                    return chunk, final, retries
                if retries >= self.options.max_retries:
                    return chunk, final + [f for f in failures if f.retryable], retries
                todo = [pending for pending in todo if pending.id in again]
            time.sleep(self._backoff(retries))
            retries += 1
        return chunk, final, retries

    def _backoff(self, retries: int) -> float:
        """Full jitter: uniform in [0, min(cap, initial x 2^retries)], so clients do not retry in lock-step."""
        return self._rng.uniform(0, min(self.options.max_backoff, self.options.initial_backoff * 2 ** retries))

    def _bulk(self, index: str, documents: list[_Pending]) -> list[BulkFailure]:
        bulk_raw = getattr(self.engine, "bulk_raw", None)
        if bulk_raw is not None:
            return bulk_raw(b"".join(pending.line for pending in documents))
        return self.engine.bulk(index, [(pending.id, pending.body) for pending in documents])

    def _drain(self, pending: set[Future], summary: IngestSummary, bar, keep: int) -> set[Future]:
        """Wait until at most ``keep`` requests are in flight, booking the finished ones."""
        checkpoint = self.checkpoint
        while len(pending) > keep:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                chunk, failed, retries = future.result()
                refused = {failure.id: failure for failure in failed}
                summary.retries += retries
                summary.indexed += len(chunk.documents) - len(refused)
                summary.features += chunk.features
                for item in chunk.documents:
                    self._in_flight[item.id] -= 1
                    if not self._in_flight[item.id]:
                        del self._in_flight[item.id]
                    failure = refused.get(item.id)
                    if failure is None:
                        checkpoint.failed.pop(item.id, None)  # indexed now, or superseded by this later copy
                    else:
                        checkpoint.failed[item.id] = {"position": item.position, "where": item.where,
                                                      "status": failure.status, "reason": failure.reason,
                                                      "retryable": failure.retryable}
                bar.update(len(chunk.documents))
                if self._watermark.settle(chunk.positions) or refused:
                    checkpoint.done = self._watermark.value
                    failpoint("before-checkpoint")
                    checkpoint.save()
        return pending

    def _write_failures(self, summary: IngestSummary) -> None:
        """The failures file lists exactly what the checkpoint says is missing, or is removed."""
        path = self.options.failures_path
        entries = [{"where": v["where"], "reason": v["reason"]} for _, v in sorted(self.checkpoint.skipped.items())]
        entries += [{"id": doc_id, "where": v["where"], "status": v["status"], "reason": v["reason"],
                     "retryable": v["retryable"]} for doc_id, v in self.checkpoint.failed.items()]
        if not entries:
            path.unlink(missing_ok=True)
            return
        with atomic_text_file(path) as handle:
            handle.writelines(json.dumps(entry, ensure_ascii=False) + "\n" for entry in entries)
        summary.failures_file = str(path)


# ---------------------------------------------------------------- the entry point
def ingest_corpus(engine: Engine, layout: Layout, records: Iterable[Document | BadRecord], vectors: VectorSource,
                  options: IngestOptions, identity: dict[str, Any], group: Group | None = None,
                  total: int | None = None) -> IngestSummary:
    """Prepare, encode and load this rank's shard, gather, then check the index and finish.

    Every rank returns the same verdict (``complete``, ``problem``); counts are the whole run's
    on rank 0 and the rank's own elsewhere.
    """
    group = group or Group.single()
    ingester = Ingester(engine, layout, options, identity)
    plan = None
    if group.ranks.is_main:
        target = ingester.target_index()
        ingester.prepare_index(target)
        plan = (target, ingester.checkpoint.epoch, ingester.checkpoint.refresh_interval)
    target, epoch, refresh = group.broadcast(plan)
    try:
        summary, distinct = ingester.run(target, shard(records, options.rank, options.world_size), vectors, total, epoch)
    except BaseException:
        # Any rank puts back the setting rank 0 switched off, then fails; under torchrun the others are
        # stopped (their checkpoints keep what they settled), so none waits for this one in vain.
        try:
            ingester.restore_refresh(target, refresh)
        except EngineError as exc:
            _log.warning("%s: could not restore refresh_interval (%s); the next run restores it", target, exc)
        raise
    summary.expected = distinct  # a rank holds every copy of its ids, so the ranks' counts add up
    summaries = group.gather(summary)
    verdict = None
    if group.ranks.is_main:
        merged = summaries[0]
        for other in summaries[1:]:
            merged.merge(other)
        ingester.finish(merged)
        summary = merged
        verdict = (merged.complete, merged.problem)
    summary.complete, summary.problem = group.broadcast(verdict)
    return summary


def record_loaded(engine: Engine, index: str, loaded: dict[str, Any]) -> None:
    """Note a complete load in the index's ``_meta.splade_es.loaded``, so a later ``benchmark`` can
    trust the index without reading the corpus."""
    set_splade_meta(engine, index, "loaded", loaded)


def _concrete_meta(engine: Engine, index: str) -> tuple[str, dict[str, Any]]:
    """The one concrete index behind ``index`` (an index, or an alias of one) and its ``_meta``."""
    mappings = engine.mappings(index)
    if len(mappings) != 1:
        raise ConfigError(f"{index!r} is an alias of {len(mappings)} indices ({', '.join(sorted(mappings))}): "
                          "load into one index")
    concrete, mapping = next(iter(mappings.items()))
    return concrete, copy.deepcopy(mapping.get("_meta", {}))  # a copy: the engine's own answer is left alone


def splade_meta(engine: Engine, index: str) -> dict[str, Any]:
    """What splade-es noted in the index's mapping ``_meta.splade_es``."""
    return _concrete_meta(engine, index)[1].get("splade_es", {})


def set_splade_meta(engine: Engine, index: str, name: str, value: Any) -> None:
    """Set one entry of ``_meta.splade_es``, keeping the rest of ``_meta``."""
    concrete, meta = _concrete_meta(engine, index)
    meta.setdefault("splade_es", {})[name] = value
    engine.put_meta(concrete, meta)


def loaded_record(engine: Engine, index: str) -> dict[str, Any] | None:
    """What :func:`record_loaded` noted in the index (an alias's single index), or None."""
    mappings = engine.mappings(index)
    if len(mappings) != 1:
        return None
    return next(iter(mappings.values())).get("_meta", {}).get("splade_es", {}).get("loaded")


def versioned_name(base: str) -> str:
    """``base-YYYYMMDD-HHMMSS``: a new index for a zero-downtime reindex behind an alias."""
    return f"{base}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def _default_state_dir() -> Path:
    from platformdirs import user_state_dir

    return Path(user_state_dir("splade-es"))
