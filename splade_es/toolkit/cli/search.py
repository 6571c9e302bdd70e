"""``splade-es search``: a query through the model, the index's exact sparse query, explained hits."""

from __future__ import annotations

import json
import time

import click

from splade_es.errors import InputError
from splade_es.toolkit.cli.common import engine_options, friendly_errors, load_query_encoder, open_engine
from splade_es.toolkit.inspection.terms import TermOrigin
from splade_es.toolkit.mappings import config_hash, model_id
from splade_es.toolkit.query.forms import DEFAULT_MAX_CLAUSES, FORMS
from splade_es.toolkit.query.fusion import MODES
from splade_es.toolkit.query.searcher import Searcher, SearchResult


@click.command(short_help="Search an index with a query expanded by the model.")
@click.argument("query")
@click.option("--index", required=True, help="Index or alias written by 'splade-es ingest'.")
@click.option("--model", "model_path", envvar="SPLADE_ES_MODEL", metavar="PATH_OR_ID",
              help="Query model (env SPLADE_ES_MODEL). Default: the model recorded in the index.")
@click.option("--adapter", metavar="PATH_OR_ID", help="A peft LoRA adapter to apply to --model.")
@engine_options
@click.option("--k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Hits to return.")
@click.option("--query-top-k", type=click.IntRange(min=1), help="Keep the K heaviest query terms (default: the model's).")
@click.option("--query-min-weight", type=click.FloatRange(min=0), help="Drop query terms lighter than W.")
@click.option("--explain", is_flag=True, help="Show each hit's top contributing terms (query x document weight).")
@click.option("--explain-terms", type=click.IntRange(min=1), default=8, show_default=True,
              help="Contributions shown per hit in the table (--json lists them all).")
@click.option("--hybrid", type=click.Choice(MODES), help="Fuse with BM25 over the text fields: rrf or linear.")
@click.option("--hybrid-weight", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="linear fusion: weight of the sparse scores (BM25 gets 1 - W), both min-max normalised.")
@click.option("--filter", "filters", multiple=True, metavar="FIELD=VALUE",
              help="Only documents whose FIELD holds VALUE (a term filter; repeat to combine).")
@click.option("--query-form", type=click.Choice(FORMS), help="Force a query form (default: the best the engine has).")
@click.option("--max-clauses", type=click.IntRange(min=1), default=DEFAULT_MAX_CLAUSES, show_default=True,
              help="Cap on query terms (the engine's boolean clause limit); a longer query keeps its heaviest.")
@click.option("--two-phase", type=click.IntRange(min=1), metavar="N",
              help="Query with the N heaviest terms, then rescore the top --two-phase-window hits with the rest "
                   "(exact scores in the window, much faster for long queries).")
@click.option("--two-phase-window", type=click.IntRange(min=1), default=100, show_default=True,
              help="Candidates rescored by the second phase.")
