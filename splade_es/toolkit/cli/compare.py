"""``splade-es compare``: eval results side by side, with per-query wins and a significance test."""

from __future__ import annotations

import json
from pathlib import Path

import click

from splade_es.toolkit.cli.common import friendly_errors


@click.command(short_help="Compare 'eval --json' results on the same queries (the first is the baseline).")
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--label", "labels", multiple=True,
              help="A name per result, in order (default: the method and index recorded in it).")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False),
              help="Also write the benchmark report for these results into DIR: report.md (measured rows "
                   "beside the paper's quoted ones), results.json and charts, as 'splade-es benchmark' does.")
@friendly_errors
def compare(results: tuple[str, ...], labels: tuple[str, ...], as_json: bool, report_dir: str | None) -> None:
    """Print nDCG@10, Recall@100, MRR@10, MAP and latency of each result, the difference to the
    first, and on how many queries each one is better, the same or worse than the first
    (nDCG@10), with the p-value of a paired randomisation test (10,000 sign flips).

    \b
    Examples:
      splade-es eval --dataset data/cranfield --index cran --method bm25 --json > bm25.json
      splade-es eval --dataset data/cranfield --index cran --json > splade.json
      splade-es compare bm25.json splade.json
      splade-es compare bm25.json a.json b.json --label BM25 --label model-a --label model-b --json
      splade-es compare bm25.json splade.json hybrid.json --label bm25 --label splade --label hybrid \\
          --report scifact-report
    """
    from splade_es.toolkit.eval.compare import compare as compare_results
    from splade_es.toolkit.eval.compare import load_result, table

    loaded = [load_result(path) for path in results]
    if labels and len(labels) != len(results):
        raise click.UsageError(f"give one --label per result ({len(results)}), or none")
    names = list(labels) or [f"{r['method']} ({r.get('index', '?')})" for r in loaded]
    rows = compare_results(loaded, names)
    if report_dir:
        _write_report(loaded, names, Path(report_dir))
    if as_json:
        click.echo(json.dumps({"dataset": loaded[0]["dataset"], "split": loaded[0]["split"],
                               "rows": [row.to_dict() for row in rows]}))
        return
    first = loaded[0]
    click.echo(f"{first['dataset']} ({first['split']}): {len(first['per_query'])} queries")
    click.echo("\n".join(table(rows)))


def _write_report(loaded: list[dict], names: list[str], out: Path) -> None:
    """The benchmark report for results evaluated elsewhere; the first result is the baseline."""
    from splade_es.toolkit.eval.report import write_report
    from splade_es.toolkit.eval.runner import EvalResult

    results = [EvalResult.from_dict(data, name) for data, name in zip(loaded, names)]
    engines = sorted({f"{r.engine.get('kind', '?')} {r.engine.get('version', '')}".strip() for r in results})
    context = {"engine": ", ".join(engines), "split": results[0].split, "k": results[0].k,
               "methods": names, "datasets": [results[0].dataset], "model": None}
    files = write_report(results, out, context, baseline=names[0])
    click.echo("wrote " + ", ".join(str(path) for path in files), err=True)
