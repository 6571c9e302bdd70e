"""Training examples: sentence-transformers embedding-training-data files and BEIR training
splits, sampled as a mixture with one dataset per batch.

Line shapes of the sentence-transformers files (jsonl, optionally gzipped):
``[anchor, positive]``, ``[anchor, positive, negative]``, ``{"set": [t1, t2, ...]}`` (any two
members form a pair) and ``{"query": q, "pos": [...], "neg": [...]}`` (strings or lists).

The paper's mixture holds 15.5M examples (gooaq alone 3M), so a sentence-transformers file is
parsed once into a cache beside the run (one record per example plus an offsets array) and read
back memory-mapped: a rank's memory holds offsets and one permutation per dataset, not the texts,
and the page cache is shared by every rank of a machine.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import mmap
import os
import random
import shutil
from array import array
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from splade_es.errors import ConfigError, InputError
from splade_es.io.corpus import read_corpus, resolve_corpus
from splade_es.trainer.config import DatasetConfig

_log = logging.getLogger(__name__)
# Bumped whenever the cache layout or the parsing of a line changes.
_CACHE_VERSION = 1
# Names the order in which MixtureSampler walks a dataset; changed whenever that order changes, so
# a checkpoint of another order is seen to resume inexactly.
SAMPLER_ORDER = "numpy-permutation-per-epoch-1"


@dataclass(frozen=True)
class Example:
    query: str
    positive: str
    negatives: tuple[str, ...] = ()


@dataclass
class Dataset:
    """One dataset's examples (a list, or a memory-mapped :class:`ExampleStore` view).

    ``uses_negatives`` is decided once, when the dataset is loaded, from ``negatives`` in its
    config: every rank loads the same files, so every rank builds the same groups for a batch.
    """

    name: str
    examples: Sequence[Example]
    bad_lines: int = 0
    bad_examples: list[str] = field(default_factory=list)  # first few FILE:LINE: reason
    uses_negatives: bool = False
    dropped: int = 0  # examples left out for lacking a negative (negatives = "drop")


def load_dataset(spec: DatasetConfig, on_bad_line: str = "count", seed: int = 0,
                 cache_dir: str | Path | None = None) -> Dataset:
    """Every example of one dataset; malformed lines are counted (or, with ``fail``, raised).

    A sentence-transformers file is parsed into ``cache_dir`` (the user cache directory when
    None) and memory-mapped from there; a cache built earlier from the same file is reused.
    """
    path = Path(spec.path)
    if not path.exists():
        raise ConfigError(f"dataset {spec.name!r}: {path} does not exist")
    fmt = spec.format
    if fmt == "auto":
        fmt = "beir" if path.is_dir() else "sentence-transformers"
    if fmt == "beir":
        dataset = _read_beir(spec, path)
        has_negative, first_without = np.zeros(len(dataset.examples), dtype=bool), f"{path} (BEIR pairs have none)"
    else:
        store = ExampleStore.open_or_build(path, Path(cache_dir or default_cache_dir()),
                                           spec.name, on_bad_line, seed)
        if on_bad_line == "fail" and store.meta["bad_lines"]:  # a cache built under "count"
            raise InputError(store.meta["bad_examples"][0])
        dataset = Dataset(spec.name, store, store.meta["bad_lines"], store.meta["bad_examples"])
        has_negative, first_without = store.has_negative, store.meta["first_without_negative"]
    if not len(dataset.examples):
        raise ConfigError(f"dataset {spec.name!r} ({path}) has no usable examples"
                          + (f" ({dataset.bad_lines} malformed lines, e.g. {dataset.bad_examples[0]})"
                             if dataset.bad_examples else ""))
    _apply_negatives_policy(dataset, spec, has_negative, first_without)
    return dataset


def _apply_negatives_policy(dataset: Dataset, spec: DatasetConfig, has_negative: np.ndarray,
                            first_without: str | None) -> None:
    """``negatives``: auto (used when every example has one; with only some, ignored and
    logged), use (every example must have one), drop (examples without one are left out),
    ignore (in-batch negatives only)."""
    total, with_negative = len(has_negative), int(has_negative.sum())
    policy = spec.negatives
    if policy == "use" and with_negative < total:
        raise ConfigError(f"dataset {spec.name!r}: negatives = \"use\" but {total - with_negative} of {total} examples "
                          f"have none (first: {first_without}); use \"drop\" to leave them out")
    if policy == "drop":
        if not with_negative:
            raise ConfigError(f"dataset {spec.name!r}: negatives = \"drop\" but no example has a negative")
        dataset.dropped = total - with_negative
        if dataset.dropped:
            _log.warning("dataset %s: dropped %d of %d examples without a negative", spec.name, dataset.dropped, total)
            dataset.examples = _Subset(dataset.examples, np.flatnonzero(has_negative))
        dataset.uses_negatives = True
        return
    if policy == "auto" and 0 < with_negative < total:
        _log.warning("dataset %s: only %d of %d examples have a negative, so none are used (in-batch negatives "
                     "only); set negatives = \"drop\" to train on the %d with one", spec.name, with_negative, total,
                     with_negative)
    dataset.uses_negatives = policy == "use" or (policy == "auto" and with_negative == total)


class _Subset(Sequence):
    """Some rows of another sequence, by index."""

    def __init__(self, base: Sequence[Example], rows: np.ndarray) -> None:
        self.base, self.rows = base, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Example:
        return self.base[int(self.rows[index])]


def default_cache_dir() -> Path:
    """Where parsed datasets live unless ``data.cache_dir`` says otherwise."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("splade-es")) / "training-data"


