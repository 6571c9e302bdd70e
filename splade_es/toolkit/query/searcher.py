"""Search one splade-es index with query vectors; explain each hit by its term contributions.

The index's ``_meta.splade_es`` says which field holds the vectors, its type and which model
wrote them, so the searcher picks the exact query form the engine supports and refuses a
query vector from another model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from splade_es.errors import ConfigError, InputError
from splade_es.toolkit.engines.base import Engine
from splade_es.toolkit.mappings import analysed_text_fields, recorded_meta, same_model, terms_field_of
from splade_es.toolkit.query import fusion
from splade_es.toolkit.query.forms import (DEFAULT_MAX_CLAUSES, TokenPruning, bm25_query, capped, choose_form,
                                          filtered, leaf_clauses, rescore, split_heaviest, vector_query)
from splade_es.toolkit.query.tuned import DEFAULT_WINDOW, resolve

SNIPPET_CHARS = 200


@dataclass(frozen=True)
class IndexMeta:
    """What splade-es recorded when it created the index."""

    index: str
    model: str
    config_hash: str | None
    field: str
    field_type: str
    text_fields: list[str]
    field_names: frozenset[str]  # every field of the mapping
    tuned: dict[str, Any] | None = None  # what 'splade-es tune' recorded: default query settings

    @classmethod
    def read(cls, engine: Engine, index: str) -> IndexMeta:
        if not engine.exists(index):
            raise ConfigError(f"no index or alias named {index!r} at {engine.info.location}: "
                              "create it with 'splade-es ingest'")
        mappings = engine.mappings(index)
        encoder = recorded_meta(mappings, index)["encoder"]
        if encoder != "splade":
            raise ConfigError(f"index {index!r} holds {encoder} documents, not splade vectors: search an index "
                              "built by 'splade-es ingest' with a splade model")
        metas = {name: mapping["_meta"]["splade_es"] for name, mapping in mappings.items()}
        distinct = {(m["model"], m.get("config_hash"), m["field"], m["field_type"]) for m in metas.values()}
        if len(distinct) > 1:
            raise ConfigError(f"{index!r} spans indices written by different models or fields: search one of "
                              + ", ".join(sorted(metas)))
        model, config_hash, vector_field, field_type = distinct.pop()
        properties = next(iter(mappings.values())).get("properties", {})
        records = [m.get("tuned") for m in metas.values()]
        return cls(index, model, config_hash, vector_field, field_type, analysed_text_fields(mappings),
                   frozenset(properties), records[0] if all(r == records[0] for r in records) else None)

    @property
    def terms_field(self) -> str:
        return terms_field_of(self.field)

    def check_model(self, model: str, config_hash: str | None) -> None:
        """Refuse query vectors from a model other than the one that wrote the documents."""
        if not same_model(self.model, self.config_hash, model, config_hash):
            raise ConfigError(f"index {self.index!r} was built by model {self.model!r} (config {self.config_hash}); "
                              f"the query model is {model!r} (config {config_hash}): search with the same model")


@dataclass(frozen=True)
class Contribution:
    """One term's share of a hit's score: ``query_weight x document_weight``."""

    term: str
    query_weight: float
    document_weight: float

    @property
    def score(self) -> float:
        return self.query_weight * self.document_weight


@dataclass
class Hit:
    rank: int
    id: str
    score: float
    title: str
    snippet: str
    index: str
    contributions: list[Contribution] | None = None  # with explain: every shared term, largest first

    def to_dict(self) -> dict[str, Any]:
        data = {"rank": self.rank, "id": self.id, "score": self.score, "title": self.title, "snippet": self.snippet,
                "index": self.index}
        if self.contributions is not None:
            data["contributions"] = [{"term": c.term, "query_weight": c.query_weight,
                                      "document_weight": c.document_weight, "score": c.score}
                                     for c in self.contributions]
            data["explained_score"] = sum(c.score for c in self.contributions)
        return data


@dataclass
class SearchResult:
    hits: list[Hit]
    took_ms: float | None = None  # engine-side, summed over the requests made
    total: int | None = None  # only with track_total_hits
    form: str = ""
    hybrid: str | None = None
    fused_natively: bool = False
    query_terms: int = 0


class Searcher:
    """Exact sparse (and hybrid) search over one index; see :meth:`search`."""

    def __init__(self, engine: Engine, index: str, form: str | None = None,
                 max_clauses: int = DEFAULT_MAX_CLAUSES, two_phase: int | None = None,
                 two_phase_window: int | None = None, native_fusion: bool = True, use_tuned: bool = True,
                 token_pruning: TokenPruning | None = None) -> None:
        """``two_phase``: query with that many heaviest terms, rescore ``two_phase_window``
        candidates (default 100) with the rest; 0 is off. Unset (None), both come from the index's
        tuned record (``splade-es tune``) unless ``use_tuned`` is False, else two-phase is off.
        ``token_pruning``: the engine leaves frequent, light tokens out instead, and the window is
        rescored with them (Elasticsearch's ``sparse_vector`` only; replaces a tuned two-phase).
        ``native_fusion``: let the engine fuse hybrid lists where it can (False: always here,
        e.g. to compare the two)."""
        self.engine = engine
        self.meta = IndexMeta.read(engine, index)
        self.tuned = self.meta.tuned if use_tuned else None
        values, self.sources = resolve({"two_phase": two_phase, "two_phase_window": two_phase_window}, self.tuned,
                                       {"two_phase_window": DEFAULT_WINDOW})
        self.two_phase = values["two_phase"] or None
        self.two_phase_window = DEFAULT_WINDOW if values["two_phase_window"] is None else values["two_phase_window"]
        if (self.two_phase is not None and self.two_phase < 0) or self.two_phase_window < 1:
            raise ConfigError("two-phase search needs at least 1 first-phase term and a window of at least 1")
        where = f"{engine.info.kind} {engine.info.version} at {engine.info.location}"
        self.form = choose_form(engine.info.capabilities, self.meta.field_type, form, where)
        self.token_pruning = token_pruning
        if token_pruning is not None:
            self._check_token_pruning(where)
        self.max_clauses = max_clauses
        self.native_fusion = native_fusion

    def _check_token_pruning(self, where: str) -> None:
        """Token pruning needs the engine's ``sparse_vector`` query, and replaces two-phase search
        (both rescore the window): a tuned two-phase gives way, an explicit one is refused, and a
        window tuned for two-phase is not taken for this (the default is, unless a flag says)."""
        if self.form != "sparse_vector" or not self.engine.info.capabilities.token_pruning:
            raise ConfigError(f"token pruning is Elasticsearch's sparse_vector query option (8.15+, sparse_vector "
                              f"fields): {where} runs the {self.form} query on index {self.meta.index!r}")
        if self.two_phase is not None and self.sources["two_phase"] == "flag":
            raise ConfigError("two-phase search and token pruning both rescore the top hits: choose one "
                              "(--two-phase 0 turns two-phase off)")
        self.two_phase = None
        del self.sources["two_phase"]
        self.sources["token_pruning"] = "flag"
        if self.sources["two_phase_window"] == "tuned":
            self.two_phase_window, self.sources["two_phase_window"] = DEFAULT_WINDOW, "default"

    @property
    def settings(self) -> dict[str, Any]:
        """Two-phase search and token pruning as configured (see :attr:`sources` for where each
        value came from)."""
        pruning = self.token_pruning
        return {"two_phase": self.two_phase, "two_phase_window": self.two_phase_window,
                "token_pruning": None if pruning is None else {"freq_ratio": pruning.freq_ratio,
                                                               "weight": pruning.weight}}

    # ---------------------------------------------------------------- bodies
    def clause_budget(self, filters: Sequence[dict[str, Any]] = (), reserved: int = 0) -> int:
        """The terms the sparse query may have: the clause limit less the query's other leaves
        (``filters``, and ``reserved`` ones, e.g. BM25 inside one hybrid query)."""
        taken = reserved + sum(leaf_clauses(f) for f in filters)
        if taken >= self.max_clauses:
            raise InputError(f"the filters{' and BM25' if reserved else ''} take {taken} of the {self.max_clauses} "
                             "query clauses the engine allows: none is left for the sparse query")
        return self.max_clauses - taken

    def sparse_query(self, vector: Mapping[str, float], filters: Sequence[dict[str, Any]] = (),
                     reserved: int = 0) -> dict[str, Any]:
        budget = self.clause_budget(filters, reserved)
        return filtered(vector_query(vector, self.meta.field, self.form, budget), list(filters))

    def bm25_query(self, text: str, filters: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
        if not self.meta.text_fields:
            raise ConfigError(f"index {self.meta.index!r} has no text fields for BM25")
        return filtered(bm25_query(text, self.meta.text_fields), list(filters))

    def sparse_body(self, vector: Mapping[str, float], size: int, filters: Sequence[dict[str, Any]] = (),
                    track_total_hits: bool = False, explain: bool = False) -> dict[str, Any]:
        """The search body for a query vector: one query, or (two-phase search, token pruning) a
        cheaper first query whose top hits a rescore with the rest of the vector makes exact."""
        budget = self.clause_budget(filters)
        vector = capped(vector, budget) if vector else vector
        field, form, pruning = self.meta.field, self.form, self.token_pruning
        if pruning is not None:
            first = vector_query(vector, field, form, budget, pruning)
            second = vector_query(vector, field, form, budget, pruning, only_pruned=True)
        elif self.two_phase is not None and len(vector) > self.two_phase:
            head, tail = split_heaviest(vector, self.two_phase)
            first, second = vector_query(head, field, form, budget), vector_query(tail, field, form, budget)
        else:
            return self.body(self.sparse_query(vector, filters), size, track_total_hits, explain)
        body = self.body(filtered(first, list(filters)), size, track_total_hits, explain)
        body["rescore"] = rescore(second, max(self.two_phase_window, size))
        return body

    def body(self, query: dict[str, Any], size: int, track_total_hits: bool = False,
             explain: bool = False) -> dict[str, Any]:
        source = [*self.meta.text_fields, *([self.meta.field] if explain else [])]
        return {"query": query, "size": size, "track_total_hits": track_total_hits, "_source": source}

    # ---------------------------------------------------------------- search
    def search(self, vector: Mapping[str, float], k: int = 10, filters: Sequence[dict[str, Any]] = (),
               track_total_hits: bool = False, explain: bool = False, hybrid: str | None = None,
               text: str | None = None, sparse_weight: float = 0.5, window: int = 100) -> SearchResult:
        """The top ``k`` hits for a query vector (and, with ``hybrid``, its text through BM25)."""
        _check_k(k)
        if hybrid is None:
            result, reply = self._one(self.sparse_body(vector, k, filters, track_total_hits, explain), vector, explain)
            result.total = _total(reply["hits"]) if track_total_hits else None
        else:
            result = self._hybrid(vector, text or "", filters, k, hybrid, explain, sparse_weight, window)
        reserved = self._hybrid_reserve(hybrid, text or "", filters) if hybrid else 0
        result.form, result.query_terms = self.form, min(len(vector), self.clause_budget(filters, reserved))
        return result

    def bm25_search(self, text: str, k: int = 10, filters: Sequence[dict[str, Any]] = ()) -> SearchResult:
        """The top ``k`` hits of ``text`` through BM25 alone: the baseline shown beside the sparse hits."""
        _check_k(k)
        result, _ = self._one(self.body(self.bm25_query(text, filters), k), {}, False)
        result.form = "bm25"
        return result

    def _one(self, body: dict[str, Any], vector: Mapping[str, float], explain: bool
             ) -> tuple[SearchResult, dict[str, Any]]:
        reply = self.engine.search(self.meta.index, body)
        hits = reply["hits"]["hits"]
        return self._result(hits, [float(h["_score"]) for h in hits], vector, explain, [reply]), reply

    def search_many(self, vectors: Sequence[Mapping[str, float]], k: int = 10, batch_size: int = 64,
                    filters: Sequence[dict[str, Any]] = ()) -> list[SearchResult]:
        """Many queries through multi-search, ``batch_size`` per request (evaluation, benchmarks)."""
        results = []
        for start in range(0, len(vectors), batch_size):
            batch = vectors[start:start + batch_size]
            replies = self.engine.msearch(self.meta.index, [self.sparse_body(v, k, filters) for v in batch])
            for vector, reply in zip(batch, replies):
                hits = reply["hits"]["hits"]
                results.append(self._result(hits, [float(h["_score"]) for h in hits], vector, False, [reply]))
        return results

    def hybrid_bodies(self, vector: Mapping[str, float], text: str, k: int, mode: str,
                      filters: Sequence[dict[str, Any]] = (), sparse_weight: float = 0.5, window: int = 100,
                      explain: bool = False) -> tuple[list[dict[str, Any]], bool]:
        """The request bodies of one hybrid search, and whether the engine fuses them itself
        (one body) or :meth:`fuse` must (BM25 then sparse, ``window`` hits each)."""
        if mode not in fusion.MODES:
            raise ConfigError(f"unknown hybrid mode {mode!r}: choose {', '.join(fusion.MODES)}")
        if not 0.0 <= sparse_weight <= 1.0:
            raise ConfigError(f"the sparse weight of linear fusion must be within [0, 1], got {sparse_weight}")
        if not text or not text.strip():
            raise InputError("hybrid search needs the query text for BM25")
        bm25 = self.bm25_query(text, filters)
        sparse = self.sparse_query(vector, filters, self._hybrid_reserve(mode, text, filters))
        window = max(window, k)
        native = (fusion.native_body(self.engine.info.capabilities, mode, bm25, sparse, k, window, sparse_weight)
                  if self.native_fusion else None)
        if native is not None:
            native["_source"] = self.body(sparse, k, explain=explain)["_source"]
            return [native], True
        return [self.body(bm25, window, explain=explain), self.body(sparse, window, explain=explain)], False

    def _hybrid_reserve(self, mode: str, text: str, filters: Sequence[dict[str, Any]]) -> int:
        """Clauses BM25 takes from the sparse query: all of its own where one hybrid query holds
        both lists (OpenSearch), none where each list is its own query."""
        if not self.native_fusion or fusion.native(self.engine.info.capabilities, mode) != "hybrid":
            return 0
        return leaf_clauses(self.bm25_query(text, filters))  # its filters too: each subquery carries them

    @staticmethod
    def fuse(mode: str, replies: Sequence[dict[str, Any]], k: int, sparse_weight: float = 0.5
             ) -> tuple[list[dict[str, Any]], list[float]]:
        """Hits and scores of a hybrid search from its replies (fused here unless the engine did)."""
        if len(replies) == 1:
            hits = replies[0]["hits"]["hits"][:k]
            return hits, [float(h["_score"]) for h in hits]
        fused = fusion.fuse(mode, [reply["hits"]["hits"] for reply in replies], sparse_weight)[:k]
        return [hit for _, hit in fused], [score for score, _ in fused]

    def _hybrid(self, vector: Mapping[str, float], text: str, filters: Sequence[dict[str, Any]], k: int, mode: str,
                explain: bool, sparse_weight: float, window: int) -> SearchResult:
        bodies, native = self.hybrid_bodies(vector, text, k, mode, filters, sparse_weight, window, explain)
        replies = [self.engine.search(self.meta.index, bodies[0])] if native else self.engine.msearch(
            self.meta.index, bodies)
        hits, scores = self.fuse(mode, replies, k, sparse_weight)
        result = self._result(hits, scores, vector, explain, replies)
        result.hybrid, result.fused_natively = mode, native
        return result

    def _result(self, hits: list[dict[str, Any]], scores: list[float], vector: Mapping[str, float], explain: bool,
                replies: list[dict[str, Any]]) -> SearchResult:
        out = []
        for rank, (hit, score) in enumerate(zip(hits, scores), start=1):
            source = hit.get("_source") or {}
            out.append(Hit(rank, str(hit["_id"]), score, _text(source.get("title")), _snippet(self._body_text(source)),
                           hit.get("_index", self.meta.index),
                           contributions(vector, source.get(self.meta.field) or {}) if explain else None))
        took = [reply.get("took") for reply in replies if isinstance(reply.get("took"), (int, float))]
        return SearchResult(out, float(sum(took)) if took else None)

    def _body_text(self, source: dict[str, Any]) -> str:
        return " ".join(_text(source.get(name)) for name in self.meta.text_fields if name != "title")


def contributions(query: Mapping[str, float], document: Mapping[str, float]) -> list[Contribution]:
    """Every term the query and the stored document vector share, by ``q_j x d_j`` descending."""
    shared = [Contribution(term, float(weight), float(document[term])) for term, weight in query.items()
              if term in document]
    return sorted(shared, key=lambda c: (-c.score, c.term))


def _check_k(k: int) -> None:
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")


def _total(hits: dict[str, Any]) -> int | None:
    total = hits.get("total")
    return int(total["value"]) if isinstance(total, dict) else (int(total) if total is not None else None)


def _text(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _snippet(text: str) -> str:
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= SNIPPET_CHARS else flat[:SNIPPET_CHARS].rsplit(" ", 1)[0] + " …"

