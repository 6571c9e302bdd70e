"""``splade-es tune``: sweep query pruning, two-phase search and document pruning against the real
engine, find the nDCG@10 / latency frontier, recommend a setting and record it in the index.

Cost model: the test queries are encoded once, at the widest setting of the sweep; every pruned
variant is derived from that vector (:meth:`Pruning.apply`: top-k of a wider top-k is the same
top-k), so the sweep spends engine time, not model time. Document pruning runs on a pruned copy
of the index rebuilt from its stored vectors (never the index itself), all built before any
timing, deleted afterwards unless kept.

Latency is the client's round trip of one search per query (size 10, no ``_source``), timed the
same way for every setting after a warm-up, interleaved: a few rounds, each visiting the settings
in its own shuffled order, so drift on a shared machine does not pick the recommendation; p50 and
p99 over every round. The copies are flushed, refreshed and merged to the index's segments per
shard first (where the engine reports segments), as a freshly loaded copy would otherwise be
timed against a merged index.
"""

from __future__ import annotations

import copy
import itertools
import logging
import random
import re
import shlex
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from splade_es.errors import ConfigError, InputError
from splade_es.io.corpus import Document, read_corpus
from splade_es.model.config import Pruning
from splade_es.toolkit.engines.base import Engine
from splade_es.toolkit.eval.beir import BeirDataset, find_file
from splade_es.toolkit.eval.metrics import Run, evaluate
from splade_es.toolkit.eval.runner import percentiles
from splade_es.toolkit.ingest import set_splade_meta, splade_meta
from splade_es.toolkit.layouts import top_terms
from splade_es.toolkit.query.searcher import Searcher
from splade_es.toolkit.query.tuned import DEFAULT_WINDOW

_log = logging.getLogger(__name__)

K = 10  # nDCG@10 needs ten hits; a search page asks for as many
TOLERANCE = 0.01  # "within 1 point" of nDCG@10
GRIDS = ("quick", "default")
COPY_BATCH = 250
SAMPLE_DOCS = 200  # documents read to place the default document thresholds
FEW_QUERIES = 20  # fewer queries with a relevant document than this: the recommendation is noise


@dataclass(frozen=True)
class Setting:
    """One point of the sweep. ``query_top_k`` None: no cap; ``two_phase`` None: one phase;
    ``doc_min_weight`` None: the index as it is."""

    query_top_k: int | None
    query_min_weight: float = 0.0
    two_phase: int | None = None
    two_phase_window: int = DEFAULT_WINDOW
    doc_min_weight: float | None = None

    @property
    def label(self) -> str:
        parts = [f"top-k {self.query_top_k if self.query_top_k is not None else 'all'}"]
        if self.query_min_weight:
            parts.append(f"min-w {self.query_min_weight:.3g}")
        if self.two_phase is not None:
            parts.append(f"2-phase {self.two_phase}/{self.two_phase_window}")
        if self.doc_min_weight is not None:
            parts.append(f"doc-min-w {self.doc_min_weight:.3g}")
        return ", ".join(parts)

    def query_pruning(self, model_default: Pruning) -> Pruning:
        return replace(model_default, top_k=self.query_top_k, min_weight=self.query_min_weight)

    def record(self) -> dict[str, Any]:
        """The query-time part, as ``search``/``eval`` read it from ``_meta.splade_es.tuned``."""
        return {"query_top_k": self.query_top_k, "query_min_weight": self.query_min_weight,
                "two_phase": self.two_phase, "two_phase_window": self.two_phase_window}


@dataclass
class Measured:
    setting: Setting
    ndcg: float
    p50_ms: float | None  # None: no query had a term left, nothing was timed
    p99_ms: float | None
    index: str  # the index (or pruned copy) searched
    empty_queries: int = 0  # queries with no term left: no request, nDCG 0
    mean_terms: float = 0.0  # query terms sent, mean over queries

    @property
    def eligible(self) -> bool:
        """Whether the setting can be recommended: ``search`` refuses a query pruned to no term, so
        a setting that empties any query would fail for it (and its p50 leaves those out)."""
        return self.empty_queries == 0 and self.p50_ms is not None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self.setting), "label": self.setting.label, "ndcg@10": round(self.ndcg, 6),
                "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "index": self.index,
                "empty_queries": self.empty_queries, "mean_terms": round(self.mean_terms, 2)}


