r"""An embedded engine for users without a cluster: exact dot products and BM25, on disk.

Each index is a directory holding its mapping, its settings (``settings.json``: the sparse
backend) and an append-only JSON-lines log of documents (a later line with the same id replaces
the earlier one). Writers take a file lock, so several processes (torchrun ranks) can load one
index. What a query needs (the ids and each document's place in the log, a vector field's matrix,
a SEISMIC index) is built from the log once and kept under ``cache/`` with the log size it
reflects; documents' sources stay on disk until a hit returns them.

Sparse vector queries are exact by default. An index whose backend is ``seismic`` answers a
query that is nothing but a dot product on one vector field (``sparse_vector``, or ``bool.should``
of linear ``rank_feature`` clauses, without rescore) with SEISMIC's approximate top k (total
hits then say ``gte``); every other query, on every index, is evaluated exactly.

It is a strict reference: what it answers, it scores as the engines do, and every other query
form or option is refused with HTTP 400 naming it. ``rank_feature`` (``linear`` only: the
default saturation and log/sigmoid are not dot products), ``sparse_vector`` (``prune: false``)
and boosted ``term`` queries on the vector field are dot products over a scipy CSR matrix;
``match`` / ``multi_match`` (``best_fields``) and ``term`` on text use Lucene's BM25 (k1 1.2,
b 0.75; scored by bm25s, checked against the formula in the tests) on fields mapped with the ``english`` analyzer,
approximated here by lowercased ``\w+`` words, Lucene's English stop words and Porter
stemming (no possessive filter, simpler word splitting than Lucene's tokenizer).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import scipy.sparse as sp

from splade_es.errors import InputError
from splade_es.io.atomic import atomic_write_text
from splade_es.io.failpoints import failpoint
from splade_es.io.weights import check_features
from splade_es.toolkit.engines.base import BulkFailure, Capabilities, Engine, EngineError, EngineInfo, IndexStats

VECTOR_TYPES = ("rank_features", "sparse_vector")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._+-]*$")
_STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these "
    "they this to was will with".split()
)
_WORD = re.compile(r"\w+", re.UNICODE)
# What cached BM25 terms were analysed with: a cache written by other analysis is rebuilt.
ANALYSIS = hashlib.sha1(orjson.dumps({"stop": sorted(_STOP_WORDS), "word": _WORD.pattern, "stem": "porter",
                                      "snowballstemmer": importlib.metadata.version("snowballstemmer")})).hexdigest().encode()
_SEARCH_OPTIONS = frozenset({"query", "size", "from", "_source", "track_total_hits", "rescore"})
MAX_RESULT_WINDOW = 10_000  # index.max_result_window's default on both engines


def default_data_dir() -> Path:
    configured = os.environ.get("SPLADE_ES_DATA_DIR")
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("splade-es")) / "local-engine"


class LocalEngine(Engine):
    """The :class:`Engine` interface over a directory; see the module docstring."""

    def __init__(self, data_dir: str | Path | None = None, sparse_backend: str | None = None) -> None:
        """``sparse_backend`` (default: SPLADE_ES_LOCAL_BACKEND, else ``exact``) is recorded in each
        index this engine creates; ``seismic`` answers sparse vector queries approximately (see
        :mod:`splade_es.toolkit.engines.seismic`), everything else stays exact."""
        self.sparse_backend = _backend(sparse_backend or os.environ.get("SPLADE_ES_LOCAL_BACKEND") or "exact")
        self.root = Path(data_dir).expanduser() if data_dir else default_data_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "indices").mkdir(exist_ok=True)
        self.info = EngineInfo("local", _package_version(), Capabilities(rank_features=True, sparse_vector_field=True,
                                                                         sparse_vector_query=True), str(self.root))
        self._cache: dict[str, _IndexData] = {}

    # ---------------------------------------------------------------- indices
    def create_index(self, name: str, body: dict[str, Any]) -> None:
        if not _NAME.match(name):
            raise EngineError(f"invalid index name {name!r}: lowercase letters, digits and . _ + - only", 400)
        with self._lock():
            if self.exists(name):
                raise EngineError(f"index {name!r} already exists", 400)
            mappings = body.get("mappings", {})
            for field_name, spec in mappings.get("properties", {}).items():
                if spec.get("type") not in (*VECTOR_TYPES, "text", "keyword", None):
                    raise EngineError(f"field {field_name!r}: type {spec.get('type')!r} is not supported locally", 400)
            directory = self._dir(name)
            directory.mkdir()
            atomic_write_text(directory / "mappings.json", json.dumps(mappings, indent=2))
            atomic_write_text(directory / "settings.json", json.dumps({"sparse_backend": self.sparse_backend,
                                                                       "seismic": {}}))
            (directory / "docs.jsonl").touch()

    def set_sparse_backend(self, name: str, backend: str, **seismic: Any) -> None:
        """Switch an index's sparse vector queries to ``exact`` or ``seismic`` (with SEISMIC
        parameters: :data:`~splade_es.toolkit.engines.seismic.PARAMETERS`); kept with the index."""
        from splade_es.toolkit.engines.seismic import check_parameters

        check_parameters(seismic)
        with self._lock():
            if not self._dir(name).is_dir():
                raise EngineError(f"no such index {name!r}", 404)
            atomic_write_text(self._dir(name) / "settings.json",
                              json.dumps({"sparse_backend": _backend(backend), "seismic": seismic}))
            self._cache.pop(name, None)

    def delete_index(self, name: str) -> bool:
        with self._lock():
            if not self._dir(name).is_dir():
                return False
            shutil.rmtree(self._dir(name))
            aliases = {a: [i for i in targets if i != name] for a, targets in self._aliases().items()}
            self._save_aliases({a: t for a, t in aliases.items() if t})
            self._cache.pop(name, None)
            return True

    def exists(self, name: str) -> bool:
        return self._dir(name).is_dir() or name in self._aliases()

    def mappings(self, name: str) -> dict[str, dict[str, Any]]:
        return {index: json.loads((self._dir(index) / "mappings.json").read_text()) for index in self._resolve(name)}

    def put_meta(self, index: str, meta: dict[str, Any]) -> None:
        with self._lock():
            path = self._dir(index) / "mappings.json"
            mappings = json.loads(path.read_text())
            mappings["_meta"] = meta
            atomic_write_text(path, json.dumps(mappings, indent=2))
            self._cache.pop(index, None)

    def alias_targets(self, alias: str) -> list[str]:
        return sorted(self._aliases().get(alias, []))

    def point_alias(self, alias: str, index: str) -> list[str]:
        with self._lock():
            if not self._dir(index).is_dir():
                raise EngineError(f"no such index {index!r}", 404)
            if self._dir(alias).is_dir():
                raise EngineError(f"an index called {alias!r} exists: an alias cannot take its name", 400)
            aliases = self._aliases()
            old = [name for name in aliases.get(alias, []) if name != index]
            aliases[alias] = [index]
            self._save_aliases(aliases)
            return old

    # ---------------------------------------------------------------- documents
    def bulk(self, index: str, documents: Sequence[tuple[str, dict[str, Any]]]) -> list[BulkFailure]:
        targets = self._resolve(index)
        if len(targets) != 1:
            raise EngineError(f"alias {index!r} points at {len(targets)} indices: write to one index", 400)
        mappings = self.mappings(targets[0])[targets[0]]
        lines, failures = [], []
        for doc_id, source in documents:
            problem = _check_document(source, mappings)
            if problem:
                failures.append(BulkFailure(str(doc_id), 400, f"mapper_parsing_exception: {problem}"))
            else:
                lines.append(json.dumps({"_id": str(doc_id), "_source": source}, ensure_ascii=False) + "\n")
        if lines:
            with self._lock(), (self._dir(targets[0]) / "docs.jsonl").open("ab") as log:
                _drop_torn_tail(log)
                payload = "".join(lines).encode("utf-8")
                log.write(payload[:len(payload) // 2])
                log.flush()
                failpoint("local-write")  # a kill here leaves a torn last line, which readers must survive
                log.write(payload[len(payload) // 2:])
                log.flush()
                os.fsync(log.fileno())
        return failures

    def search(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        unknown = set(body) - _SEARCH_OPTIONS
        if unknown:
            raise EngineError(f"the local engine does not support search option(s) {sorted(unknown)}", 400)
        started = time.perf_counter()
        hits, total = [], 0
        size, offset = _count("size", body.get("size", 10)), _count("from", body.get("from", 0))
        if size + offset > MAX_RESULT_WINDOW:
            raise EngineError(f"Result window is too large, from + size must be less than or equal to "
                              f"[{MAX_RESULT_WINDOW}] but was [{size + offset}]", 400)
        includes = _includes(body.get("_source", True))
        candidates: list[tuple[float, str, int]] = []
        approximate, opened = False, {}
        for name in self._resolve(index):
            data = opened[name] = self._data(name)  # the same snapshot scores and returns the hits
            vector = None if "rescore" in body else _vector_only(data, body.get("query"))
            if vector is not None and data.settings["sparse_backend"] == "seismic":
                order, found = data.seismic(vector[0]).search(vector[1], offset + size)
                scores = np.zeros(data.live)
                scores[order] = found
                total += order.size  # SEISMIC returns its top k, not a count of every match
                approximate = True
            else:
                scores, matched = _Query(data).evaluate(body.get("query", {"match_all": {}}))
                rows = np.flatnonzero(matched)
                total += rows.size
                if "rescore" in body:
                    order = _rescored(data, scores, rows, body["rescore"], offset + size)
                else:
                    order = _ranked(rows, scores, offset + size)
            candidates += [(float(scores[r]), name, int(r)) for r in order[: offset + size]]
        candidates.sort(key=lambda c: -c[0])
        for score, name, row in candidates[offset: offset + size]:  # only returned hits touch the log
            data = opened[name]
            source = _select(data.row(row)[1], includes) if includes != [] else None
            hits.append({"_index": name, "_id": data.ids[row], "_score": score, "_source": source})
        took = round((time.perf_counter() - started) * 1000, 3)  # milliseconds, like the engines' "took"
        return {"took": took, "timed_out": False, "hits": {"total": {"value": total,
                                                                  "relation": "gte" if approximate else "eq"},
                                                        "max_score": hits[0]["_score"] if hits else None, "hits": hits}}

    def count(self, index: str) -> int:
        return sum(self._data(name).live for name in self._resolve(index))

    def stats(self, index: str) -> IndexStats:
        names = self._resolve(index)
        size = sum(f.stat().st_size for name in names for f in self._dir(name).rglob("*") if f.is_file())
        return IndexStats(self.count(index), size, names)

    def get(self, index: str, doc_id: str) -> dict[str, Any] | None:
        for name in self._resolve(index):
            data = self._data(name)
            if doc_id in data.rows:
                return data.row(data.rows[doc_id])[1]
        return None

    def refresh(self, index: str) -> None:
        self._resolve(index)

    # ---------------------------------------------------------------- storage
    def _dir(self, name: str) -> Path:
        return self.root / "indices" / name

    def _resolve(self, name: str) -> list[str]:
        if self._dir(name).is_dir():
            return [name]
        targets = self._aliases().get(name)
        if not targets:
            raise EngineError(f"no such index {name!r}", 404)
        return list(targets)

    def _aliases(self) -> dict[str, list[str]]:
        path = self.root / "aliases.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def _save_aliases(self, aliases: dict[str, list[str]]) -> None:
        atomic_write_text(self.root / "aliases.json", json.dumps(aliases, indent=2))

    @contextmanager
    def _lock(self) -> Iterator[None]:
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _data(self, name: str) -> _IndexData:
        """The index in memory, re-read when its log has grown."""
        log = self._dir(name) / "docs.jsonl"
        size = log.stat().st_size
        cached = self._cache.get(name)
        if cached is None or cached.log_size != size:
            cached = _IndexData(self.mappings(name)[name], log)
            self._cache[name] = cached
        return cached


class _IndexData:
    """Live documents of one index: ids and where each one's latest line starts in the log (a
    source is read from disk when a hit or a keyword filter needs it), and per field a score
    structure built on first use. Each structure is also kept under ``cache/`` with the log size
    it reflects, so a reopened index whose log has not changed loads arrays instead of parsing
    JSON; a grown log rebuilds them. Memory is ~130 bytes per document for the id map plus the
    structures (a vector field: 8 bytes per stored feature)."""

    def __init__(self, mappings: dict[str, Any], log: Path) -> None:
        self.properties = mappings.get("properties", {})
        self.log = log
        self.cache = log.parent / "cache"
        self.log_size = log.stat().st_size
        self._matrices: dict[str, tuple[sp.csc_matrix, dict[str, int]]] = {}
        self._bm25: dict[str, BM25] = {}
        self._seismic: dict[str, Any] = {}
        settings = log.parent / "settings.json"  # absent in indices of earlier versions: exact
        self.settings = json.loads(settings.read_text()) if settings.is_file() else {"sparse_backend": "exact"}
        cached = self._load("rows")
        if cached is not None:
            self.ids = orjson.loads(cached["ids"].tobytes())
            self.offsets = cached["offsets"]
        else:
            self._parse()
        self.rows = {doc_id: row for row, doc_id in enumerate(self.ids)}

    # ---------------------------------------------------------------- the log
    def _lines(self) -> Iterator[tuple[int, int, dict[str, Any]]]:
        """``(line number, byte offset, record)`` of every complete line, up to ``log_size``."""
        offset = 0
        with self.log.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                if offset + len(line) > self.log_size or not line.endswith(b"\n"):
                    break  # a write killed half-way (the next write truncates it), or one after our snapshot
                if line.strip():
                    try:
                        record = orjson.loads(line)
                        record["_id"], record["_source"]
                    except (ValueError, KeyError, TypeError) as exc:
                        raise EngineError(f"{self.log}:{number}: not a stored document ({type(exc).__name__}: "
                                          f"{exc}); the local index is damaged: delete the index and ingest again",
                                          500) from None
                    yield number, offset, record
                offset += len(line)

    def _parse(self) -> None:
        """One pass over the log for the ids and offsets only: counting or fetching documents (what
        a load's final check does) must not build score structures."""
        rows: dict[str, int] = {}
        self.ids, offsets = [], []
        for _, offset, record in self._lines():
            row = rows.setdefault(record["_id"], len(self.ids))
            if row == len(self.ids):
                self.ids.append(record["_id"])
                offsets.append(offset)
            else:  # a later copy replaces the document
                offsets[row] = offset
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self._save("rows", ids=np.frombuffer(orjson.dumps(self.ids), dtype=np.uint8), offsets=self.offsets)

    def sources(self) -> Iterator[dict[str, Any]]:
        """Every live document's source, in row order, read from the log one at a time."""
        with self.log.open("rb") as handle:
            for offset in self.offsets.tolist():
                handle.seek(offset)
                yield orjson.loads(handle.readline())["_source"]

    @property
    def live(self) -> int:
        return len(self.ids)

    def row(self, row: int) -> tuple[str, dict[str, Any]]:
        with self.log.open("rb") as handle:
            handle.seek(int(self.offsets[row]))
            return self.ids[row], orjson.loads(handle.readline())["_source"]

    def field_type(self, name: str) -> str | None:
        return self.properties.get(name, {}).get("type")

    # ---------------------------------------------------------------- score structures
    def features(self, field_name: str) -> tuple[sp.csc_matrix, dict[str, int]]:
        """Documents x features matrix of a vector field (columns: one posting list per feature,
        float32 weights as the engines store them), and the feature -> column map."""
        if field_name not in self._matrices:
            cached = self._load(f"vectors-{_safe(field_name)}")
            if cached is None:
                builder = _MatrixBuilder()
                for source in self.sources():
                    builder.add(source.get(field_name))
                self._matrices[field_name] = builder.matrix()
                self._save_matrix(field_name)
            else:
                matrix = sp.csc_matrix((cached["data"], cached["indices"], cached["indptr"]),
                                       shape=tuple(cached["shape"]))
                columns = {name: column for column, name in enumerate(orjson.loads(cached["columns"].tobytes()))}
                self._matrices[field_name] = (matrix, columns)
        return self._matrices[field_name]

    def _save_matrix(self, field_name: str) -> None:
        matrix, columns = self._matrices[field_name]
        self._save(f"vectors-{_safe(field_name)}", data=matrix.data, indices=matrix.indices, indptr=matrix.indptr,
                   shape=np.asarray(matrix.shape), columns=np.frombuffer(orjson.dumps(list(columns)), dtype=np.uint8))

    def seismic(self, field_name: str):
        """The field's SEISMIC index with the index's parameters: loaded from the cache when it was
        built from this log with these build parameters, else built (and cached)."""
        from splade_es.toolkit.engines.seismic import BUILD_PARAMETERS, U16_COMPONENTS, SeismicField, check_parameters

        if field_name not in self._seismic:
            parameters = check_parameters(self.settings.get("seismic", {}))
            build = orjson.dumps({k: parameters[k] for k in BUILD_PARAMETERS})
            name = f"seismic-{_safe(field_name)}"
            cached = self._load(name)
            if cached is not None and cached["build"].tobytes() == build:
                self._seismic[field_name] = SeismicField.load(self.cache / name, bool(cached["large"]), parameters)
            else:
                matrix, _ = self.features(field_name)
                self._seismic[field_name] = SeismicField.build(matrix, field_name, parameters)
                self.cache.mkdir(exist_ok=True)
                self._seismic[field_name].save(self.cache / name)
                self._save(name, build=np.frombuffer(build, dtype=np.uint8),
                           large=np.bool_(matrix.shape[1] > U16_COMPONENTS))
        return self._seismic[field_name]

    def bm25(self, field_name: str) -> BM25:
        """The field's BM25 scores: cached like a vector matrix, since analysing every text again
        would cost each new process minutes at a million documents. The cache holds finished
        scores, so it is keyed by the analysis and by the scoring (k1, b, bm25s's version): a cache
        written with either changed, or in an earlier format, is rebuilt."""
        if field_name not in self._bm25:
            name = f"bm25-{_safe(field_name)}"
            cached, bm25 = self._load(name), None
            if cached is not None and _stored(cached, "analysis") == ANALYSIS \
                    and _stored(cached, "scoring") == BM25.scoring():
                try:
                    bm25 = BM25.from_arrays(cached)
                except (KeyError, ValueError):  # arrays that disagree with each other: rebuilt
                    bm25 = None
            if bm25 is None:
                bm25 = BM25(_text(s.get(field_name)) for s in self.sources())
                self._save(name, analysis=np.frombuffer(ANALYSIS, dtype=np.uint8),
                           scoring=np.frombuffer(BM25.scoring(), dtype=np.uint8), **bm25.arrays())
            self._bm25[field_name] = bm25
        return self._bm25[field_name]

    # ---------------------------------------------------------------- the cache directory
    def _load(self, name: str) -> Any:
        """A cached structure's arrays, or None when absent, stale (another log size) or unreadable."""
        path = self.cache / f"{name}.npz"
        try:
            arrays = np.load(path)
            if int(arrays["log_size"]) == self.log_size:
                return {key: arrays[key] for key in arrays.files}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # absent, stale or damaged: rebuilt
            pass
        return None

    def _save(self, name: str, **arrays: np.ndarray) -> None:
        """Written to a temporary name and renamed, so a reader never sees half a file."""
        self.cache.mkdir(exist_ok=True)
        temporary = self.cache / f".{name}.{os.getpid()}.{threading.get_ident()}.npz"  # serve's threads too
        np.savez(temporary, log_size=np.int64(self.log_size), **arrays)
        os.replace(temporary, self.cache / f"{name}.npz")


class _MatrixBuilder:
    """A vector field's matrix built document by document, in numpy blocks (never one Python
    object per stored feature)."""

    BLOCK = 1 << 20  # stored features turned into numpy arrays at a time

    def __init__(self) -> None:
        self.columns: dict[str, int] = {}
        self._blocks: list[tuple[np.ndarray, np.ndarray]] = []
        self._indices: list[int] = []
        self._values: list[float] = []
        self._lengths: list[int] = []

    def add(self, vector: dict[str, float] | None) -> None:
        vector = vector or {}
        setdefault, columns = self.columns.setdefault, self.columns
        self._indices += [setdefault(feature, len(columns)) for feature in vector]
        self._values += vector.values()
        self._lengths.append(len(vector))
        if len(self._indices) >= self.BLOCK:
            self._flush()

    def _flush(self) -> None:
        self._blocks.append((np.asarray(self._indices, dtype=np.int32), np.asarray(self._values, dtype=np.float32)))
        self._indices, self._values = [], []

    def matrix(self) -> tuple[sp.csc_matrix, dict[str, int]]:
        """The documents x features matrix of the vectors added, one row each."""
        self._flush()
        indptr = np.zeros(len(self._lengths) + 1, dtype=np.int64)
        np.cumsum(self._lengths, out=indptr[1:])
        rows = sp.csr_matrix((np.concatenate([v for _, v in self._blocks]),
                              np.concatenate([i for i, _ in self._blocks]), indptr),
                             shape=(len(self._lengths), max(len(self.columns), 1)))
        self._blocks = []
        return rows.tocsc(), self.columns


def _backend(name: str) -> str:
    if name not in ("exact", "seismic"):
        raise EngineError(f"unknown local sparse backend {name!r}: choose exact or seismic", 400)
    return name


def _vector_only(data: _IndexData, query: Any) -> tuple[str, dict[int, float]] | None:
    """``(field, {column: weight})`` when ``query`` is nothing but a sparse dot product on one
    vector field (``sparse_vector`` without pruning, or ``bool.should`` of linear ``rank_feature``
    clauses): the only queries an approximate backend may answer. Anything else, malformed
    forms included, is None and goes to the exact evaluator (which names what is wrong)."""
    if not isinstance(query, dict) or len(query) != 1:
        return None
    (kind, spec), = query.items()
    if kind == "sparse_vector" and isinstance(spec, dict) and set(spec) == {"field", "query_vector", "prune"}:
        field_name, weights = spec["field"], spec["query_vector"]
        if spec["prune"] is not False or data.field_type(field_name) != "sparse_vector" or not isinstance(weights, dict):
            return None
    elif kind == "bool" and isinstance(spec, dict) and set(spec) == {"should"} and isinstance(spec["should"], list):
        merged = _one_vector(spec["should"])
        if merged is None or data.field_type(merged[0]) != "rank_features":
            return None
        field_name, weights = merged
    else:
        return None
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and np.isfinite(w) for w in weights.values()):
        return None
    _, columns = data.features(field_name)
    query_columns: dict[int, float] = {}
    for feature, weight in weights.items():
        if str(feature) in columns:
            column = columns[str(feature)]
            query_columns[column] = query_columns.get(column, 0.0) + float(weight)
    return field_name, query_columns


