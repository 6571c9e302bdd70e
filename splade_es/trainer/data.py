"""Training examples: sentence-transformers embedding-training-data files and BEIR training
splits, sampled as a mixture with one dataset per batch.

Line shapes of the sentence-transformers files (jsonl, optionally gzipped):
``[anchor, positive]``, ``[anchor, positive, negative]``, ``{"set": [t1, t2, ...]}`` (any two
members form a pair) and ``{"query": q, "pos": [...], "neg": [...]}`` (strings or lists).
"""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from splade_es.errors import ConfigError, InputError
from splade_es.io.corpus import read_corpus, resolve_corpus
from splade_es.trainer.config import DatasetConfig


@dataclass(frozen=True)
class Example:
    query: str
    positive: str
    negatives: tuple[str, ...] = ()


@dataclass
class Dataset:
    name: str
    examples: list[Example]
    bad_lines: int = 0
    bad_examples: list[str] = field(default_factory=list)  # first few FILE:LINE: reason


def load_dataset(spec: DatasetConfig, on_bad_line: str = "count", seed: int = 0) -> Dataset:
    """Every example of one dataset; malformed lines are counted (or, with ``fail``, raised)."""
    path = Path(spec.path)
    if not path.exists():
        raise ConfigError(f"dataset {spec.name!r}: {path} does not exist")
    fmt = spec.format
    if fmt == "auto":
        fmt = "beir" if path.is_dir() else "sentence-transformers"
    dataset = _read_beir(spec, path) if fmt == "beir" else _read_st(spec, path, on_bad_line, seed)
    if not dataset.examples:
        raise ConfigError(f"dataset {spec.name!r} ({path}) has no usable examples"
                          + (f" ({dataset.bad_lines} malformed lines, e.g. {dataset.bad_examples[0]})"
                             if dataset.bad_examples else ""))
    return dataset


def _read_st(spec: DatasetConfig, path: Path, on_bad_line: str, seed: int) -> Dataset:
    dataset = Dataset(spec.name, [])
    rng = random.Random(f"{seed}/{spec.name}")  # which two members of a "set" line pair up
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    dataset.examples.append(parse_line(orjson.loads(line), rng))
                except (orjson.JSONDecodeError, InputError) as exc:
                    reason = f"{path}:{number}: {exc.msg if isinstance(exc, orjson.JSONDecodeError) else exc}"
                    if on_bad_line == "fail":
                        raise InputError(reason) from None
                    dataset.bad_lines += 1
                    if len(dataset.bad_examples) < 5:
                        dataset.bad_examples.append(reason)
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    return dataset


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
    permutation per epoch; the whole batch comes from one dataset (in-batch negatives share a
    domain) and rank ``r`` of ``world`` takes its slice.
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

    def dataset_for(self, step: int) -> Dataset:
        return random.Random(f"{self.seed}/step/{step}").choices(self.datasets, self.probabilities)[0]

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> tuple[str, list[Example]]:
        """Step ``step``'s batch (``batch_size`` examples over all ranks), this rank's slice."""
        dataset = self.dataset_for(step)
        epoch, position = self.cursors[dataset.name]
        chosen = []
        while len(chosen) < self.batch_size:
            order = self._order(dataset, epoch)
            take = order[position:position + self.batch_size - len(chosen)]
            chosen += [dataset.examples[i] for i in take]
            position += len(take)
            if position >= len(order):
                epoch, position = epoch + 1, 0
        self.cursors[dataset.name] = [epoch, position]
        per_rank = self.batch_size // world_size
        return dataset.name, chosen[rank * per_rank:(rank + 1) * per_rank]

    def _order(self, dataset: Dataset, epoch: int) -> list[int]:
        order = list(range(len(dataset.examples)))
        random.Random(f"{self.seed}/{dataset.name}/{epoch}").shuffle(order)
        return order

    def state_dict(self) -> dict[str, Any]:
        return {"cursors": {k: list(v) for k, v in self.cursors.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
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
