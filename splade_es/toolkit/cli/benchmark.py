"""``splade-es benchmark``: methods x datasets, indexed where needed, with a readable report."""

from __future__ import annotations

from pathlib import Path

import click

from splade_es.toolkit.cli.common import engine_options, friendly_errors, open_engine, quiet_libraries
from splade_es.toolkit.elser import DEFAULT_INFERENCE_ID
from splade_es.toolkit.eval.benchmark import ENCODER_OF, Benchmark, BenchmarkSettings
from splade_es.toolkit.eval.beir import load_beir
from splade_es.toolkit.eval.download import dataset_dir


def _names(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@click.command(short_help="Evaluate methods on datasets and write report.md, results.json and charts.")
@click.option("--datasets", required=True, metavar="D1,D2,...",
              help="Comma-separated BEIR directories or beir:NAME (downloaded, checksum verified).")
@click.option("--methods", default="bm25,splade", show_default=True, metavar="M1,M2,...",
              help=f"Comma-separated, from: {', '.join(ENCODER_OF)}.")
@click.option("--model", "model_path", envvar="SPLADE_ES_MODEL", metavar="PATH_OR_ID",
              help="The splade model (needed by splade and hybrid).")
@click.option("--adapter", metavar="PATH_OR_ID", help="A peft LoRA adapter to apply to --model.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Where the report goes.")
@engine_options
@click.option("--index-prefix", default="bench-", show_default=True, help="Prefix of the indices it creates.")
@click.option("--split", default="test", show_default=True, help="Which qrels/SPLIT.tsv to evaluate.")
@click.option("--k", "k", type=click.IntRange(min=1), default=1000, show_default=True, help="Documents retrieved per query.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Queries per multi-search.")
@click.option("--encode-batch", type=click.IntRange(min=1), default=64, show_default=True,
              help="Documents encoded per step while indexing.")
@click.option("--inference-id", default=DEFAULT_INFERENCE_ID, show_default=True, help="ELSER endpoint for elser.")
@click.option("--check-corpus", is_flag=True,
              help="Read the whole corpus first and warn about judgments naming documents it lacks "
                   "(off by default: a large collection evaluates without being parsed).")
@click.option("--device", help="cpu, cuda, cuda:N (default: cuda when available).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@friendly_errors
def benchmark(datasets: str, methods: str, model_path: str | None, adapter: str | None, out_dir: str,
              url, engine_kind, data_dir, api_key, username, password, ca_certs, insecure,
              index_prefix: str, split: str, k: int, batch_size: int, encode_batch: int, inference_id: str,
              check_corpus: bool, device: str | None, no_progress: bool) -> None:
    """Index each dataset once per encoder, evaluate every method, and write a report.

    The report (report.md) puts the measured nDCG@10 next to the figures quoted from the
    paper's Table 1 (BM25, SPLADE++, ELSER v2, Echo-Mistral-SPLADE), in their own labelled
    columns. Per dataset it lists each measured method with its per-query record against
    BM25 (better / same / worse, paired randomisation p-value) above the quoted rows, with a
    chart of both. It also tabulates Recall@100, MRR@10, MAP, latency, QPS and index size.
    A rerun reuses every index that already holds its whole corpus.

    \b
    Examples:
      splade-es benchmark --datasets ../shared/data/cranfield --methods bm25,splade --model ./bundle --out bench
      splade-es benchmark --datasets beir:scifact,beir:nfcorpus --methods bm25,splade,hybrid,elser \\
          --model ./bundle --url https://es:9200 --out bench-es
    """
    quiet_libraries()
    method_names = _names(methods)
    bad = [m for m in method_names if m not in ENCODER_OF]
    if bad or not method_names:
        raise click.BadParameter(f"{bad[0] if bad else methods!r} is not one of {', '.join(ENCODER_OF)}",
                                 param_hint="--methods")
    loaded = [load_beir(dataset_dir(spec, show_progress=not no_progress), split) for spec in _names(datasets)]
    if not loaded:
        raise click.BadParameter("name at least one dataset", param_hint="--datasets")
    engine = open_engine(url, engine_kind, data_dir, api_key, username, password, ca_certs, insecure)
    try:
        settings = BenchmarkSettings(method_names, model_path, adapter, index_prefix, split, k, batch_size,
                                     encode_batch, inference_id, device, not no_progress)
        for dataset in loaded if check_corpus else ():
            dataset.unknown_documents()
        _, files = Benchmark(engine, settings, Path(out_dir), lambda line: click.echo(line, err=True)).run(loaded)
    finally:
        engine.close()
    click.echo("wrote " + ", ".join(str(path) for path in files))
