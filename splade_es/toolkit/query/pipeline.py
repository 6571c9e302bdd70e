"""A query's whole path, written once for ``splade-es search`` and ``splade-es serve``: text ->
the model's pruned query vector -> the index's exact query -> hits -> the JSON report.

The command line encodes one query per process; the service encodes many, batched. Both go
through :class:`QueryPipeline`, so a query served over HTTP gets exactly the vector, query
form and hits the command line gives it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from splade_es.errors import InputError
from splade_es.toolkit.inspection.terms import TermOrigin
from splade_es.toolkit.mappings import config_hash, model_id
from splade_es.toolkit.query.searcher import Searcher, SearchResult
from splade_es.toolkit.query.tuned import as_report, describe, resolve


class QueryPipeline:
    """One index's :class:`Searcher` and the query encoder of the model that wrote it."""

    def __init__(self, searcher: Searcher, encoder: Any, model: str, adapter: str | None = None,
                 query_top_k: int | None = None, query_min_weight: float | None = None) -> None:
        """``encoder``: a ``SparseEncoder`` or a ``StaticQueryEncoder``; refused unless it is the
        model (and config) the index records. Pruning left unset comes from the searcher's tuned
        record, else from the model's query pruning."""
        searcher.meta.check_model(model_id(model, adapter), config_hash(encoder.config.to_dict()))
        self.searcher, self.encoder, self.model = searcher, encoder, model
        default = encoder.config.pruning(True)
        values, sources = resolve({"query_top_k": query_top_k, "query_min_weight": query_min_weight}, searcher.tuned,
                                  {"query_top_k": default.top_k, "query_min_weight": default.min_weight})
        self.pruning = default.override(top_k=values["query_top_k"], min_weight=values["query_min_weight"])
        self.sources = {**sources, **searcher.sources}

    @property
    def settings(self) -> dict[str, Any]:
        """The query settings in force (pruning and two-phase search)."""
        return {"query_top_k": self.pruning.top_k, "query_min_weight": self.pruning.min_weight, **self.searcher.settings}

    def describe_settings(self) -> str:
        """The settings and where each came from (flag, the index's tuned record, default)."""
        return describe(self.settings, self.sources, self.searcher.tuned)

    @classmethod
    def open(cls, searcher: Searcher, model: str | None = None, adapter: str | None = None,
             device: str | None = None, query_top_k: int | None = None,
             query_min_weight: float | None = None, encoder: Any = None) -> QueryPipeline:
        """Load the query encoder of ``model`` (default: the one the index records; a static-query
        bundle loads its tokenizer and table only) unless ``encoder`` is that model already loaded."""
        from splade_es.model.static import load_query_encoder

        name = model or searcher.meta.model
        adapter = adapter if model else None
        encoder = encoder or load_query_encoder(name, adapter=adapter, device=device)
        return cls(searcher, encoder, name, adapter, query_top_k, query_min_weight)

    @property
    def static(self) -> bool:
        """Whether queries come from a weight table (the encoder cannot encode documents)."""
        return not hasattr(self.encoder, "encode_documents")

    def encode(self, texts: Sequence[str], show_progress: bool | None = None) -> list[dict[str, float]]:
        """Query vectors ``{feature: weight}`` for ``texts``, in one encoder call."""
        vectors = self.encoder.encode_queries(list(texts), pruning=self.pruning, show_progress=show_progress)
        return [vector.to_features() for vector in vectors]

    def encode_documents(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Document vectors with the model's document pruning (what ingest stores)."""
        if self.static:
            raise InputError(f"{self.model} is a static-query bundle loaded without its document model: "
                             "encode documents with 'splade-es encode'")
        return [vector.to_features() for vector in self.encoder.encode_documents(list(texts))]

    def check_vector(self, text: str, vector: Mapping[str, float]) -> None:
        """A query with no term left cannot match anything: say which pruning removed them."""
        if not vector:
            raise InputError(f"the query {text!r} has no terms left after pruning (top_k {self.pruning.top_k}, "
                             f"min_weight {self.pruning.min_weight}): lower --query-min-weight")

    def search(self, text: str, vector: Mapping[str, float], k: int = 10, filters: Sequence[dict[str, Any]] = (),
               explain: bool = False, hybrid: str | None = None, hybrid_weight: float = 0.5,
               track_total_hits: bool = False) -> SearchResult:
        """The top ``k`` hits of a query whose vector came from :meth:`encode`."""
        self.check_vector(text, vector)
        return self.searcher.search(vector, k, filters, track_total_hits, explain, hybrid, text, hybrid_weight)

    def origin(self, text: str) -> TermOrigin:
        """Tells the text's own terms from the model's expansions."""
        return TermOrigin(self.encoder.text_features(text))

    def report(self, text: str, result: SearchResult, vector: Mapping[str, float], encode_ms: float,
               origin: TermOrigin) -> dict[str, Any]:
        """The JSON of one search (``splade-es search --json``, ``POST /search``): hits, their
        contributions with an ``expansion`` flag (``origin``: :meth:`origin` of the text), and the
        query vector."""
        hits = []
        for hit in result.hits:
            data = hit.to_dict()
            for contribution in data.get("contributions", []):
                contribution["expansion"] = not origin.in_text(contribution["term"])
            hits.append(data)
        info = self.searcher.engine.info
        return {"query": text, "index": self.searcher.meta.index,
                "engine": {"kind": info.kind, "version": info.version},
                "form": result.form, "hybrid": result.hybrid, "fused_natively": result.fused_natively,
                "took_ms": result.took_ms, "encode_ms": round(encode_ms, 2), "total": result.total,
                "settings": as_report(self.settings, self.sources),
                "query_vector": {term: {"weight": weight, "expansion": not origin.in_text(term)}
                                 for term, weight in vector.items()},
                "hits": hits}