# ---------------------------------------------------------------- frontier and recommendation
def frontier(points: Sequence[Measured]) -> list[Measured]:
    """The Pareto set on (p50 lower, nDCG higher) of the eligible settings, fastest first: a point
    stays unless another is at least as fast and at least as good, and strictly better in one. Of
    exact duplicates the first (in sweep order) stays."""
    points = [p for p in points if p.eligible]
    kept = []
    for i, p in enumerate(points):
        dominated = any((q.p50_ms <= p.p50_ms and q.ndcg >= p.ndcg)
                        and (q.p50_ms < p.p50_ms or q.ndcg > p.ndcg or j < i)
                        for j, q in enumerate(points) if j != i)
        if not dominated:
            kept.append(p)
    return sorted(kept, key=lambda p: (p.p50_ms, -p.ndcg))


def recommend(points: Sequence[Measured], budget_ms: float | None = None, tolerance: float = TOLERANCE) -> Measured:
    """The fastest setting whose nDCG@10 is within ``tolerance`` of the best; with ``budget_ms``,
    the best nDCG@10 among settings whose p50 fits it. Ties go to the other criterion, then to
    the earlier setting of the sweep (the simpler one). A setting that prunes any query to no
    term is never recommended (see :attr:`Measured.eligible`)."""
    if not points:
        raise InputError("nothing was measured")
    order = {id(p): i for i, p in enumerate(points)}
    emptied = [p for p in points if not p.eligible]
    points = [p for p in points if p.eligible]
    if not points:
        worst = min(emptied, key=lambda p: p.empty_queries)
        raise InputError(f"every setting prunes some query to no term (the fewest: {worst.setting.label}, "
                         f"{worst.empty_queries} queries), and search refuses such a query: lower the query "
                         "thresholds (--query-min-weight)")
    if budget_ms is not None:
        fits = [p for p in points if p.p50_ms <= budget_ms]
        if not fits:
            fastest = min(points, key=lambda p: p.p50_ms)
            raise InputError(f"no setting meets the {budget_ms:g} ms budget: the fastest ({fastest.setting.label}) "
                             f"has p50 {fastest.p50_ms:.2f} ms")
        return min(fits, key=lambda p: (-p.ndcg, p.p50_ms, order[id(p)]))
    best = max(p.ndcg for p in points)
    near = [p for p in points if p.ndcg >= best - tolerance - 1e-12]
    return min(near, key=lambda p: (p.p50_ms, -p.ndcg, order[id(p)]))


# ---------------------------------------------------------------- the grid
@dataclass(frozen=True)
class Grid:
    """Values per axis; :meth:`settings` crosses them, leaving out what cannot differ (two-phase
    with as many first-phase terms as the query keeps, windows of a one-phase search)."""

    query_top_k: tuple[int | None, ...]
    query_min_weight: tuple[float, ...]
    two_phase: tuple[int | None, ...]
    two_phase_window: tuple[int, ...]
    doc_min_weight: tuple[float | None, ...]

    def settings(self) -> list[Setting]:
        out = []
        for doc, top_k, weight, first in itertools.product(self.doc_min_weight, self.query_top_k,
                                                           self.query_min_weight, self.two_phase):
            if first is not None and top_k is not None and first >= top_k:
                continue
            windows = self.two_phase_window if first is not None else (DEFAULT_WINDOW,)
            out += [Setting(top_k, weight, first, window, doc) for window in windows]
        return out


