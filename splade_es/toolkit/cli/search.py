"""``splade-es search``: a query through the model, the index's exact sparse query, explained hits."""

from __future__ import annotations

import json
import time

import click

from splade_es.errors import InputError
from splade_es.toolkit.cli.common import engine_options, friendly_errors, open_engine, query_options, quiet_libraries
from splade_es.toolkit.inspection.terms import TermOrigin
from splade_es.toolkit.query.forms import TokenPruning
from splade_es.toolkit.query.fusion import MODES
from splade_es.toolkit.query.pipeline import QueryPipeline
from splade_es.toolkit.query.searcher import Searcher, SearchResult


@click.command(short_help="Search an index with a query expanded by the model.")
@click.argument("query")
@click.option("--index", required=True, help="Index or alias written by 'splade-es ingest'.")
@query_options
@engine_options
@click.option("--k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Hits to return.")
@click.option("--explain", is_flag=True, help="Show each hit's top contributing terms (query x document weight).")
@click.option("--explain-terms", type=click.IntRange(min=1), default=8, show_default=True,
              help="Contributions shown per hit in the table (--json lists them all).")
@click.option("--hybrid", type=click.Choice(MODES), help="Fuse with BM25 over the text fields: rrf or linear.")
@click.option("--hybrid-weight", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="linear fusion: weight of the sparse scores (BM25 gets 1 - W), both min-max normalised.")
@click.option("--filter", "filters", multiple=True, metavar="FIELD=VALUE",
              help="Only documents whose FIELD holds VALUE (a term filter; repeat to combine).")
@click.option("--track-total-hits", is_flag=True, help="Count every match (slower: no early termination).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for scripts).")
@friendly_errors
def search(query: str, index: str, model_path: str | None, adapter: str | None, query_top_k: int | None,
           query_min_weight: float | None, query_form: str | None, max_clauses: int, two_phase: int | None,
           two_phase_window: int | None, token_pruning: TokenPruning | None, no_tuned: bool,
           device: str | None,
           url, engine_kind, data_dir, api_key, username, password, ca_certs, insecure,
           k: int, explain: bool, explain_terms: int, hybrid: str | None, hybrid_weight: float,
           filters: tuple[str, ...], track_total_hits: bool, as_json: bool) -> None:
    """Expand QUERY with the model and rank the index by the exact dot product.

    The query is encoded (and pruned) by the model, so every engine, the local one included,
    scores the same vector: a bool of linear rank_feature clauses on rank_features fields, the
    sparse_vector query (or boosted term clauses) on sparse_vector fields. Terms marked '+'
    are expansions: the model added them, the query text does not contain them. Query pruning
    and two-phase search not set by a flag come from what 'splade-es tune' recorded in the
    index (--no-tuned: the model's defaults); the output says which source each came from.

    \b
    Examples:
      splade-es search --index cran "boundary layer transition"
      splade-es search --index cran --explain --k 5 "heat transfer at hypersonic speed"
      splade-es search --index cran --hybrid rrf --json "shock wave" | jq '.hits[].id'
      splade-es search --index cran --no-tuned --two-phase 0 "shock wave"   # untuned, one phase
      splade-es search --index docs --filter lang=en --url https://es:9200 "reset a password"
    """
    if not query.strip():
        raise InputError("the query is empty: give some text to search for")
    engine = open_engine(url, engine_kind, data_dir, api_key, username, password, ca_certs, insecure)
    try:
        searcher = Searcher(engine, index, query_form, max_clauses, two_phase, two_phase_window,
                            use_tuned=not no_tuned, token_pruning=token_pruning)
        quiet_libraries()
        pipeline = QueryPipeline.open(searcher, model_path, adapter, device, query_top_k, query_min_weight)
        started = time.perf_counter()
        vector = pipeline.encode([query])[0]
        encode_ms = (time.perf_counter() - started) * 1000
        result = pipeline.search(query, vector, k, [_term_filter(f) for f in filters], explain, hybrid, hybrid_weight,
                                 track_total_hits)
        origin = pipeline.origin(query)
        if as_json:
            click.echo(json.dumps(pipeline.report(query, result, vector, encode_ms, origin), ensure_ascii=False))
        else:
            click.echo("\n".join(_as_text(query, searcher, result, origin, explain_terms, encode_ms,
                                          pipeline.describe_settings())))
    finally:
        engine.close()


def _term_filter(text: str) -> dict:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise click.BadParameter(f"{text!r} is not FIELD=VALUE", param_hint="--filter")
    return {"term": {name.strip(): value}}


def _as_text(query: str, searcher: Searcher, result: SearchResult, origin: TermOrigin, shown: int,
             encode_ms: float, settings: str) -> list[str]:
    info = searcher.engine.info
    how = f"{result.form} query, {result.query_terms} terms" + (f", hybrid {result.hybrid}" if result.hybrid else "")
    took = f", engine {result.took_ms:.0f} ms" if result.took_ms is not None else ""
    total = f", {result.total} matches" if result.total is not None else ""
    lines = [f"{len(result.hits)} hits for {query!r} in {searcher.meta.index} "
             f"({info.kind} {info.version}; {how}; encoded in {encode_ms:.0f} ms{took}{total})",
             f"settings: {settings}"]
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
