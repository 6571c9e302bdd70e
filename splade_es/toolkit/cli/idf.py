"""``splade-es idf``: inference-free queries for a bundle, weighted by the corpus's IDF."""

from __future__ import annotations

import json

import click

from splade_es.toolkit.cli.common import friendly_errors, load_encoder, quiet_libraries


@click.command(short_help="Make a bundle's queries inference-free: token weights from corpus IDF.")
@click.option("--model", "model_path", required=True, type=click.Path(exists=True, file_okay=False),
              help="The bundle (splade-es or sentence-transformers directory) whose tokenizer reads the corpus.")
@click.option("--corpus", required=True, type=click.Path(exists=True),
              help="BEIR directory, .jsonl(.gz), .csv or .parquet: the documents you index.")
@click.option("--id-field", default=None, help="Document id field (BEIR: _id).")
@click.option("--text-fields", default=None, help="Comma-separated text fields (default: title,text).")
@click.option("--output", type=click.Path(file_okay=False),
              help="Write a complete new bundle here (the model is loaded once to copy it; a masked LM becomes "
                   "a sentence-transformers Router). Default: add the table to --model in place, no model loaded.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@friendly_errors
def idf(model_path: str, corpus: str, id_field: str | None, text_fields: str | None, output: str | None,
        as_json: bool) -> None:
    """Weight each query token by its IDF over the corpus: queries skip the model entirely.

    A query becomes the set of its tokens, each with weight log(1 + (N - df + 0.5) / (df +
    0.5)) (BM25's IDF over the N documents; df counts the documents holding the token), then
    the bundle's query pruning. Documents are still encoded by the model, so the index is
    unchanged: an index built with this bundle keeps answering it. 'splade-es search' and
    'eval' then load only the tokenizer and the table. In place, a splade-es bundle gets
    query_weights.safetensors and "query_encoder": "static" in splade_config.json; a
    sentence-transformers directory stays one that sentence-transformers reads alike: a
    masked LM + SpladePooling becomes a Router whose query route is a SparseStaticEmbedding
    (its files move unchanged into the document route), a Router's SparseStaticEmbedding gets
    the table. The bundle is rewritten only once the corpus has been read.

    \b
    Examples:
      splade-es idf --model ./bundle --corpus ../shared/data/cranfield
      splade-es idf --model ./splade-v3 --corpus docs.jsonl --output ./splade-v3-doc-only
    """
    from splade_es.io.corpus import Document, read_corpus, resolve_corpus
    from splade_es.model.static import corpus_idf

    quiet_libraries()
    source = resolve_corpus(corpus, id_field, text_fields.split(",") if text_fields else None)
    texts = (record.text for record in read_corpus(source) if isinstance(record, Document))
    static, documents = corpus_idf(model_path, texts)
    if output is None:
        written = str(static.save(model_path))
    else:
        encoder = load_encoder(model_path, device="cpu")
        encoder.use_static_queries(static)
        written = str(encoder.save_pretrained(output))
    if as_json:
        click.echo(json.dumps({"bundle": written, "documents": documents, "vocabulary": static.vocab_size}))
    else:
        click.echo(f"{written}: static queries, IDF over {documents} documents ({static.vocab_size} weights)")
