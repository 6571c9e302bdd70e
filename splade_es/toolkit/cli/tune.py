"""``splade-es tune``: the nDCG@10 / latency frontier of query pruning, two-phase search and
document pruning on one index, a recommendation, recorded for ``search`` and ``eval``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from splade_es.toolkit.cli.common import engine_options, friendly_errors, open_engine, quiet_libraries
from splade_es.toolkit.cli.evaluate import dataset_option
from splade_es.toolkit.eval.beir import load_beir
from splade_es.toolkit.eval.download import dataset_dir
from splade_es.toolkit.eval.harness import check_index
from splade_es.toolkit.eval.report import check_chart_path, frontier_chart
from splade_es.toolkit.eval.tune import GRIDS, Measured, TuneOptions, TuneReport, tune


def _values(kind: type, off: bool = False):
    """A click callback parsing ``a,b,c`` into a tuple of ``kind``; with ``off``, 0 means "off" (None)."""
    def parse(context, parameter, text: str | None) -> tuple[Any, ...] | None:
        if text is None:
            return None
        try:
            values = tuple(kind(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise click.BadParameter(f"{text!r} is not a comma-separated list of {kind.__name__} values") from None
        if not values or any(v < 0 for v in values) or (kind is int and not off and 0 in values):
            raise click.BadParameter(f"{text!r}: give one or more {'non-negative' if off else 'positive'} values")
        return tuple(None if off and v == 0 else v for v in values)

    return parse


@click.command(short_help="Sweep query/document pruning and two-phase search; recommend and record a setting.")
@dataset_option
@click.option("--index", required=True, help="The index holding the dataset's corpus (never modified, except "
                                              "its _meta.splade_es.tuned record).")
@engine_options
@click.option("--split", default="test", show_default=True, help="Which qrels/SPLIT.tsv to tune on.")
@click.option("--budget-ms", type=click.FloatRange(min=0, min_open=True),
              help="Recommend the best nDCG@10 whose p50 fits this budget (default: the fastest setting within "
                   "1 point of the best nDCG@10).")
@click.option("--grid", type=click.Choice(GRIDS), default="default", show_default=True,
              help="quick: a handful of settings (a smoke test); default: top-k 64..8, a query and two document "
                   "weight thresholds, two-phase 8 and 16.")
@click.option("--query-top-k", "query_top_k", callback=_values(int), metavar="K,K,...",
              help="Query top-k values to try (the model's own is always tried).")
@click.option("--query-min-weight", "query_min_weight", callback=_values(float), metavar="W,W,...",
              help="Query weight thresholds to try (default: 0 and the query weights' lower quartile).")
@click.option("--two-phase", "two_phase", callback=_values(int, off=True), metavar="N,N,...",
              help="First-phase terms to try (0: one phase, always tried).")
@click.option("--two-phase-window", "two_phase_window", callback=_values(int), metavar="W,W,...",
              help="Second-phase windows to try (default 100).")
@click.option("--doc-min-weight", "doc_min_weight", callback=_values(float, off=True), metavar="W,W,...",
              help="Document weight thresholds to try, each on a pruned copy of the index (0: the index as it "
                   "is, always tried; default: the stored weights' lower quartile and median).")
@click.option("--model", "model_path", envvar="SPLADE_ES_MODEL", metavar="PATH_OR_ID",
              help="Query model (default: the model recorded in the index).")
@click.option("--adapter", metavar="PATH_OR_ID", help="A peft LoRA adapter to apply to --model.")
@click.option("--device", help="Where queries are encoded (once): cpu, cuda, cuda:N.")
@click.option("--warmup", type=click.IntRange(min=0), default=20, show_default=True,
              help="Untimed searches before each setting is timed.")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timing rounds: each searches every query once with every setting, the settings in a "
                   "different shuffled order per round (p50/p99 over all rounds); the sweep costs "
                   "rounds x settings x queries searches.")
@click.option("--keep-copies", is_flag=True, help="Keep the document-pruned copies (named INDEX-tune-doc-W).")
@click.option("--no-record", is_flag=True, help="Only report: leave the index's _meta untouched.")
@click.option("--chart", type=click.Path(dir_okay=False), metavar="FILE.png|FILE.svg",
              help="Where to draw nDCG@10 against p50 (default: tune-INDEX.png here); the extension picks the "
                   "format (png, svg, pdf, ...) and is checked, with the folder, before the sweep.")
@click.option("--no-chart", is_flag=True, help="Draw no chart.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (every setting, frontier, recommendation).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@friendly_errors
def tune_command(dataset_spec: str, index: str, url, engine_kind, data_dir, api_key, username, password, ca_certs,
                 insecure, split: str, budget_ms: float | None, grid: str, query_top_k, query_min_weight, two_phase,
                 two_phase_window, doc_min_weight, model_path: str | None, adapter: str | None, device: str | None,
                 warmup: int, rounds: int, keep_copies: bool, no_record: bool, chart: str | None, no_chart: bool,
                 as_json: bool, no_progress: bool) -> None:
    """Find how much query pruning, two-phase search and document pruning speed up INDEX and what
    they cost in nDCG@10 on a BEIR dataset, against the real engine.

    The queries are encoded once (at the widest setting); each setting is derived from those
    vectors and timed as one search per query per round (p50/p99 round trip over --rounds
    rounds, after a warm-up); the rounds interleave the settings, each in its own shuffled
    order, so a slow spell of a shared machine spreads over all of them. Document pruning runs
    on pruned copies of the index, all built before timing (room for each on the engine;
    deleted afterwards unless --keep-copies), flushed and refreshed like the index and
    force-merged to its segments per shard where the copy has more. Caveat: equal segment
    counts only approximate the index's layout (segment sizes differ), the local engine has no
    segments, and on a shared machine p50s within ~2x of each other can swap between runs.

    The recommendation is the fastest setting within 1 point of the best nDCG@10 (with
    --budget-ms: the best that fits), among the settings that leave every query at least one
    term: 'search' refuses a query pruned to nothing, so a setting that empties any query (the
    'empty' column) is never recommended or recorded. Unless --no-record, the best query-side
    setting for the index as it is goes into its _meta.splade_es.tuned, and 'search', 'serve'
    and 'eval' use it where no flag says otherwise (--no-tuned ignores it). A doc-pruned
    recommendation needs a re-ingest: the command is printed, with the index's own document
    top-k and windows (--chunk-tokens) kept. Qrels without a relevant document are refused;
    fewer than 20 queries with one draw a warning (a recommendation on so few is noise).

    \b
    Examples:
      splade-es tune --dataset data/cranfield --index cran
      splade-es tune --dataset data/cranfield --index cran --grid quick --no-record
      splade-es tune --dataset beir:scifact --index scifact --budget-ms 5 --json | jq .recommended
      splade-es tune --dataset data/fiqa --index fiqa --query-top-k 8,16,32 --two-phase 0,8 --doc-min-weight 0
    """
    quiet_libraries()
    chart_path = None if no_chart else Path(chart or f"tune-{index}.png")
    if chart_path is not None:
        check_chart_path(chart_path)  # before the sweep: a bad path must not cost a whole run
    dataset = load_beir(dataset_dir(dataset_spec, show_progress=not no_progress), split)
    overrides = {name: values for name, values in (("query_top_k", query_top_k), ("query_min_weight", query_min_weight),
                                                   ("two_phase", two_phase), ("two_phase_window", two_phase_window),
                                                   ("doc_min_weight", doc_min_weight)) if values is not None}
    options = TuneOptions(grid, overrides, budget_ms, warmup, rounds, keep_copies, not no_record, not no_progress)
    engine = open_engine(url, engine_kind, data_dir, api_key, username, password, ca_certs, insecure)
    try:
        from splade_es.toolkit.query.pipeline import QueryPipeline
        from splade_es.toolkit.query.searcher import Searcher

        check_index(engine, index)
        searcher = Searcher(engine, index, use_tuned=False)
        pipeline = QueryPipeline.open(searcher, model_path, adapter, device)
        report = tune(engine, index, dataset, pipeline, options)
    finally:
        engine.close()
    if chart_path is not None:
        frontier_chart([_point(p) for p in report.points if p.p50_ms is not None], [_point(p) for p in report.frontier],
                       _point(report.recommended), f"{report.dataset} ({report.split}) on {index}, "
                       f"{report.engine['kind']} {report.engine['version']}", chart_path)
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "chart": str(chart_path) if chart_path else None}))
    else:
        click.echo("\n".join(summary_lines(report, chart_path)))


def _point(point: Measured) -> tuple[str, float, float]:
    return point.setting.label, point.p50_ms, point.ndcg


def _ms(value: float | None, width: int = 0) -> str:
    """A latency, or '-' where nothing was timed (every query pruned to no term)."""
    return f"{value:{width}.2f}" if value is not None else f"{'-':>{width}}"


def summary_lines(report: TuneReport, chart: Path | None) -> list[str]:
    """The table (frontier marked '*', recommendation '>'), the recommendation and what was recorded."""
    on_frontier = {id(p) for p in report.frontier}
    lines = [f"{report.dataset} ({report.split}): {report.queries} queries, {len(report.points)} settings on "
             f"{report.index} ({report.engine['kind']} {report.engine['version']})",
             f"    {'setting':<44} {'nDCG@10':>8} {'p50 ms':>8} {'p99 ms':>8} {'terms':>6} {'empty':>5}  index"]
    for point in report.points:
        mark = (">" if point is report.recommended else " ") + ("*" if id(point) in on_frontier else " ")
        lines.append(f"{mark}  {point.setting.label:<44} {point.ndcg:8.4f} {_ms(point.p50_ms, 8)} "
                     f"{_ms(point.p99_ms, 8)} {point.mean_terms:6.1f} {point.empty_queries:5d}  {point.index}")
    lines.append("('*': on the frontier; '>': recommended; the first row is the model's own setting; 'empty': "
                 "queries pruned to no term, never searched: such a setting is never recommended)")
    goal = (f"the best nDCG@10 with p50 <= {report.budget_ms:g} ms" if report.budget_ms is not None
            else "the fastest within 1 point of the best nDCG@10")
    best = report.recommended
    lines.append(f"recommended ({goal}): {best.setting.label}: nDCG@10 {best.ndcg:.4f}, p50 {_ms(best.p50_ms)} ms "
                 f"(baseline {report.baseline.ndcg:.4f}, {_ms(report.baseline.p50_ms)} ms)")
    if report.reingest:
        lines.append(f"  it needs documents pruned at {best.setting.doc_min_weight:g}: {report.reingest}")
        if report.for_index is not None:
            lines.append(f"  on {report.index} as it is: {report.for_index.setting.label}: nDCG@10 "
                         f"{report.for_index.ndcg:.4f}, p50 {_ms(report.for_index.p50_ms)} ms")
    for made in report.copies:
        lines.append(f"  copy {made.name}: {made.postings}/{made.postings_before} postings kept, "
                     + ("kept" if report.kept_copies else "deleted"))
    if report.recorded:
        lines.append(f"recorded in {report.index}'s _meta.splade_es.tuned: search, serve and eval now default to "
                     f"{report.for_index.setting.label} (--no-tuned ignores it)")
    elif report.for_index is None:
        lines.append(f"nothing recorded: no setting of {report.index} as it is meets the budget with every "
                     "query keeping a term")
    else:
        lines.append("nothing recorded (--no-record)")
    if chart:
        lines.append(f"chart: {chart}")
    return lines
