"""A BEIR dataset on disk: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/SPLIT.tsv`` (each may be ``.gz``).

Only queries with judgments in the split are evaluated; the rest are counted as skipped.
Judgments naming documents the corpus does not hold are reported (they can never be
retrieved, so they lower recall for every method alike).
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass, field
from pathlib import Path

from splade_es.errors import InputError
from splade_es.io.corpus import CorpusFormat, Document, raw_records, read_corpus

Qrels = dict[str, dict[str, int]]

_log = logging.getLogger(__name__)


@dataclass
class BeirDataset:
    name: str
    path: Path
    split: str
    corpus: CorpusFormat
    queries: dict[str, str]  # judged queries only, in file order
    qrels: Qrels
    skipped_queries: int = 0  # queries of queries.jsonl without a judgment in this split

    _judged_in_corpus: set[str] | None = field(default=None, repr=False)

    def judged_in_corpus(self) -> set[str]:
        """The judged document ids the corpus holds (the corpus streamed once; only judged ids are
        kept, so memory follows the judgments, not the corpus)."""
        if self._judged_in_corpus is None:
            judged = {doc_id for docs in self.qrels.values() for doc_id in docs}
            self._judged_in_corpus = {record.id for record in read_corpus(self.corpus)
                                      if isinstance(record, Document) and record.id in judged}
        return self._judged_in_corpus

    def unknown_documents(self) -> dict[str, list[str]]:
        """``{query id: [judged document ids the corpus lacks]}``; logs one warning when any."""
        ids = self.judged_in_corpus()
        unknown = {qid: sorted(d for d in docs if d not in ids) for qid, docs in self.qrels.items()}
        unknown = {qid: docs for qid, docs in unknown.items() if docs}
        if unknown:
            judgments = sum(len(docs) for docs in unknown.values())
            example = next(iter(unknown.items()))
            _log.warning("%s: %d judgments (%d queries) name documents that are not in the corpus, e.g. query %s -> %s",
                         self.name, judgments, len(unknown), example[0], example[1][0])
        return unknown


def find_file(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def splits(directory: Path) -> list[str]:
    qrels = directory / "qrels"
    if not qrels.is_dir():
        return []
    return sorted({p.name.removesuffix(".gz").removesuffix(".tsv") for p in qrels.iterdir()
                   if p.name.endswith((".tsv", ".tsv.gz"))})


def load_beir(path: str | Path, split: str = "test", name: str | None = None) -> BeirDataset:
    """Read queries and judgments (the corpus is streamed later); errors name the file and line."""
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise InputError(f"{directory}: no such dataset directory")
    corpus = find_file(directory, "corpus.jsonl")
    queries_file = find_file(directory, "queries.jsonl")
    for label, found in (("corpus.jsonl", corpus), ("queries.jsonl", queries_file)):
        if found is None:
            raise InputError(f"{directory}: missing {label} (a BEIR dataset holds corpus.jsonl, queries.jsonl "
                             "and qrels/SPLIT.tsv)")
    qrels_file = find_file(directory / "qrels", f"{split}.tsv")
    if qrels_file is None:
        available = splits(directory)
        raise InputError(f"{directory}: no split {split!r} (qrels/{split}.tsv); "
                         + (f"available: {', '.join(available)}" if available else "the qrels directory is missing or empty"))
    qrels = read_qrels(qrels_file)
    if not qrels:
        raise InputError(f"{qrels_file}: holds no judgments")
    all_queries = read_queries(queries_file)
    queries = {qid: text for qid, text in all_queries.items() if qid in qrels}
    missing = sorted(qid for qid in qrels if qid not in all_queries)
    if missing:
        _log.warning("%s: %d judged queries are missing from %s (e.g. %s); they are not evaluated",
                     directory.name, len(missing), queries_file.name, missing[0])
        for qid in missing:
            del qrels[qid]
    if not queries:
        raise InputError(f"{qrels_file}: none of its queries is in {queries_file}")
    return BeirDataset(name or directory.name, directory, split,
                       CorpusFormat(corpus, "_id", ("title", "text")), queries, qrels,
                       len(all_queries) - len(queries))


def _lines(path: Path):
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            yield from enumerate(handle, start=1)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None


def read_qrels(path: Path) -> Qrels:
    """``query-id  corpus-id  score`` per line (tab-separated; a header line is optional)."""
    qrels: Qrels = {}
    for number, line in _lines(path):
        if not line.strip():
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) == 4:  # TREC qrels: query 0 document grade
            parts = [parts[0], parts[2], parts[3]]
        if number == 1 and parts[0].strip().lower() in ("query-id", "query_id", "qid"):
            continue
        if len(parts) != 3:
            raise InputError(f"{path}:{number}: expected 3 tab-separated columns (query-id, corpus-id, score), "
                             f"got {len(parts)}")
        qid, did, grade = (p.strip() for p in parts)
        try:
            value = int(float(grade))
        except ValueError:
            raise InputError(f"{path}:{number}: score {grade!r} is not a number") from None
        if not qid or not did:
            raise InputError(f"{path}:{number}: empty query-id or corpus-id")
        qrels.setdefault(qid, {})[did] = value
    return qrels


def read_queries(path: Path) -> dict[str, str]:
    """``{"_id", "text"}`` per JSON line."""
    queries: dict[str, str] = {}
    for where, record in raw_records(path):
        if isinstance(record, InputError):
            raise record
        if not isinstance(record, dict):
            raise InputError(f"{where}: expected a JSON object with '_id' and 'text'")
        qid, text = record.get("_id"), record.get("text")
        if qid is None or isinstance(qid, bool) or not isinstance(qid, (str, int)) or qid == "":
            raise InputError(f"{where}: missing or invalid field '_id'")
        if not isinstance(text, str):
            raise InputError(f"{where}: field 'text' must be a string")
        queries[str(qid)] = text
    return queries