@click.option("--track-total-hits", is_flag=True, help="Count every match (slower: no early termination).")
@click.option("--device", help="Where the query is encoded: cpu, cuda, cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for scripts).")
@friendly_errors
def search(query: str, index: str, model_path: str | None, adapter: str | None,
           url, engine_kind, data_dir, api_key, username, password, ca_certs, insecure,
           k: int, query_top_k: int | None, query_min_weight: float | None, explain: bool, explain_terms: int,
           hybrid: str | None, hybrid_weight: float, filters: tuple[str, ...], query_form: str | None,
           max_clauses: int, two_phase: int | None, two_phase_window: int, track_total_hits: bool,
           device: str | None, as_json: bool) -> None:
    """Expand QUERY with the model and rank the index by the exact dot product.

    The query is encoded (and pruned) by the model, so every engine, the local one included,
    scores the same vector: a bool of linear rank_feature clauses on rank_features fields, the
    sparse_vector query (or boosted term clauses) on sparse_vector fields. Terms marked '+'
    are expansions: the model added them, the query text does not contain them.

    \b
    Examples:
      splade-es search --index cran "boundary layer transition"
      splade-es search --index cran --explain --k 5 "heat transfer at hypersonic speed"
      splade-es search --index cran --hybrid rrf --json "shock wave" | jq '.hits[].id'
      splade-es search --index docs --filter lang=en --url https://es:9200 "reset a password"
    """
    if not query.strip():
        raise InputError("the query is empty: give some text to search for")
    engine = open_engine(url, engine_kind, data_dir, api_key, username, password, ca_certs, insecure)
    try:
        searcher = Searcher(engine, index, query_form, max_clauses, two_phase, two_phase_window)
        model = model_path or searcher.meta.model
        encoder = load_query_encoder(model, adapter if model_path else None, device)
        searcher.meta.check_model(model_id(model, adapter if model_path else None), config_hash(encoder.config.to_dict()))
        pruning = encoder.config.pruning(True).override(top_k=query_top_k, min_weight=query_min_weight)
        started = time.perf_counter()
        vector = encoder.encode_queries(query, pruning=pruning).to_features()
        encode_ms = (time.perf_counter() - started) * 1000
        if not vector:
            raise InputError(f"the query {query!r} has no terms left after pruning (top_k {pruning.top_k}, "
                             f"min_weight {pruning.min_weight}): lower --query-min-weight")
        result = searcher.search(vector, k, [_term_filter(f) for f in filters], track_total_hits, explain, hybrid,
                                 query, hybrid_weight)
        origin = TermOrigin(encoder.text_features(query))
        if as_json:
            click.echo(json.dumps(_as_json(query, searcher, result, vector, origin, encode_ms), ensure_ascii=False))
        else:
            click.echo("\n".join(_as_text(query, searcher, result, origin, explain_terms, encode_ms)))
    finally:
        engine.close()


def _term_filter(text: str) -> dict:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise click.BadParameter(f"{text!r} is not FIELD=VALUE", param_hint="--filter")
    return {"term": {name.strip(): value}}


def _as_json(query: str, searcher: Searcher, result: SearchResult, vector: dict[str, float], origin: TermOrigin,
             encode_ms: float) -> dict:
    hits = []
    for hit in result.hits:
        data = hit.to_dict()
        for contribution in data.get("contributions", []):
            contribution["expansion"] = not origin.in_text(contribution["term"])
        hits.append(data)
    info = searcher.engine.info
    return {"query": query, "index": searcher.meta.index, "engine": {"kind": info.kind, "version": info.version},
            "form": result.form, "hybrid": result.hybrid, "fused_natively": result.fused_natively,
            "took_ms": result.took_ms, "encode_ms": round(encode_ms, 2), "total": result.total,
            "query_vector": {term: {"weight": weight, "expansion": not origin.in_text(term)}
                             for term, weight in vector.items()},
            "hits": hits}


def _as_text(query: str, searcher: Searcher, result: SearchResult, origin: TermOrigin, shown: int,
             encode_ms: float) -> list[str]:
    info = searcher.engine.info
    how = f"{result.form} query, {result.query_terms} terms" + (f", hybrid {result.hybrid}" if result.hybrid else "")
    took = f", engine {result.took_ms:.0f} ms" if result.took_ms is not None else ""
    total = f", {result.total} matches" if result.total is not None else ""
    lines = [f"{len(result.hits)} hits for {query!r} in {searcher.meta.index} "
             f"({info.kind} {info.version}; {how}; encoded in {encode_ms:.0f} ms{took}{total})"]
    if not result.hits:
        lines.append("  no document shares a term with the query")
    for hit in result.hits:
        lines.append(f"{hit.rank:>3}. {hit.score:9.4f}  [{hit.id}] {hit.title}".rstrip())
        if hit.snippet:
            lines.append(f"       {hit.snippet}")
        if hit.contributions is not None:
            explained = sum(c.score for c in hit.contributions)
            terms = ", ".join(f"{'' if origin.in_text(c.term) else '+'}{c.term} {c.score:.3f}"
                              f" ({c.query_weight:.2f}x{c.document_weight:.2f})" for c in hit.contributions[:shown])
            lines.append(f"       terms (sum {explained:.4f}): {terms or 'none'}")
    if any(hit.contributions for hit in result.hits):
        lines.append("('+' marks expansion terms: added by the model, not in the query text)")
    return lines
