"""``splade-es encode``: texts in, sparse vectors out (terminal table or JSON lines)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TextIO

import click

from splade_es.errors import InputError
from splade_es.io.atomic import atomic_text_file
from splade_es.toolkit.cli.common import chunk_options, chunking, friendly_errors, quiet_libraries
from splade_es.io.readers import TextRecord, read_text_records

SHOWN_FEATURES = 20
BLOCK = 4096  # texts encoded between writes, so memory stays flat on big files


@click.command(short_help="Encode texts into sparse vectors (table or JSON lines).")
@click.option("--model", "model_path", envvar="SPLADE_ES_MODEL", required=True, metavar="PATH_OR_ID",
              help="Model bundle directory, plain HF model directory, or hub id. [env: SPLADE_ES_MODEL]")
@click.option("--adapter", metavar="PATH_OR_ID", help="A peft LoRA adapter to apply to --model.")
@click.option("--query", "is_query", is_flag=True, help="Encode as queries (query template and pruning) instead of documents.")
@click.option("--mode", type=click.Choice(["echo", "causal", "bidirectional", "mlm"]),
              help="Override the model's pooling mode (default: from splade_config.json, else echo / mlm).")
@click.option("--top-k", type=click.IntRange(min=1), help="Keep at most N features (default: the model's query/document setting).")
@click.option("--min-weight", type=click.FloatRange(min=0), help="Drop weights below W.")
@click.option("--max-ratio", type=click.FloatRange(0, 1), help="Drop weights below R x the vector's largest weight.")
@click.option("--input", "input_path", metavar="FILE.jsonl", help='Read {"id", "text"} JSON lines from FILE ("-" for stdin).')
@click.option("--output", "output_path", type=click.Path(dir_okay=False), help="Write JSON lines here (atomically) instead of stdout.")
@click.option("--json", "as_json", is_flag=True, help='One JSON line per text: {"id", "features": {name: weight}}.')
@click.option("--device", help="cpu, cuda, cuda:N (default: cuda when available).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), help="Default: bfloat16 on GPU, float32 on CPU.")
@click.option("--quantization", type=click.Choice(["8bit", "4bit"]), help="Load weights in 8/4 bit (bitsandbytes, CUDA).")
@click.option("--batch-tokens", type=click.IntRange(min=1), help="Padded tokens per forward pass.")
@chunk_options
@click.argument("texts", nargs=-1)
@friendly_errors
def encode(model_path: str, adapter: str | None, is_query: bool, mode: str | None, top_k: int | None,
           min_weight: float | None, max_ratio: float | None, input_path: str | None, output_path: str | None,
           as_json: bool, device: str | None, dtype: str | None, quantization: str | None,
           batch_tokens: int | None, chunk_tokens: int | None, chunk_overlap: int, texts: tuple[str, ...]) -> None:
    """Encode TEXT... (or --input FILE) into sparse vectors.

    Without --json, prints each text's heaviest features; with --json, --input or
    --output, writes one JSON line per text. Empty texts get an empty vector.

    \b
    Examples:
      splade-es encode --model ./bundle "shock wave boundary layer interaction"
      splade-es encode --model ./bundle --query --top-k 32 --json "what is transition?"
      splade-es encode --model ./bundle --input corpus.jsonl --output vectors.jsonl
      splade-es encode --model ./bundle --input long.jsonl --chunk-tokens 256 --chunk-overlap 32 --json
    """
    if bool(texts) == bool(input_path):
        raise click.UsageError("give either TEXT arguments or --input FILE (exactly one of them)")
    windows = chunking(chunk_tokens, chunk_overlap)
    if windows and is_query:
        raise click.UsageError("--chunk-tokens is for documents, not --query")
    records = list(read_text_records(input_path)) if input_path else [TextRecord(str(i), t) for i, t in enumerate(texts)]
    if not records:
        raise InputError(f"{input_path}: no records")
    quiet_libraries()
    from splade_es.model import SparseEncoder

    encoder_kwargs = {"batch_tokens": batch_tokens} if batch_tokens else {}
    encoder = SparseEncoder.from_pretrained(model_path, adapter=adapter, quantization=quantization, device=device,
                                            dtype=dtype, mode=mode, **encoder_kwargs)
    pruning = encoder.config.pruning(is_query).override(top_k=top_k, min_weight=min_weight, max_ratio=max_ratio)
    if windows:
        encoder.inputs.window_size(chunk_tokens)  # a bad size fails before any work
    if output_path:
        with atomic_text_file(output_path) as handle:
            _write_json_lines(encoder, records, is_query, pruning, windows, handle, progress=True)
        click.echo(f"wrote {len(records)} vectors to {output_path}", err=True)
    elif as_json or input_path:
        _write_json_lines(encoder, records, is_query, pruning, windows, sys.stdout, progress=bool(input_path))
    else:
        _print_table(encoder, records, is_query, pruning, windows)


def _encode_blocks(encoder, records: Sequence[TextRecord], is_query: bool, pruning, windows: dict[str, int],
                   progress: bool):
    from tqdm.auto import tqdm

    encode = encoder.encode_queries if is_query else encoder.encode_documents
    with tqdm(total=len(records), unit="text", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(records), BLOCK):
            block = records[start : start + BLOCK]
            yield from zip(block, encode([r.text for r in block], pruning=pruning, show_progress=False, **windows))
            bar.update(len(block))


def _write_json_lines(encoder, records, is_query, pruning, windows, handle: TextIO, progress: bool) -> None:
    for record, vector in _encode_blocks(encoder, records, is_query, pruning, windows, progress):
        handle.write(json.dumps({"id": record.id, "features": vector.to_features()}, ensure_ascii=False) + "\n")


def _print_table(encoder, records, is_query, pruning, windows) -> None:
    for record, vector in _encode_blocks(encoder, records, is_query, pruning, windows, progress=False):
        preview = record.text if len(record.text) <= 60 else record.text[:57] + "..."
        click.secho(f"[{record.id}] {preview!r}  ({len(vector)} features)", bold=True)
        for name, weight in encoder.decode(vector, SHOWN_FEATURES):
            click.echo(f"  {weight:8.4f}  {name}")
        if len(vector) > SHOWN_FEATURES:
            click.echo(f"  ... {len(vector) - SHOWN_FEATURES} more (use --json for all)")
