"""``splade-es eval``: one method on one BEIR dataset, scored by pytrec_eval."""

from __future__ import annotations

import json

import click

from splade_es.toolkit.cli.common import (engine_options, friendly_errors, open_engine, quiet_libraries,
                                          tuned_query_options)
from splade_es.toolkit.eval.beir import load_beir
from splade_es.toolkit.eval.download import dataset_dir
from splade_es.toolkit.eval.harness import EvalSettings, evaluate_index
from splade_es.toolkit.eval.methods import METHODS
from splade_es.toolkit.eval.runner import EvalResult, write_trec_run
from splade_es.toolkit.query.forms import TokenPruning
from splade_es.toolkit.query.fusion import MODES
from splade_es.toolkit.query.tuned import describe


def dataset_option(command):
    return click.option("--dataset", "dataset_spec", required=True, metavar="DIR|beir:NAME",
                        help="A BEIR directory (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv; .gz accepted), "
                             "or beir:NAME to download a BEIR dataset (checksum verified, cached).")(command)


@click.command("eval", short_help="Score one method on a BEIR dataset: nDCG@10, Recall@100, MRR@10, MAP, latency.")
@dataset_option
@click.option("--index", required=True, help="The index holding the dataset's corpus.")
@click.option("--method", type=click.Choice(METHODS), default="splade", show_default=True,
              help="splade: the model's sparse query; bm25: BEIR's multi_match baseline over the text fields; "
                   "elser: ELSER v2 in Elasticsearch; hybrid: BM25 and splade fused.")
@click.option("--model", "model_path", envvar="SPLADE_ES_MODEL", metavar="PATH_OR_ID",
              help="Query model for splade/hybrid (default: the model recorded in the index).")
@click.option("--adapter", metavar="PATH_OR_ID", help="A peft LoRA adapter to apply to --model.")
@engine_options
@tuned_query_options
@click.option("--split", default="test", show_default=True, help="Which qrels/SPLIT.tsv to evaluate.")
@click.option("--k", "k", type=click.IntRange(min=1), default=1000, show_default=True, help="Documents retrieved per query.")
@click.option("--query-vectors", type=click.Path(exists=True, dir_okay=False),
              help="Precomputed query vectors (splade-es encode --query --json), by query id; no model is loaded.")
@click.option("--hybrid-mode", type=click.Choice(MODES), default="rrf", show_default=True, help="Fusion of --method hybrid.")
@click.option("--inference-id", help="--method elser: the endpoint (default: the one the index was built with).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Queries per multi-search.")
@click.option("--check-corpus", is_flag=True,
              help="Read the whole corpus first and warn about judgments naming documents it lacks "
                   "(off by default: a large collection evaluates without being parsed).")
@click.option("--run-file", type=click.Path(dir_okay=False), help="Also write the run in TREC format.")
@click.option("--device", help="Where queries are encoded: cpu, cuda, cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: aggregate first, then per_query.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@friendly_errors
def evaluate(dataset_spec: str, index: str, method: str, model_path: str | None, adapter: str | None,
             url, engine_kind, data_dir, api_key, username, password, ca_certs, insecure,
             query_top_k: int | None, query_min_weight: float | None, two_phase: int | None,
             two_phase_window: int | None, token_pruning: TokenPruning | None, no_tuned: bool, split: str, k: int,
             query_vectors: str | None, hybrid_mode: str,
             inference_id: str | None, batch_size: int, check_corpus: bool, run_file: str | None,
             device: str | None, as_json: bool, no_progress: bool) -> None:
    """Run every judged query of a BEIR split through one method and score the ranking.

    All queries go through multi-search in batches. Metrics come from pytrec_eval: nDCG@10
    (the headline), Recall@100, MRR@10 and MAP; as in BEIR, a hit whose id is the query's
    own id is ignored. Latency is the engine's own time per query (p50/p95/p99); QPS is
    queries over the wall time of the searches; query encoding is timed apart. Query pruning
    and two-phase search not set by a flag come from what 'splade-es tune' recorded in the
    index (--no-tuned: the model's defaults); the summary says which source each came from.

    \b
    Examples:
      splade-es eval --dataset data/cranfield --index cran
      splade-es eval --dataset data/cranfield --index cran --method bm25 --json | jq .metrics
      splade-es eval --dataset data/cranfield --index cran --no-tuned --query-top-k 32
      splade-es eval --dataset beir:scifact --index scifact --run-file scifact.run
      splade-es eval --dataset data/fiqa --index fiqa-elser --method elser --url https://es:9200
    """
    quiet_libraries()
    dataset = load_beir(dataset_dir(dataset_spec, show_progress=not no_progress), split)
    engine = open_engine(url, engine_kind, data_dir, api_key, username, password, ca_certs, insecure)
    try:
        if check_corpus:
            dataset.unknown_documents()
        settings = EvalSettings(method, model_path, adapter, query_vectors, query_top_k, query_min_weight, two_phase,
                                two_phase_window, not no_tuned, k, batch_size, hybrid_mode, inference_id, device,
                                not no_progress, token_pruning=token_pruning)
        result = evaluate_index(engine, dataset, index, settings)
    finally:
        engine.close()
    if run_file:
        write_trec_run(run_file, result.run, f"splade-es-{method}")
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    else:
        click.echo("\n".join(summary_lines(result, run_file)))


def summary_lines(result: EvalResult, run_file: str | None = None) -> list[str]:
    m = result.metrics
    size = f"{(result.index_size_bytes or 0) / 2**20:.1f} MiB"
    lines = [
        f"{result.dataset} ({result.split}): {result.queries} queries"
        + (f", {result.skipped_queries} without judgments skipped" if result.skipped_queries else ""),
        f"{result.method} on {result.index} ({result.engine.get('kind')} {result.engine.get('version')}; "
        f"{result.index_docs} docs, {size})",
        f"  nDCG@10 {m['ndcg@10']:.4f}   Recall@100 {m['recall@100']:.4f}   MRR@10 {m['mrr@10']:.4f}   "
        f"MAP {m['map']:.4f}",
        f"  latency (engine) p50 {result.latency_ms['p50']:.1f} ms, p95 {result.latency_ms['p95']:.1f} ms, "
        f"p99 {result.latency_ms['p99']:.1f} ms; {result.qps:.1f} queries/s"
        + (f"; encoding {result.encode_ms:.1f} ms/query" if result.encode_ms is not None else ""),
    ]
    if result.settings:
        values = {name: item["value"] for name, item in result.settings.items()}
        sources = {name: item["source"] for name, item in result.settings.items()}
        lines.append(f"  settings: {describe(values, sources, result.tuned)}")
    if result.empty_queries:
        lines.append(f"  {result.empty_queries} queries had nothing to search for and score 0")
    if run_file:
        lines.append(f"  run file: {run_file}")
    return lines
