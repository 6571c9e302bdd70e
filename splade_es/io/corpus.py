"""Reading document collections: a BEIR directory, JSON lines (optionally gzipped), CSV or Parquet.

Every record keeps where it came from (file and line or row), so a problem is reported
as ``FILE:LINE: what is wrong``. With ``skip_bad`` a bad record is yielded as
:class:`BadRecord` for the caller to log, instead of stopping the run.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from splade_es.errors import InputError
from splade_es.io.weights import check_features


MAX_ID_BYTES = 512  # Elasticsearch and OpenSearch refuse a longer _id (the whole bulk request, not the item)


@dataclass(frozen=True)
class Document:
    id: str
    fields: dict[str, str]  # text field name -> text, in --text-fields order
    where: str  # FILE:LINE
    features: dict[str, float] | None = None  # precomputed vector (ingest --vectors)

    @property
    def text(self) -> str:
        """What the encoder reads: the text fields joined, as BEIR joins title and text."""
        return " ".join(value for value in self.fields.values() if value.strip())


@dataclass(frozen=True)
class BadRecord:
    """A record that could not be read, kept (with ``--skip-bad``) so it is reported, not lost."""

    where: str
    reason: str


@dataclass(frozen=True)
class CorpusFormat:
    path: Path
    id_field: str
    text_fields: tuple[str, ...]


def resolve_corpus(path: str | Path, id_field: str | None, text_fields: Sequence[str] | None) -> CorpusFormat:
    """A BEIR directory means its ``corpus.jsonl`` with ``_id``, ``title``, ``text``."""
    source = Path(path).expanduser()
    if source.is_dir():
        for name in ("corpus.jsonl", "corpus.jsonl.gz"):
            if (source / name).is_file():
                return CorpusFormat(source / name, id_field or "_id", tuple(text_fields or ("title", "text")))
        raise InputError(f"{source}: a BEIR directory needs corpus.jsonl (or corpus.jsonl.gz)")
    if not source.is_file():
        raise InputError(f"{source}: no such file or directory")
    if not any(source.name.endswith(s) for s in (".jsonl", ".jsonl.gz", ".csv", ".parquet")):
        raise InputError(f"{source}: unsupported corpus format (use a BEIR directory, .jsonl, .jsonl.gz, .csv or .parquet)")
    return CorpusFormat(source, id_field or "_id", tuple(text_fields or ("title", "text")))


def read_corpus(corpus: CorpusFormat, skip_bad: bool = False) -> Iterator[Document | BadRecord]:
    """Documents in file order; a bad record raises InputError, or is yielded when ``skip_bad``."""
    for where, record in raw_records(corpus.path):
        try:
            yield _document(record, corpus, where)
        except InputError as exc:
            if not skip_bad:
                raise
            yield BadRecord(where, str(exc).removeprefix(f"{where}: "))


def _document(record: Any, corpus: CorpusFormat, where: str) -> Document:
    if isinstance(record, InputError):
        raise record
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(record).__name__}")
    doc_id = record.get(corpus.id_field)
    if doc_id is None or doc_id == "":
        raise InputError(f"{where}: missing id field '{corpus.id_field}'")
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        raise InputError(f"{where}: id field '{corpus.id_field}' must be a string or integer")
    if len(str(doc_id).encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise InputError(f"{where}: id field '{corpus.id_field}' is longer than the engines' limit of "
                         f"{MAX_ID_BYTES} UTF-8 bytes")
    fields = {}
    for name in corpus.text_fields:
        value = record.get(name)
        if value is not None and not isinstance(value, str):
            raise InputError(f"{where}: field '{name}' must be a string, got {type(value).__name__}")
        fields[name] = value or ""
    if not any(name in record for name in corpus.text_fields):
        raise InputError(f"{where}: none of the text fields {', '.join(corpus.text_fields)} is present")
    return Document(str(doc_id), fields, where)


def raw_records(path: Path) -> Iterator[tuple[str, Any]]:
    name = str(path)
    if name.endswith(".parquet"):
        yield from _parquet_rows(path)
        return
    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as handle:
            if name.endswith(".csv"):
                reader = csv.DictReader(handle)
                for row in reader:
                    yield f"{name}:{reader.line_num}", row
                return
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield f"{name}:{number}", orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    yield f"{name}:{number}", InputError(f"{name}:{number}: invalid JSON ({exc.msg} at column {exc.colno})")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (OSError, EOFError) as exc:
        raise InputError(f"{name}: cannot read ({exc})") from None


def _parquet_rows(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from None
    row = 0
    for batch in table.iter_batches():
        for record in batch.to_pylist():
            row += 1
            yield f"{path}:row {row}", record


def read_vectors(path: str | Path, skip_bad: bool = False) -> Iterator[tuple[str, str, dict[str, float]] | BadRecord]:
    """``(where, id, features)`` from ``splade-es encode`` JSON lines (``{"id", "features"}``), each
    vector checked as the engines will see it; a bad line raises, or is yielded as a
    :class:`BadRecord` when ``skip_bad``."""
    for where, record in raw_records(Path(path)):
        try:
            if isinstance(record, InputError):
                raise record
            if not isinstance(record, dict) or "id" not in record or not isinstance(record.get("features"), dict):
                raise InputError(f"{where}: expected {{\"id\", \"features\": {{name: weight}}}} (splade-es encode --json)")
            yield where, str(record["id"]), check_features(record["features"], where)
        except InputError as exc:
            if not skip_bad:
                raise
            yield BadRecord(where, str(exc).removeprefix(f"{where}: "))