def default_grid(name: str, model_top_k: int | None, query_weights: Sequence[float],
                 doc_weights: Sequence[float]) -> Grid:
    """``quick`` (a handful of settings: a smoke test, CI) or ``default``. Thresholds are placed
    on the weights themselves (quantiles of the query and stored document weights), since their
    scale depends on the model: e.g. the document quantile 0.5 drops about half the postings."""
    if name not in GRIDS:
        raise ConfigError(f"unknown grid {name!r}: choose {', '.join(GRIDS)}")

    def cuts(weights: Sequence[float], quantiles: Sequence[float]) -> tuple[float, ...]:
        return tuple(_round(float(np.quantile(weights, q))) for q in quantiles) if len(weights) else ()

    top_ks = [8, 16, 32, 64] if name == "default" else [16]
    top_ks = [model_top_k, *sorted((k for k in top_ks if model_top_k is None or k < model_top_k), reverse=True)]
    if name == "quick":
        return Grid(tuple(top_ks), (0.0,), (None, 8), (DEFAULT_WINDOW,), (None, *cuts(doc_weights, [0.5])))
    return Grid(tuple(top_ks), (0.0, *cuts(query_weights, [0.25])), (None, 8, 16), (DEFAULT_WINDOW,),
                (None, *cuts(doc_weights, [0.25, 0.5])))


def _round(value: float) -> float:
    """Three significant digits: a threshold people can type back as a flag."""
    return float(f"{value:.3g}")


# ---------------------------------------------------------------- document-pruned copies
@dataclass
class PrunedCopy:
    name: str
    min_weight: float
    docs: int
    postings: int  # kept
    postings_before: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "doc_min_weight": self.min_weight, "docs": self.docs,
                "postings_kept": self.postings, "postings_before": self.postings_before,
                "kept_share": round(self.postings / self.postings_before, 4) if self.postings_before else None}


def stored_vectors(engine: Engine, index: str, ids: Sequence[str], batch: int = COPY_BATCH
                   ) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(id, _source)`` of the documents ``ids`` names that the index holds, ``batch`` at a time
    (an ``ids`` query: every engine, the local one included, answers it)."""
    for start in range(0, len(ids), batch):
        chunk = list(ids[start:start + batch])
        reply = engine.search(index, {"query": {"ids": {"values": chunk}}, "size": len(chunk),
                                      "track_total_hits": False})
        for hit in reply["hits"]["hits"]:
            yield str(hit["_id"]), hit.get("_source") or {}


def copy_name(index: str, min_weight: float) -> str:
    """``<index>-tune-doc-<w>``: lower case, only characters every engine accepts in a name."""
    return re.sub(r"[^a-z0-9_.-]", "-", f"{index}-tune-doc-{min_weight:g}".lower())


def build_pruned_copy(engine: Engine, index: str, field_name: str, ids: Sequence[str], min_weight: float,
                      show_progress: bool = False) -> PrunedCopy:
    """A new index ``copy_name(index, w)`` with the index's mapping and its documents' stored
    vectors less every weight below ``min_weight`` (what ``ingest --doc-min-weight w`` stores).
    A leftover copy of an earlier run is replaced; any other index of that name is refused."""
    name = copy_name(index, min_weight)
    mappings = engine.mappings(index)
    concrete, mapping = next(iter(mappings.items()))
    if engine.exists(name):
        meta = next(iter(engine.mappings(name).values())).get("_meta", {}).get("splade_es", {})
        if meta.get("pruned_copy_of") != concrete:
            raise ConfigError(f"index {name!r} exists and is not a pruned copy of {concrete!r}: delete or rename it")
        engine.delete_index(name)
    mapping = copy.deepcopy(mapping)
    meta = mapping.setdefault("_meta", {}).setdefault("splade_es", {})
    for stale in ("tuned", "loaded", "epoch"):
        meta.pop(stale, None)
    meta["pruned_copy_of"] = concrete
    meta["pruning"] = {**meta.get("pruning", {}),
                       "min_weight": max(min_weight, float(meta.get("pruning", {}).get("min_weight") or 0.0))}
    engine.create_index(name, {"mappings": mapping})
    pruning = Pruning(min_weight=min_weight)
    terms_field = f"{field_name}_terms"
    docs = kept = before = 0
    batch: list[tuple[str, dict[str, Any]]] = []
    with tqdm(total=len(ids), unit="doc", desc=f"copy {name}", disable=not show_progress) as bar:
        for doc_id, source in stored_vectors(engine, index, ids):
            vector = source.get(field_name) or {}
            pruned = pruning.apply(vector)
            body = {**source, field_name: pruned}
            if terms_field in source:
                body[terms_field] = top_terms(pruned, len(source[terms_field] or []))
            batch.append((doc_id, body))
            docs, kept, before = docs + 1, kept + len(pruned), before + len(vector)
            if len(batch) >= COPY_BATCH:
                _bulk(engine, name, batch)
                bar.update(len(batch))
                batch = []
        if batch:
            _bulk(engine, name, batch)
            bar.update(len(batch))
    engine.refresh(name)
    if engine.count(name) != docs:
        raise ConfigError(f"the pruned copy {name!r} holds {engine.count(name)} documents, expected {docs}")
    return PrunedCopy(name, min_weight, docs, kept, before)


def _bulk(engine: Engine, index: str, documents: list[tuple[str, dict[str, Any]]]) -> None:
    failures = engine.bulk(index, documents)
    if failures:
        raise ConfigError(f"{index}: the engine refused {len(failures)} documents of the pruned copy, e.g. "
                          f"{failures[0].id}: {failures[0].reason}")


# ---------------------------------------------------------------- measuring
def derive(vectors: Mapping[str, Mapping[str, float]], pruning: Pruning) -> dict[str, dict[str, float]]:
    """Each query's vector under ``pruning``, from its wide encoding."""
    return {qid: pruning.apply(vector) for qid, vector in vectors.items()}