def _stored(arrays: dict[str, np.ndarray], key: str) -> bytes | None:
    """A cache's byte-string entry (a key), or None where that cache has none."""
    return arrays[key].tobytes() if key in arrays else None


def _safe(field_name: str) -> str:
    """A field name as part of a file name."""
    return hashlib.sha1(field_name.encode("utf-8")).hexdigest()[:16]


class BM25:
    """Okapi BM25 over one text field (Lucene's formula and defaults), scored by bm25s.

    bm25s computes every (document, term) score once, at build (its eager sparse index), so a
    query only adds up the posting lists of its terms: 2.8x faster per query than the formula
    evaluated per query at 100k documents, with identical scores (docs/BENCHMARKS.md,
    ``benchmarks/bm25_backends.py``). The analysis stays ours (the engines' ``english``), and
    documents without a token stay out of bm25s's statistics, as Lucene's docCount and average
    length leave them out.
    """

    K1, B = 1.2, 0.75
    LIMIT = int(np.iinfo(np.int32).max)  # bm25s keeps document and term ids as int32

    @classmethod
    def scoring(cls) -> bytes:
        """What cached scores were computed with: a cache of other scoring is rebuilt."""
        return hashlib.sha1(orjson.dumps({"k1": cls.K1, "b": cls.B, "dtype": "float64", "bm25s":
                                          importlib.metadata.version("bm25s")})).hexdigest().encode()

    def __init__(self, texts: Iterable[str]) -> None:
        import bm25s
        from bm25s.tokenization import Tokenized

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # it sets DEBUG on import: one line per build

        terms: dict[str, int] = {}
        documents: list[list[int]] = []  # token ids of the documents holding a token
        kept: list[int] = []
        size = 0
        for row, text in enumerate(texts):
            size = row + 1
            tokens = analyze(text)
            if tokens:
                kept.append(row)
                documents.append([terms.setdefault(token, len(terms)) for token in tokens])
        if max(len(documents), len(terms)) > self.LIMIT:
            raise EngineError(f"BM25 over {len(documents):,} texts and {len(terms):,} distinct words: past bm25s's "
                              f"32-bit ids ({self.LIMIT:,}); split the collection into several indices", 400)
        if not documents:
            self._set(terms, sp.csc_matrix((size, 1)))
            return
        # scipy's COO-to-CSC conversion: a lower build peak than bm25s's default numpy sort
        retriever = bm25s.BM25(method="lucene", k1=self.K1, b=self.B, dtype="float64", csc_backend="scipy")
        retriever.index(Tokenized(ids=documents, vocab=terms), create_empty_token=False, show_progress=False)
        eager = retriever.scores  # CSC over the kept documents, one column per term id
        rows = np.asarray(kept, dtype=np.int64)[eager["indices"]]
        self._set(terms, sp.csc_matrix((eager["data"], rows, eager["indptr"]), shape=(size, len(terms))))

    def _set(self, terms: dict[str, int], scores: sp.csc_matrix) -> None:
        self.terms, self.scores = terms, scores
        self.size = scores.shape[0]

    def arrays(self) -> dict[str, np.ndarray]:
        """What :meth:`from_arrays` needs, as arrays for the index's cache."""
        return {"scores": self.scores.data, "indices": self.scores.indices, "indptr": self.scores.indptr,
                "size": np.int64(self.size), "terms": np.frombuffer(orjson.dumps(list(self.terms)), dtype=np.uint8)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> BM25:
        bm25 = cls.__new__(cls)
        terms = {term: column for column, term in enumerate(orjson.loads(arrays["terms"].tobytes()))}
        scores = sp.csc_matrix((arrays["scores"], arrays["indices"], arrays["indptr"]),
                               shape=(int(arrays["size"]), max(len(terms), 1)))
        bm25._set(terms, scores)
        return bm25

    def score(self, text: str) -> np.ndarray:
        """A ``match`` query: the text analysed, one BM25 clause per token."""
        return self.score_terms(analyze(text))

    def score_terms(self, terms: Sequence[str]) -> np.ndarray:
        """BM25 summed over already analysed ``terms`` (a ``term`` query is not analysed); a
        repeated term counts again, as a repeated clause does in Lucene."""
        scores, matrix = np.zeros(self.size), self.scores
        for column in (self.terms[t] for t in terms if t in self.terms):
            start, end = matrix.indptr[column], matrix.indptr[column + 1]
            np.add.at(scores, matrix.indices[start:end], matrix.data[start:end])  # 1.5x faster than a fancy-index += at 100k
        return scores

    def containing(self, terms: set[str]) -> np.ndarray:
        """Which documents hold any of the (analysed) ``terms``."""
        matched, matrix = np.zeros(self.size, dtype=bool), self.scores
        for column in (self.terms[t] for t in terms if t in self.terms):
            matched[matrix.indices[matrix.indptr[column]:matrix.indptr[column + 1]]] = True
        return matched


Scored = tuple[np.ndarray, np.ndarray]  # scores, and which documents match


class _Query:
    """Evaluates the query DSL over one index exactly as the engines score it.

    Only forms it computes exactly are accepted: anything else (another ``rank_feature``
    function, an option of a clause, another ``multi_match`` type...) is refused with HTTP 400
    naming it, so a test against the local engine never passes on an approximation.
    ``scoring`` is False in filter context (``bool.filter``, ``bool.must_not``), where the
    engines ignore scores.
    """

    def __init__(self, data: _IndexData) -> None:
        self.data = data
        self.n = data.live

    def evaluate(self, query: Any, scoring: bool = True) -> Scored:
        if not isinstance(query, dict) or len(query) != 1:
            raise EngineError(f"a query is an object with exactly one query type, got {_shown(query)}", 400)
        (kind, spec), = query.items()
        handler = getattr(self, f"_q_{kind}", None)
        if handler is None:
            raise EngineError(f"the local engine does not support the [{kind}] query", 400)
        if not isinstance(spec, dict):
            raise EngineError(f"[{kind}] query must be an object, got {_shown(spec)}", 400)
        return handler(spec, scoring)

    def _q_match_all(self, spec: dict[str, Any], scoring: bool) -> Scored:
        _only("match_all", spec, {"boost"})
        return np.full(self.n, _boost("match_all", spec)), np.ones(self.n, dtype=bool)

    def _q_ids(self, spec: dict[str, Any], scoring: bool) -> Scored:
        _only("ids", spec, {"values", "boost"}, required=("values",))
        matched = np.zeros(self.n, dtype=bool)
        matched[[self.data.rows[str(i)] for i in _values("ids", spec["values"]) if str(i) in self.data.rows]] = True
        return matched * _boost("ids", spec), matched

    def _q_bool(self, spec: dict[str, Any], scoring: bool) -> Scored:
        _only("bool", spec, {"must", "filter", "should", "must_not", "minimum_should_match", "boost"})
        scores, matched = np.zeros(self.n), np.ones(self.n, dtype=bool)
        for occur in ("must", "filter", "must_not"):
            for clause in _as_list(spec.get(occur)):
                clause_scores, clause_matched = self.evaluate(clause, scoring and occur == "must")
                if occur == "must_not":
                    matched &= ~clause_matched
                else:
                    matched &= clause_matched
                    scores += clause_scores if occur == "must" else 0
        shoulds = _as_list(spec.get("should"))
        required = any(spec.get(o) for o in ("must", "filter"))
        minimum = _minimum_should_match(spec.get("minimum_should_match", 1 if not required else 0))
        if shoulds and not required:  # Lucene: without a required clause, one should clause must match
            minimum = max(minimum, 1)
        merged = _one_vector(shoulds) if minimum <= 1 else None
        # A sparse query (linear rank_feature clauses on one field): one product, not a pass per term.
        if merged is not None and self.data.field_type(merged[0]) == "rank_features":
            clause_scores, clause_matched = self._weighted(*merged)
            scores += np.where(clause_matched, clause_scores, 0)
            matched &= clause_matched | (minimum == 0)
        elif shoulds:
            hits = np.zeros(self.n, dtype=int)
            for clause in shoulds:
                clause_scores, clause_matched = self.evaluate(clause, scoring)
                scores += np.where(clause_matched, clause_scores, 0)
                hits += clause_matched
            matched &= hits >= minimum
        return scores * _boost("bool", spec), matched

    def _q_rank_feature(self, spec: dict[str, Any], scoring: bool) -> Scored:
        function = next((f for f in _RANK_FEATURE_FUNCTIONS if f in spec), None)
        if function is not None:
            raise EngineError(f"[rank_feature] with {function} is not a dot product: the local engine scores "
                              "rank_feature with \"linear\": {} only", 400)
        _only("rank_feature", spec, {"field", "linear", "boost"}, required=("field",))
        if spec.get("linear") != {}:
            raise EngineError("[rank_feature] without \"linear\": {} is saturation on the engines (not a dot product): "
                              "the local engine scores linear only", 400)
        field_name, _, feature = str(spec["field"]).rpartition(".")
        if self.data.field_type(field_name) != "rank_features":
            raise EngineError(f"[rank_feature] needs a rank_features field, {field_name!r} is not one", 400)
        return self._weighted(field_name, {feature: _boost("rank_feature", spec)})

    def _q_sparse_vector(self, spec: dict[str, Any], scoring: bool) -> Scored:
        _only("sparse_vector", spec, {"field", "query_vector", "prune"}, required=("field", "query_vector"))
        if spec.get("prune") is not False:
            raise EngineError("[sparse_vector] without \"prune\": false is pruned on Elasticsearch 8.19/9.1+: the local "
                              "engine scores the unpruned dot product only", 400)
        if self.data.field_type(spec["field"]) != "sparse_vector":
            raise EngineError(f"[sparse_vector] needs a sparse_vector field, {spec['field']!r} is not one", 400)
        vector = spec["query_vector"]
        if not isinstance(vector, dict):
            raise EngineError("[sparse_vector] query_vector must be an object of token: weight", 400)
        return self._weighted(spec["field"], {str(k): _number("sparse_vector", k, v) for k, v in vector.items()})

    def _q_term(self, spec: dict[str, Any], scoring: bool) -> Scored:
        field_name, value, boost = _single_field("term", spec, "value")
        value = _term_text(value)
        field_type = self.data.field_type(field_name)
        if field_type == "sparse_vector":
            return self._weighted(field_name, {value: boost})
        if field_type == "text":  # the term is not analysed; the document text is
            scores = self._bm25("term", field_name).score_terms([value]) * boost
            return scores, scores > 0
        if field_type == "keyword" and scoring:
            raise EngineError(f"[term] on keyword field {field_name!r} is scored by BM25 on the engines: the local "
                              "engine models it only as a filter (bool.filter)", 400)
        return self._exact("term", field_name, {value}, boost)

    def _q_terms(self, spec: dict[str, Any], scoring: bool) -> Scored:
        fields = [name for name in spec if name != "boost"]
        if len(fields) != 1:
            raise EngineError(f"[terms] query takes exactly one field, got {sorted(fields)}", 400)
        wanted = {_term_text(v) for v in _values("terms", spec[fields[0]])}
        return self._exact("terms", fields[0], wanted, _boost("terms", spec))

    def _exact(self, kind: str, field_name: str, wanted: set[str], boost: float) -> Scored:
        """Constant-score match of un-analysed values: keyword values as stored, text by its tokens."""
        field_type = self.data.field_type(field_name)
        if field_type == "text":
            matched = self._bm25(kind, field_name).containing(wanted)
        elif field_type == "keyword":
            matched = np.array([bool(wanted & {_term_text(v) for v in _as_list(s.get(field_name))})
                                for s in self.data.sources()], dtype=bool)
        elif field_type is None:  # the engines match nothing on a field the mapping lacks
            matched = np.zeros(self.n, dtype=bool)
        else:
            raise EngineError(f"[{kind}] on {field_type} field {field_name!r} is not supported locally", 400)
        return matched * boost, matched

    def _q_match(self, spec: dict[str, Any], scoring: bool) -> Scored:
        field_name, text, boost = _single_field("match", spec, "query")
        if self.data.field_type(field_name) is None:
            return np.zeros(self.n), np.zeros(self.n, dtype=bool)
        scores = self._bm25("match", field_name).score(str(text)) * boost
        return scores, scores > 0

    def _q_multi_match(self, spec: dict[str, Any], scoring: bool) -> Scored:
        _only("multi_match", spec, {"query", "fields", "type", "tie_breaker", "boost"}, required=("query", "fields"))
        if spec.get("type", "best_fields") != "best_fields":
            raise EngineError(f"the local engine models multi_match type best_fields only, not {spec['type']!r}", 400)
        fields = spec["fields"]
        if not isinstance(fields, list) or not fields or not all(isinstance(f, str) and "*" not in f for f in fields):
            raise EngineError("[multi_match] fields must be a non-empty list of field names (no wildcards locally)", 400)
        tie_breaker = _number("multi_match", "tie_breaker", spec.get("tie_breaker", 0.0))
        per_field = []
        for name in fields:
            field_name, _, boost = name.partition("^")
            if self.data.field_type(field_name) is not None:  # the engines skip unmapped fields
                per_field.append(self._bm25("multi_match", field_name).score(str(spec["query"]))
                                 * _number("multi_match", name, boost or 1.0))
        stacked = np.vstack(per_field) if per_field else np.zeros((1, self.n))
        best = stacked.max(axis=0)
        scores = best + tie_breaker * (stacked.sum(axis=0) - best)
        return scores * _boost("multi_match", spec), scores > 0

    def _bm25(self, kind: str, field_name: str) -> BM25:
        """A text field's BM25, where the local analysis is the field's (the ``english`` analyzer)."""
        spec = self.data.properties.get(field_name, {})
        if spec.get("type") != "text":
            raise EngineError(f"[{kind}] on field {field_name!r} ({spec.get('type')}): the local engine scores text "
                              "fields only", 400)
        if spec.get("analyzer", "standard") != "english" or set(spec) - {"type", "analyzer"}:
            raise EngineError(f"text field {field_name!r} is mapped as {spec}: the local engine analyses text fields "
                              "with the english analyzer only", 400)
        return self.data.bm25(field_name)

    def _weighted(self, field_name: str, weights: dict[str, float]) -> Scored:
        if self.data.field_type(field_name) not in VECTOR_TYPES:
            raise EngineError(f"{field_name!r} is not a rank_features / sparse_vector field", 400)
        matrix, columns = self.data.features(field_name)
        merged: dict[int, float] = {}
        for feature, weight in weights.items():
            if feature in columns:
                merged[columns[feature]] = merged.get(columns[feature], 0.0) + weight
        scores, present = np.zeros(self.n), np.zeros(self.n, dtype=bool)
        for column, weight in merged.items():  # one posting list per query feature, float64 sums
            start, end = matrix.indptr[column], matrix.indptr[column + 1]
            rows = matrix.indices[start:end]
            np.add.at(scores, rows, matrix.data[start:end].astype(np.float64) * weight)
            present[rows] = True
        return scores, present


_RANK_FEATURE_FUNCTIONS = ("saturation", "log", "sigmoid")


def _only(kind: str, spec: dict[str, Any], allowed: set[str], required: Sequence[str] = ()) -> None:
    """Refuse options the local engine does not compute exactly, and missing required ones."""
    extra = sorted(set(spec) - allowed)
    if extra:
        raise EngineError(f"the local engine does not model [{kind}] option(s) {extra}", 400)
    missing = [name for name in required if name not in spec]
    if missing:
        raise EngineError(f"[{kind}] needs {missing}", 400)


def _single_field(kind: str, spec: dict[str, Any], main: str) -> tuple[str, Any, float]:
    """``(field, value, boost)`` of a one-field query, short (``{f: v}``) or long (``{f: {main: v, boost}}``)."""
    if len(spec) != 1:
        raise EngineError(f"[{kind}] query takes exactly one field, got {sorted(spec)}", 400)
    (field_name, value), = spec.items()
    if not isinstance(value, dict):
        return field_name, value, 1.0
    _only(kind, value, {main, "boost"}, required=(main,))
    return field_name, value[main], _boost(kind, value)


def _number(kind: str, name: Any, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise EngineError(f"[{kind}] {name!r} must be a number, got {_shown(value)}", 400)
    try:
        number = float(value)
    except ValueError:
        raise EngineError(f"[{kind}] {name!r} must be a number, got {_shown(value)}", 400) from None
    if not np.isfinite(number):
        raise EngineError(f"[{kind}] {name!r} must be finite, got {_shown(value)}", 400)
    return number


def _boost(kind: str, spec: dict[str, Any]) -> float:
    boost = _number(kind, "boost", spec.get("boost", 1.0))
    if boost < 0:
        raise EngineError(f"[{kind}] negative [boost] are not allowed", 400)  # as the engines say
    return boost


def _values(kind: str, values: Any) -> list[Any]:
    if not isinstance(values, list):
        raise EngineError(f"[{kind}] values must be a list, got {_shown(values)}", 400)
    return values


def _term_text(value: Any) -> str:
    """A term as the engines index it: strings as given, numbers as their text, booleans lowercase."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise EngineError(f"a term must be a string, number or boolean, got {_shown(value)}", 400)


def _minimum_should_match(value: Any) -> int:
    """An absolute count (percentages and combinations are not modelled)."""
    text = str(value)
    if isinstance(value, bool) or not text.isdigit():
        raise EngineError(f"the local engine models minimum_should_match as a non-negative count only, got "
                          f"{_shown(value)}", 400)
    return int(text)


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _one_vector(clauses: list[Any]) -> tuple[str, dict[str, float]] | None:
    """``(field, weights)`` when every clause is a linear ``rank_feature`` on one field, else None
    (the clauses are then evaluated one by one, which refuses what is not exact)."""
    weights: dict[str, float] = {}
    field_name = None
    for clause in clauses:
        spec = clause.get("rank_feature") if isinstance(clause, dict) and len(clause) == 1 else None
        if not isinstance(spec, dict) or set(spec) - {"field", "linear", "boost"} or spec.get("linear") != {}:
            return None
        boost = spec.get("boost", 1.0)
        if isinstance(boost, bool) or not isinstance(boost, (int, float)) or not boost >= 0:
            return None
        name, _, feature = str(spec.get("field")).rpartition(".")
        if field_name not in (None, name):
            return None
        field_name = name
        weights[feature] = weights.get(feature, 0.0) + float(boost)
    return (field_name, weights) if field_name else None


def _ranked(rows: np.ndarray, scores: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` of ``rows`` by score (descending), ties by row: what a full sort gives,
    sorting only the rows that can be among them."""
    if count == 0:
        return rows[:0]
    if count < rows.size:
        values = scores[rows]
        threshold = np.partition(values, rows.size - count)[rows.size - count]  # the count-th largest
        rows = rows[values >= threshold]
    return rows[np.lexsort((rows, -scores[rows]))][:count]


def _rescored(data: _IndexData, scores: np.ndarray, rows: np.ndarray, spec: Any, count: int) -> np.ndarray:
    """The engines' ``rescore`` (score_mode total): the top ``window_size`` rows get
    ``query_weight x score + rescore_query_weight x rescore score`` and are re-sorted in place;
    returns the first ``count`` rows."""
    if not isinstance(spec, dict):
        raise EngineError("the local engine models one rescore (an object), not a list of them", 400)
    _only("rescore", spec, {"window_size", "query"}, required=("query",))
    rescore = spec["query"]
    if not isinstance(rescore, dict):
        raise EngineError("[rescore] query must be an object", 400)
    _only("rescore.query", rescore, {"rescore_query", "query_weight", "rescore_query_weight", "score_mode"},
          required=("rescore_query",))
    if rescore.get("score_mode", "total") != "total":
        raise EngineError("the local engine supports rescore score_mode total only", 400)
    window_size = _count("window_size", spec.get("window_size", 10))
    order = _ranked(rows, scores, max(window_size, count))
    window = order[:window_size]
    extra, matched = _Query(data).evaluate(rescore["rescore_query"])
    scores[window] = (_number("rescore", "query_weight", rescore.get("query_weight", 1.0)) * scores[window]
                      + _number("rescore", "rescore_query_weight", rescore.get("rescore_query_weight", 1.0))
                      * np.where(matched[window], extra[window], 0.0))
    return np.concatenate([window[np.lexsort((window, -scores[window]))], order[len(window):]])[:count]


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EngineError(f"[{name}] must be a non-negative integer, got {_shown(value)}", 400)
    return value


def analyze(text: str) -> list[str]:
    """Lowercase words, English stop words removed, Porter-stemmed (like the ``english`` analyzer)."""
    stem = _stemmer()
    return [stem.stemWord(w) for w in _WORD.findall(text.lower()) if w not in _STOP_WORDS]


def _stemmer():
    global _STEMMER
    if _STEMMER is None:
        from snowballstemmer import stemmer

        _STEMMER = stemmer("porter")
    return _STEMMER


_STEMMER = None


def _drop_torn_tail(log) -> None:
    """Cut a last line that a killed writer left without its newline (``log`` is open for append)."""
    size = log.seek(0, os.SEEK_END)
    if size == 0:
        return
    with open(log.name, "rb") as reader:
        reader.seek(max(0, size - 1))
        if reader.read(1) == b"\n":
            return
        start = max(0, size - (1 << 20))
        while True:
            reader.seek(start)
            tail = reader.read(size - start)
            cut = tail.rfind(b"\n")
            if cut >= 0 or start == 0:
                break
            start = max(0, start - (1 << 20))
    os.truncate(log.name, start + cut + 1 if cut >= 0 else 0)
    log.seek(0, os.SEEK_END)


def _check_document(source: dict[str, Any], mappings: dict[str, Any]) -> str | None:
    properties = mappings.get("properties", {})
    if mappings.get("dynamic") == "strict":
        extra = sorted(set(source) - set(properties))
        if extra:
            return f"field [{extra[0]}] is not in the strict mapping"
    for name, spec in properties.items():
        value = source.get(name)
        if value is None or spec.get("type") not in VECTOR_TYPES:
            continue
        try:
            check_features(value, f"field [{name}]")
        except InputError as exc:
            return str(exc)
    return None


def _text(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _includes(wanted: Any) -> list[str] | None:
    """The fields ``_source`` asks for (None: the whole source, as for an empty include list)."""
    if wanted is True:
        return None
    if wanted is False:
        return []
    if isinstance(wanted, dict):
        _only("_source", wanted, {"includes"})
        wanted = wanted.get("includes", [])
    names = [wanted] if isinstance(wanted, str) else wanted
    if not isinstance(names, list) or not all(isinstance(n, str) and "*" not in n for n in names):
        raise EngineError(f"the local engine models _source as true, false or a list of field names, got "
                          f"{_shown(wanted)}", 400)
    return names or None


def _select(source: dict[str, Any], includes: list[str] | None) -> dict[str, Any] | None:
    if includes is None:
        return source
    return {k: v for k, v in source.items() if k in includes} if includes else None


def _package_version() -> str:
    from splade_es import __version__

    return __version__
