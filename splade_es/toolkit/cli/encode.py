"""``splade-es encode``: texts in, sparse vectors out (terminal table or JSON lines)."""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterable, Iterator
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
    total = _check_records(input_path) if input_path else len(texts)
    records: Iterator[TextRecord] = (read_text_records(input_path) if input_path
                                     else (TextRecord(str(i), t) for i, t in enumerate(texts)))
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
            written = _write_json_lines(encoder, records, is_query, pruning, windows, handle, total, progress=True)
            _require_some(written, input_path)  # inside: an empty standard input leaves no file
        click.echo(f"wrote {written} vectors to {output_path}", err=True)
    elif as_json or input_path:
        _require_some(_write_json_lines(encoder, records, is_query, pruning, windows, sys.stdout, total,
                                        progress=bool(input_path)), input_path)
    else:
        _print_table(encoder, records, is_query, pruning, windows)


def _require_some(written: int, input_path: str | None) -> None:
    if not written:
        raise InputError(f"{input_path}: no records")


def _check_records(path: str) -> int | None:
    """Read the input file once, in constant memory, before the model loads: a bad line fails in
    seconds, not hours into the run; returns the record count (None for standard input, which is
    read once, as it is encoded)."""
    if path == "-":
        return None
    count = sum(1 for _ in read_text_records(path))
    if not count:
        raise InputError(f"{path}: no records")
    return count


def _encode_blocks(encoder, records: Iterable[TextRecord], is_query: bool, pruning, windows: dict[str, int],
                   total: int | None = None, progress: bool = False):
    """``(record, vector)`` in input order, reading and encoding ``BLOCK`` records at a time, so
    memory does not grow with the input."""
    from tqdm.auto import tqdm

    encode = encoder.encode_queries if is_query else encoder.encode_documents
    records = iter(records)
    with tqdm(total=total, unit="text", disable=not progress, file=sys.stderr) as bar:
        while block := list(itertools.islice(records, BLOCK)):
            yield from zip(block, encode([r.text for r in block], pruning=pruning, show_progress=False, **windows))
            bar.update(len(block))


def _write_json_lines(encoder, records, is_query, pruning, windows, handle: TextIO, total: int | None,
                      progress: bool) -> int:
    """Write one JSON line per record; returns the count."""
    written = 0
    for record, vector in _encode_blocks(encoder, records, is_query, pruning, windows, total, progress):
        handle.write(json.dumps({"id": record.id, "features": vector.to_features()}, ensure_ascii=False) + "\n")
        written += 1
    return written


def _print_table(encoder, records, is_query, pruning, windows) -> None:
    for record, vector in _encode_blocks(encoder, records, is_query, pruning, windows):
        preview = record.text if len(record.text) <= 60 else record.text[:57] + "..."
        click.secho(f"[{record.id}] {preview!r}  ({len(vector)} features)", bold=True)
        for name, weight in encoder.decode(vector, SHOWN_FEATURES):
            click.echo(f"  {weight:8.4f}  {name}")
        if len(vector) > SHOWN_FEATURES:
            click.echo(f"  ... {len(vector) - SHOWN_FEATURES} more (use --json for all)")