@dataclass
class Plan:
    """One setting ready to time: where it searches and each query's request body (none for a
    query pruned to no term)."""

    setting: Setting
    index: str
    bodies: dict[str, dict[str, Any]]
    queries: int
    mean_terms: float


def plan(searcher: Searcher, setting: Setting, vectors: Mapping[str, Mapping[str, float]]) -> Plan:
    """The search bodies of ``vectors`` under ``setting`` (size 10, no ``_source``)."""
    bodies = {qid: {**searcher.sparse_body(vector, K), "_source": False} for qid, vector in vectors.items() if vector}
    terms = float(np.mean([len(v) for v in vectors.values()])) if vectors else 0.0
    return Plan(setting, searcher.meta.index, bodies, len(vectors), terms)


def visiting_orders(settings: int, rounds: int, seed: int = 0) -> list[list[int]]:
    """The order each round visits the settings in: a seeded shuffle, then the same reversed, and
    so on: over a pair of rounds a steady drift adds the same to every setting's mean."""
    shuffler = random.Random(seed)
    orders: list[list[int]] = []
    for number in range(rounds):
        if number % 2:
            orders.append(orders[-1][::-1])
        else:
            orders.append(list(range(settings)))
            shuffler.shuffle(orders[-1])
    return orders


def measure(engine: Engine, plans: Sequence[Plan], qrels: Mapping[str, Mapping[str, int]], rounds: int = 3,
            warmup: int = 20, seed: int = 0, clock: Callable[[], float] = time.perf_counter,
            progress: Callable[[int], None] | None = None) -> list[Measured]:
    """Each plan's nDCG@10 and round-trip p50/p99, interleaved so drift on a shared machine falls
    on every setting alike: ``warmup`` untimed searches per setting, then ``rounds`` rounds, each
    visiting every setting in turn (:func:`visiting_orders`) and timing one search per query;
    the percentiles are over all rounds. nDCG@10 is scored on the first round's hits."""
    for item in plans:
        for body in itertools.islice(itertools.cycle(item.bodies.values()), min(warmup, len(item.bodies))):
            engine.search(item.index, body)
    took: list[list[float]] = [[] for _ in plans]
    runs: list[Run | None] = [None] * len(plans)
    for order in visiting_orders(len(plans), rounds, seed):
        for position in order:
            item, run = plans[position], {}
            for qid, body in item.bodies.items():
                began = clock()
                reply = engine.search(item.index, body)
                took[position].append((clock() - began) * 1000)
                run[qid] = {str(hit["_id"]): float(hit["_score"]) for hit in reply["hits"]["hits"]}
            runs[position] = runs[position] or run
            if progress:
                progress(1)
    measured = []
    for item, times, run in zip(plans, took, runs):
        means, _ = evaluate(qrels, run or {})
        latency = percentiles(times) if times else {"p50": None, "p99": None}  # nothing searched: nothing timed
        measured.append(Measured(item.setting, means["ndcg@10"], latency["p50"], latency["p99"], item.index,
                                 item.queries - len(item.bodies), item.mean_terms))
    return measured


