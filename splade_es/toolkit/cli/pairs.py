"""``splade-es pairs``: training pairs from a corpus's own titles, for domain adaptation."""

from __future__ import annotations

import json

import click

from splade_es.toolkit.cli.common import friendly_errors


@click.command(short_help="Build title -> body training pairs from a corpus (no queries or judgments).")
@click.option("--corpus", required=True, type=click.Path(exists=True),
              help="BEIR directory, .jsonl(.gz), .csv or .parquet.")
@click.option("--output", required=True, type=click.Path(dir_okay=False),
              help="JSON lines for 'splade-es train' ({\"query\", \"pos\", \"neg\"}); written atomically.")
@click.option("--id-field", default=None, help="Document id field (BEIR: _id).")
@click.option("--title-field", default="title", show_default=True, help="The field used as the query.")
@click.option("--body-field", default="text", show_default=True, help="The field used as the positive document.")
@click.option("--negatives-depth", type=click.IntRange(min=0), default=0, show_default=True,
              help="Add a hard negative drawn from this many best BM25 hits of the title (0: none; "
                   "training then contrasts in-batch only). Often a false negative: see below.")
@click.option("--seed", type=int, default=0, show_default=True, help="Which hit becomes the negative.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@friendly_errors
def pairs(corpus: str, output: str, id_field: str | None, title_field: str, body_field: str,
          negatives_depth: int, seed: int, as_json: bool) -> None:
    """Pair each document's title with its body; no queries or judgments are used.

    Where the body starts with a copy of the title, the copy is removed (otherwise the
    model learns to copy). Documents without a title or body are counted and left out.

    By default the pairs have no explicit negative: the other bodies of each training batch
    are the negatives. --negatives-depth N adds a document BM25 ranks high for the title,
    which makes the task harder but, in a collection of close topics, is often relevant to
    the same questions: on Cranfield 18% of them share a judged query with the positive, and
    training with them ended 4.6 points of nDCG@10 lower (docs/BENCHMARKS.md).

    \b
    Examples:
      splade-es pairs --corpus ../shared/data/cranfield --output cranfield-pairs.jsonl
      splade-es pairs --corpus docs.parquet --title-field headline --body-field body --output pairs.jsonl
      splade-es pairs --corpus docs.jsonl --negatives-depth 20 --output pairs-hard.jsonl
    """
    from splade_es.io.corpus import resolve_corpus
    from splade_es.trainer.pairs import write_title_pairs

    source = resolve_corpus(corpus, id_field, (title_field, body_field))
    stats = write_title_pairs(source, output, title_field=title_field, body_field=body_field,
                              negatives_depth=negatives_depth, seed=seed)
    counts = {"pairs": stats.pairs, "title_stripped": stats.stripped, "no_title": stats.no_title,
              "no_body": stats.no_body, "output": output}
    if as_json:
        click.echo(json.dumps(counts))
    else:
        click.echo(f"wrote {stats.pairs} pairs to {output} (title removed from the body in {stats.stripped}; "
                   f"left out: {stats.no_title} without a title, {stats.no_body} without a body)")
