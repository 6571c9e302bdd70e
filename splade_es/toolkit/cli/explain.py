"""``splade-es explain``: what a text means to the model, term by term."""

from __future__ import annotations

import json

import click

from splade_es.errors import InputError
from splade_es.toolkit.cli.common import friendly_errors, load_encoder
from splade_es.toolkit.inspection.terms import TermOrigin, weight_table


@click.command(short_help="Show a text's expansion terms and weights.")
@click.argument("text")
@click.option("--model", "model_path", envvar="SPLADE_ES_MODEL", required=True, metavar="PATH_OR_ID",
              help="Model bundle, HF model directory or hub id (env SPLADE_ES_MODEL).")
@click.option("--adapter", metavar="PATH_OR_ID", help="A peft LoRA adapter to apply to --model.")
@click.option("--query/--document", "is_query", default=True, show_default=True,
              help="Encode as a query (query template and pruning) or as a document.")
@click.option("--top-k", type=click.IntRange(min=1), help="Keep at most K terms (default: the model's pruning).")
@click.option("--min-weight", type=click.FloatRange(min=0), help="Drop terms lighter than W.")
@click.option("--limit", type=click.IntRange(min=1), default=30, show_default=True,
              help="Rows shown in the table (--json lists every term).")
@click.option("--device", help="cpu, cuda, cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for scripts).")
@friendly_errors
def explain(text: str, model_path: str, adapter: str | None, is_query: bool, top_k: int | None,
            min_weight: float | None, limit: int, device: str | None, as_json: bool) -> None:
    """Encode TEXT and list its terms by weight, marking each as coming from the text itself or
    as an expansion the model added.

    \b
    Examples:
      splade-es explain --model ./bundle "lift of a delta wing"
      splade-es explain --model ./bundle --document --limit 50 "$(cat abstract.txt)"
      splade-es explain --model ./bundle --json "shock wave" | jq '.terms[:5]'
    """
    if not text.strip():
        raise InputError("the text is empty: give something to explain")
    encoder = load_encoder(model_path, adapter, device)
    pruning = encoder.config.pruning(is_query).override(top_k=top_k, min_weight=min_weight)
    vector = (encoder.encode_queries if is_query else encoder.encode_documents)(text, pruning=pruning)
    rows = vector.top()
    origin = TermOrigin(encoder.text_features(text))
    if as_json:
        click.echo(json.dumps({
            "text": text, "kind": "query" if is_query else "document", "features": len(rows),
            "expansions": sum(not origin.in_text(term) for term, _ in rows),
            "terms": [{"term": term, "weight": weight, "expansion": not origin.in_text(term)} for term, weight in rows],
        }, ensure_ascii=False))
        return
    expansions = sum(not origin.in_text(term) for term, _ in rows)
    click.echo(f"{len(rows)} terms ({len(rows) - expansions} from the text, {expansions} expansions)"
               + (f"; the {limit} heaviest:" if len(rows) > limit else ":"))
    click.echo("\n".join(weight_table(rows[:limit], origin)))