def settle_copies(engine: Engine, index: str, copies: Sequence[str]) -> None:
    """Put the copies in the state of the index before they are timed against it: flushed and
    refreshed, and merged down to the index's segments per shard (a freshly bulk-loaded copy has
    many small ones; the index may be merged), where the engine tells (not the local one)."""
    engine.settle(index)
    segments = engine.segments_per_shard(index) if copies else None
    for name in copies:
        engine.settle(name)
        if segments is not None and (engine.segments_per_shard(name) or 0) > segments:
            engine.force_merge(name, segments)
            engine.refresh(name)


# ---------------------------------------------------------------- the sweep
@dataclass
class TuneReport:
    dataset: str
    split: str
    index: str
    engine: dict[str, str]
    queries: int
    budget_ms: float | None
    points: list[Measured]
    frontier: list[Measured]
    recommended: Measured  # over every setting, doc-pruned ones included
    for_index: Measured | None  # over the settings this index runs as it is: what is recorded
    copies: list[PrunedCopy] = field(default_factory=list)
    kept_copies: bool = False
    recorded: bool = False
    reingest: str | None = None  # the command that builds the recommended doc-pruned index

    @property
    def baseline(self) -> Measured:
        """The model's own settings on the index as it is (the sweep's first point)."""
        return self.points[0]

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "split": self.split, "index": self.index, "engine": self.engine,
                "queries": self.queries, "budget_ms": self.budget_ms, "k": K,
                "baseline": self.baseline.to_dict(), "recommended": self.recommended.to_dict(),
                "for_index": self.for_index.to_dict() if self.for_index else None, "recorded": self.recorded,
                "reingest": self.reingest,
                "frontier": [p.setting.label for p in self.frontier],
                "copies": [{**c.to_dict(), "kept": self.kept_copies} for c in self.copies],
                "settings": [p.to_dict() for p in self.points]}


@dataclass
class TuneOptions:
    grid: str = "default"
    overrides: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # Grid field -> values (the user's lists)
    budget_ms: float | None = None
    warmup: int = 20
    rounds: int = 3
    keep_copies: bool = False
    record: bool = True
    show_progress: bool = True


def check_judgments(dataset: BeirDataset) -> int:
    """The queries with a relevant (grade > 0) document: none, and every nDCG@10 is 0, nothing to
    tune on (an error); fewer than :data:`FEW_QUERIES`, and the recommendation is noise (a warning)."""
    relevant = sum(1 for docs in dataset.qrels.values() if any(grade > 0 for grade in docs.values()))
    name = f"{dataset.split}.tsv"
    qrels_file = find_file(dataset.path / "qrels", name) or dataset.path / "qrels" / name
    if not relevant:
        raise InputError(f"{qrels_file} (split {dataset.split!r}): no judgment has a grade above 0, so every nDCG@10 "
                         "is 0 and there is nothing to tune on")
    if relevant < FEW_QUERIES:
        _log.warning("%s (split %r): only %d queries have a relevant document; a recommendation on so few is noise",
                     qrels_file, dataset.split, relevant)
    return relevant