class ExampleStore(Sequence):
    """A parsed sentence-transformers file on disk: ``examples.bin`` (one JSON array
    ``[query, positive, *negatives]`` per example), ``offsets.npy`` (int64, n + 1),
    ``has_negative.npy`` and ``meta.json``; read back memory-mapped, one example at a time."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        self.offsets = np.load(directory / "offsets.npy", mmap_mode="r")
        self.has_negative = np.load(directory / "has_negative.npy", mmap_mode="r")
        self._handle = (directory / "examples.bin").open("rb")
        size = os.fstat(self._handle.fileno()).st_size
        self._data = mmap.mmap(self._handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> Example:
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        query, positive, *negatives = orjson.loads(self._data[start:end])
        return Example(query, positive, tuple(negatives))

    @classmethod
    def open_or_build(cls, path: Path, cache_dir: Path, name: str, on_bad_line: str, seed: int) -> ExampleStore:
        """The cache of ``path``, built first when missing or stale (keyed by the file's
        absolute path, size and modification time, and the seed that pairs "set" lines)."""
        stat = path.stat()
        key = hashlib.sha1(orjson.dumps([_CACHE_VERSION, str(path.resolve()), stat.st_size, stat.st_mtime_ns,
                                         seed])).hexdigest()[:16]
        target = cache_dir / f"{name}-{key}"
        if not (target / "meta.json").is_file():
            cache_dir.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache_dir))
            try:
                _build_store(path, staging, name, on_bad_line, seed)
                try:
                    os.replace(staging, target)
                except OSError:  # another process built it meanwhile
                    if not (target / "meta.json").is_file():
                        raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return cls(target)


def _build_store(path: Path, directory: Path, name: str, on_bad_line: str, seed: int) -> None:
    rng = random.Random(f"{seed}/{name}")  # which two members of a "set" line pair up
    offsets, has_negative = array("q", [0]), bytearray()  # compact: gooaq has 3M lines
    bad_examples, bad_lines, first_without = [], 0, None
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle, (directory / "examples.bin").open("wb") as out:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    example = parse_line(orjson.loads(line), rng)
                except (orjson.JSONDecodeError, InputError) as exc:
                    reason = f"{path}:{number}: {exc.msg if isinstance(exc, orjson.JSONDecodeError) else exc}"
                    if on_bad_line == "fail":
                        raise InputError(reason) from None
                    bad_lines += 1
                    if len(bad_examples) < 5:
                        bad_examples.append(reason)
                    continue
                record = orjson.dumps([example.query, example.positive, *example.negatives])
                out.write(record)
                offsets.append(offsets[-1] + len(record))
                has_negative.append(bool(example.negatives))
                if not example.negatives and first_without is None:
                    first_without = f"{path}:{number}"
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    np.save(directory / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    np.save(directory / "has_negative.npy", np.frombuffer(bytes(has_negative), dtype=np.uint8).astype(bool))
    meta = {"source": str(path.resolve()), "examples": len(has_negative), "bad_lines": bad_lines,
            "bad_examples": bad_examples, "first_without_negative": first_without}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def parse_line(record: Any, rng: random.Random) -> Example:
    """One example from any of the four line shapes."""
    if isinstance(record, list):
        texts = _texts(record, "a list line")
        if len(texts) < 2:
            raise InputError(f"a list line needs at least [anchor, positive], got {len(texts)} text(s)")
        return Example(texts[0], texts[1], tuple(texts[2:]))
    if isinstance(record, dict) and "set" in record:
        texts = _texts(record["set"], '"set"')
        if len(texts) < 2:
            raise InputError('a "set" line needs at least two texts')
        first, second = rng.sample(range(len(texts)), 2)
        return Example(texts[first], texts[second])
    if isinstance(record, dict) and "query" in record and "pos" in record:
        query = _texts([record["query"]], '"query"')[0]
        positives = _texts(record["pos"] if isinstance(record["pos"], list) else [record["pos"]], '"pos"')
        negatives = record.get("neg") or []
        negatives = _texts(negatives if isinstance(negatives, list) else [negatives], '"neg"')
        if not positives:
            raise InputError('"pos" is empty')
        return Example(query, positives[0], tuple(negatives))
    raise InputError('expected [anchor, positive(, negative)], {"set": [...]} or {"query", "pos", "neg"}')


def _texts(values: Any, what: str) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise InputError(f"{what} must hold strings")
    if any(not v.strip() for v in values):
        raise InputError(f"{what} holds an empty text")
    return list(values)


def _read_beir(spec: DatasetConfig, path: Path) -> Dataset:
    """(query, relevant document) pairs from ``qrels/<split>.tsv`` with score > 0."""
    qrels = path / "qrels" / f"{spec.split}.tsv"
    for needed in (path / "corpus.jsonl", path / "queries.jsonl", qrels):
        if not needed.is_file():
            raise ConfigError(f"dataset {spec.name!r}: BEIR layout needs {needed}")
    documents = {doc.id: "\n".join(value for value in doc.fields.values() if value)
                 for doc in read_corpus(resolve_corpus(path, None, None))}
    queries = {str(q["_id"]): q["text"] for q in map(orjson.loads, (path / "queries.jsonl").read_bytes().splitlines())
               if q}
    dataset = Dataset(spec.name, [])
    for number, line in enumerate(qrels.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split("\t")
        if number == 1 and not parts[-1].strip().lstrip("-").isdigit():
            continue  # header
        if len(parts) < 3 or not parts[-1].strip().lstrip("-").isdigit():
            dataset.bad_lines += 1
            continue
        query_id, doc_id, score = parts[0], parts[-2], int(parts[-1])
        if score > 0 and query_id in queries and documents.get(doc_id):
            dataset.examples.append(Example(queries[query_id], documents[doc_id]))
        elif score > 0:
            dataset.bad_lines += 1
    return dataset


class MixtureSampler:
    """Batches drawn dataset by dataset with the configured weights, reproducibly.

    The dataset of step ``t`` depends only on the seed and ``t``, so every rank picks the same
    one and a resumed run continues the same sequence. Each dataset is walked in a seeded
    permutation per epoch, computed once per dataset and epoch (a step costs its batch, not
    its dataset's size); the whole batch comes from one dataset (in-batch negatives share a
    domain) and rank ``r`` of ``world`` reads only its slice.
    """

    def __init__(self, datasets: Sequence[Dataset], weights: Sequence[float], batch_size: int, seed: int) -> None:
        if not datasets:
            raise ConfigError("no training datasets configured ([[data.datasets]] in the config)")
        small = [d.name for d in datasets if len(d.examples) < batch_size]
        if small:
            raise ConfigError(f"dataset(s) {', '.join(small)} hold fewer examples than one batch ({batch_size})")
        total = float(sum(weights))
        self.datasets = list(datasets)
        self.probabilities = [w / total for w in weights]
        self.batch_size = batch_size
        self.seed = seed
        self.cursors = {d.name: [0, 0] for d in datasets}  # epoch, position
        self._orders: dict[str, tuple[int, np.ndarray]] = {}  # the current epoch's permutation

    def dataset_for(self, step: int) -> Dataset:
        return random.Random(f"{self.seed}/step/{step}").choices(self.datasets, self.probabilities)[0]

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> tuple[str, list[Example]]:
        """Step ``step``'s batch (``batch_size`` examples over all ranks), this rank's slice."""
        dataset = self.dataset_for(step)
        epoch, position = self.cursors[dataset.name]
        chosen: list[np.ndarray] = []
        needed = self.batch_size
        while needed:
            order = self._order(dataset, epoch)
            take = order[position:position + needed]
            chosen.append(take)
            position += len(take)
            needed -= len(take)
            if position >= len(order):
                epoch, position = epoch + 1, 0
        self.cursors[dataset.name] = [epoch, position]
        per_rank = self.batch_size // world_size
        mine = np.concatenate(chosen)[rank * per_rank:(rank + 1) * per_rank]
        return dataset.name, [dataset.examples[int(i)] for i in mine]

    def _order(self, dataset: Dataset, epoch: int) -> np.ndarray:
        cached = self._orders.get(dataset.name)
        if cached is None or cached[0] != epoch:
            digest = hashlib.sha256(f"{self.seed}/{dataset.name}/{epoch}".encode()).digest()
            size = len(dataset.examples)
            order = np.random.default_rng(int.from_bytes(digest[:8], "little")).permutation(size)
            cached = (epoch, order.astype(np.int32 if size < 2**31 else np.int64))
            self._orders[dataset.name] = cached
        return cached[1]

    def state_dict(self) -> dict[str, Any]:
        return {"order": SAMPLER_ORDER, "cursors": {k: list(v) for k, v in self.cursors.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("order") != SAMPLER_ORDER:
            _log.warning("the checkpoint's sampler walked its datasets in another order (%s): the run continues from "
                         "the same positions, but not with the examples an uninterrupted run would have drawn",
                         state.get("order", "an older splade-es"))
        self.cursors.update({k: list(v) for k, v in state["cursors"].items() if k in self.cursors})


def iter_adapt_texts(paths: Sequence[str]) -> Iterator[str]:
    """Unlabelled text for the adaptation stage: plain lines, or the texts of JSON lines."""
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"adaptation text {path} does not exist")
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                if line[0] in "[{":
                    record = orjson.loads(line)
                    texts = record if isinstance(record, list) else [record.get("title", ""), record.get("text", "")]
                    line = "\n".join(t for t in texts if isinstance(t, str) and t)
                if line:
                    yield line