def check_dataset_matches(engine: Engine, index: str, dataset: BeirDataset) -> None:
    """One request: the index must hold some judged document, else every score would be 0."""
    judged = sorted({doc for docs in dataset.qrels.values() for doc, grade in docs.items() if grade > 0})[:500]
    reply = engine.search(index, {"query": {"ids": {"values": judged}}, "size": 1, "_source": False,
                                  "track_total_hits": False})
    if not reply["hits"]["hits"]:
        raise InputError(f"index {index!r} holds none of the documents judged in {dataset.name} "
                         f"(qrels/{dataset.split}.tsv, e.g. {judged[0]!r}): tune it on the dataset it was built from")


def tune(engine: Engine, index: str, dataset: BeirDataset, pipeline, options: TuneOptions) -> TuneReport:
    """Encode the queries once, sweep the grid (on pruned copies for document pruning), find the
    frontier, recommend, and record the recommendation in ``_meta.splade_es.tuned``.

    ``pipeline``: the index's :class:`~splade_es.toolkit.query.pipeline.QueryPipeline`, opened
    without the index's tuned record (the sweep starts from the model's own settings)."""
    searcher: Searcher = pipeline.searcher
    check_judgments(dataset)
    check_dataset_matches(engine, index, dataset)
    model_default = pipeline.encoder.config.pruning(True)
    ids = list(dataset.queries)
    # Every id, to copy the index for document pruning (the copy is of the whole corpus anyway).
    corpus_ids = sorted(record.id for record in read_corpus(dataset.corpus) if isinstance(record, Document))
    doc_weights = [w for _, source in stored_vectors(engine, index, corpus_ids[:SAMPLE_DOCS])
                   for w in (source.get(searcher.meta.field) or {}).values()]
    # The default query thresholds are placed on the encoded weights, above the model's own
    # minimum, so the grid without them already tells how wide the one encoding must be.
    grid = _grid(options, model_default, [], doc_weights)
    widest = replace(model_default, top_k=None if None in grid.query_top_k else max(grid.query_top_k),
                     min_weight=min(grid.query_min_weight))
    encoded = pipeline.encoder.encode_queries([dataset.queries[q] for q in ids], pruning=widest,
                                              show_progress=options.show_progress)
    wide = {qid: vector.to_features() for qid, vector in zip(ids, encoded)}
    blank = [qid for qid, vector in wide.items() if not vector]
    if len(blank) == len(wide):
        raise InputError(f"no query of {dataset.name!r} keeps a term even at the widest setting: nothing to tune")
    if blank:  # empty whatever the setting: they would make every setting ineligible
        _log.warning("%d queries keep no term even at the widest setting (e.g. %r): left out of the sweep",
                     len(blank), blank[0])
        wide = {qid: vector for qid, vector in wide.items() if vector}
    query_weights = [w for v in derive(wide, model_default).values() for w in v.values()]
    settings = _grid(options, model_default, query_weights, doc_weights).settings()
    copies: dict[float, PrunedCopy] = {}
    try:
        # Every copy first, so the settings can be timed interleaved (see measure).
        for doc_min_weight in dict.fromkeys(s.doc_min_weight for s in settings if s.doc_min_weight is not None):
            copies[doc_min_weight] = build_pruned_copy(engine, index, searcher.meta.field, corpus_ids,
                                                       doc_min_weight, options.show_progress)
        settle_copies(engine, index, [made.name for made in copies.values()])
        plans = []
        for setting in settings:
            target = copies[setting.doc_min_weight].name if setting.doc_min_weight is not None else index
            variant = Searcher(engine, target, searcher.form, searcher.max_clauses, setting.two_phase or 0,
                               setting.two_phase_window, use_tuned=False)
            plans.append(plan(variant, setting, derive(wide, setting.query_pruning(model_default))))
        with tqdm(total=options.rounds * len(plans), unit="setting", desc=f"sweep {index} ({options.rounds} rounds)",
                  disable=not options.show_progress) as bar:
            points = measure(engine, plans, dataset.qrels, options.rounds, options.warmup, progress=bar.update)
    finally:
        if not options.keep_copies:
            for made in copies.values():
                engine.delete_index(made.name)
    recommended = recommend(points, options.budget_ms)
    try:
        for_index = recommend([p for p in points if p.setting.doc_min_weight is None], options.budget_ms)
    except InputError:  # only a doc-pruned index meets the budget: nothing to record for this one
        for_index = None
    report = TuneReport(dataset.name, dataset.split, index, {"kind": engine.info.kind, "version": engine.info.version},
                        len(ids), options.budget_ms, points, frontier(points), recommended, for_index,
                        list(copies.values()), options.keep_copies)
    if recommended.setting.doc_min_weight is not None:
        report.reingest = reingest_command(searcher, dataset, recommended.setting, engine,
                                           splade_meta(engine, index).get("pruning"))
    if options.record and for_index is not None:
        set_splade_meta(engine, index, "tuned", tuned_record(report, for_index))
        report.recorded = True
    return report


def _grid(options: TuneOptions, model_default: Pruning, query_weights: Sequence[float],
          doc_weights: Sequence[float]) -> Grid:
    """The named grid with the user's lists in place of its axes, the model's own setting (the
    baseline) first on each axis, so the first setting of the sweep is the baseline."""
    grid = replace(default_grid(options.grid, model_default.top_k, query_weights, doc_weights), **options.overrides)

    def first(value: Any, values: Sequence[Any]) -> tuple[Any, ...]:
        return (value, *(v for v in values if v != value))

    return Grid(first(model_default.top_k, grid.query_top_k), first(model_default.min_weight, grid.query_min_weight),
                first(None, grid.two_phase), grid.two_phase_window, first(None, grid.doc_min_weight))


def tuned_record(report: TuneReport, point: Measured) -> dict[str, Any]:
    """``_meta.splade_es.tuned``: the query settings ``search`` and ``eval`` default to, and what
    they were measured to give."""
    baseline = report.baseline
    return {**point.setting.record(), "dataset": report.dataset, "split": report.split,
            "date": time.strftime("%Y-%m-%d", time.gmtime()), "ndcg@10": round(point.ndcg, 6),
            "p50_ms": point.p50_ms, "p99_ms": point.p99_ms, "baseline_ndcg@10": round(baseline.ndcg, 6),
            "baseline_p50_ms": baseline.p50_ms, "budget_ms": report.budget_ms, "engine": report.engine}


def reingest_command(searcher: Searcher, dataset: BeirDataset, setting: Setting, engine: Engine,
                     pruning: Mapping[str, Any] | None = None) -> str:
    """The ``splade-es ingest`` line that builds the index a doc-pruned setting was measured on:
    the index's own document pruning and windows (``pruning``, its ``_meta.splade_es.pruning``
    record) carried over, since the copy kept them, with the setting's weight threshold on top."""
    pruning = pruning or {}
    where = ["--url" if engine.info.kind != "local" else "--data-dir", engine.info.location]
    kept = []
    if pruning.get("top_k") is not None:
        kept += ["--doc-top-k", str(int(pruning["top_k"]))]
    if pruning.get("chunk_tokens") is not None:
        kept += ["--chunk-tokens", str(int(pruning["chunk_tokens"]))]
        if pruning.get("chunk_overlap"):
            kept += ["--chunk-overlap", str(int(pruning["chunk_overlap"]))]
    min_weight = max(setting.doc_min_weight or 0.0, float(pruning.get("min_weight") or 0.0))
    return shlex.join(["splade-es", "ingest", "--index", f"{searcher.meta.index}-doc-pruned", "--corpus",
                       str(dataset.path), "--model", searcher.meta.model, *kept, "--doc-min-weight",
                       f"{min_weight:g}", *where])
