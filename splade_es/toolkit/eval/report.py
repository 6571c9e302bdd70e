"""A benchmark's results as people read them: ``report.md`` (a table like the paper's Table 1,
published figures in their own labelled columns; per dataset, the measured rows beside the quoted
ones with per-query wins and losses against BM25), ``results.json`` and PNG charts."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from splade_es.errors import InputError
from splade_es.io.atomic import atomic_text_file
from splade_es.toolkit.eval.compare import PAIRED_METRIC, PERMUTATIONS, Row, compare
from splade_es.toolkit.eval.runner import EvalResult

# nDCG@10 x 100 quoted from the paper's Table 1 (DESIGN section 5); never run here.
REFERENCE_SOURCE = ("Doshi et al., Mistral-SPLADE: LLMs for better Learned Sparse Retrieval (2024, "
                    "arXiv:2408.11119), Table 1")
REFERENCE = {
    "scifact": {"BM25": 66.5, "SPLADE++": 71.0, "ELSER v2": 71.8, "Echo-Mistral-SPLADE": 77.24},
    "nfcorpus": {"BM25": 32.5, "ELSER v2": 36.7, "Echo-Mistral-SPLADE": 42.28},
    "fiqa": {"BM25": 23.6, "ELSER v2": 41.6, "Echo-Mistral-SPLADE": 57.71},
    "arguana": {"BM25": 31.5, "ELSER v2": 55.6, "Echo-Mistral-SPLADE": 56.21},
    "trec-covid": {"BM25": 65.6, "ELSER v2": 72.9, "Echo-Mistral-SPLADE": 76.79},
}
REFERENCE_SYSTEMS = ("BM25", "SPLADE++", "ELSER v2", "Echo-Mistral-SPLADE")
BASELINE_METHOD = "bm25"  # per-query wins and losses are counted against it when it was measured
BEIR13_AVERAGE = {"BM25": 44.02, "SPLADE++": 50.72, "SPLADE-v3": 51.68, "ELSER v2": 52.07,
                  "Echo-Mistral-SPLADE": 55.07, "CSPLADE-Bi-8B": 55.3}
CHARTS = ("ndcg.png", "latency_vs_ndcg.png", "index_size.png")


def write_report(results: Sequence[EvalResult], out: Path, context: dict[str, Any],
                 baseline: str = BASELINE_METHOD) -> list[Path]:
    """Write ``results.json``, ``report.md`` and the charts into ``out``; returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    paired = paired_rows(results, baseline)
    with atomic_text_file(out / "results.json") as handle:
        json.dump({"context": context, "results": [r.to_dict() for r in results],
                   "paired": {dataset: [row.to_dict() for row in rows] for dataset, rows in paired.items()}},
                  handle, indent=1)
    charts = write_charts(results, out, paired)
    with atomic_text_file(out / "report.md") as handle:
        handle.write(markdown(results, context, [c.name for c in charts], paired))
    return [out / "results.json", out / "report.md", *charts]


def _grid(results: Sequence[EvalResult]) -> tuple[list[str], list[str], dict[tuple[str, str], EvalResult]]:
    datasets = list(dict.fromkeys(r.dataset for r in results))
    methods = list(dict.fromkeys(r.method for r in results))
    return datasets, methods, {(r.dataset, r.method): r for r in results}


def paired_rows(results: Sequence[EvalResult], baseline: str = BASELINE_METHOD) -> dict[str, list[Row]]:
    """Per dataset, every method against ``baseline`` (when measured, else the first method),
    query by query: the same figures ``splade-es compare`` prints."""
    datasets, methods, cell = _grid(results)
    paired = {}
    for dataset in datasets:
        measured = [m for m in methods if (dataset, m) in cell]
        order = sorted(measured, key=lambda m: m != baseline)  # stable: the baseline first
        if len(order) > 1:
            paired[dataset] = compare([cell[(dataset, m)].to_dict() for m in order], order)
    return paired


def dataset_chart_name(dataset: str) -> str:
    return "dataset-" + (re.sub(r"[^a-z0-9]+", "-", dataset.lower()).strip("-") or "unnamed") + ".png"


def _reference_key(dataset: str) -> str | None:
    name = dataset.lower().removeprefix("beir-")
    return name if name in REFERENCE else None


def markdown(results: Sequence[EvalResult], context: dict[str, Any], charts: Sequence[str],
             paired: dict[str, list[Row]] | None = None) -> str:
    datasets, methods, cell = _grid(results)
    lines = [f"# splade-es benchmark — {time.strftime('%Y-%m-%d', time.gmtime(context.get('time', time.time())))}",
             "",
             f"Engine: {context.get('engine', '?')}. "
             + (f"Model: {context['model']}. " if context.get("model") else "")  # compare --report knows none
             + f"Split: "
             f"{context.get('split', 'test')}. Retrieval depth k = {context.get('k', 1000)}.",
             "",
             "## nDCG@10 (× 100)",
             "",
             "Measured here on the left; figures quoted from the paper (not run here) on the right, "
             f"where the paper reports this dataset. Source: {REFERENCE_SOURCE}.",
             ""]
    header = ["Dataset", *[f"**{m}**" for m in methods], *[f"{s} (published)" for s in REFERENCE_SYSTEMS]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for dataset in datasets:
        reference = REFERENCE.get(_reference_key(dataset) or "", {})
        row = [dataset, *[_pct(cell.get((dataset, m)), "ndcg@10") for m in methods],
               *[f"{reference[s]:g}" if s in reference else "—" for s in REFERENCE_SYSTEMS]]
        lines.append("| " + " | ".join(row) + " |")
    if len(datasets) > 1:
        averages = []
        for method in methods:
            values = [cell[(d, method)].metrics["ndcg@10"] for d in datasets if (d, method) in cell]
            averages.append(f"{100 * sum(values) / len(values):.2f}" if len(values) == len(datasets) else "—")
        lines.append("| **average** | " + " | ".join(averages) + " | " + " | ".join("—" for _ in REFERENCE_SYSTEMS) + " |")
    lines += ["", "Published BEIR-13 averages for orientation: "
              + ", ".join(f"{name} {value:.2f}" for name, value in BEIR13_AVERAGE.items()) + ".", ""]
    for dataset in datasets:
        chart = dataset_chart_name(dataset)
        lines += _dataset_section(dataset, methods, cell, (paired or {}).get(dataset),
                                  chart if chart in charts else None)
    lines += ["## All metrics, latency and size", "",
              "| Dataset | Method | nDCG@10 | Recall@100 | MRR@10 | MAP | p50 ms | p95 ms | p99 ms | QPS | "
              "index MiB | queries |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for result in results:
        m = result.metrics
        lines.append(f"| {result.dataset} | {result.method} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f} | "
                     f"{m['mrr@10']:.4f} | {m['map']:.4f} | {result.latency_ms['p50']:.1f} | "
                     f"{result.latency_ms['p95']:.1f} | {result.latency_ms['p99']:.1f} | {result.qps:.1f} | "
                     f"{(result.index_size_bytes or 0) / 2**20:.1f} | {result.queries} |")
    lines += ["", "Latency is the engine's own time per query (`took`); QPS is one client sending multi-search "
              "batches; query encoding is not included.", ""]
    for chart in charts:
        if not chart.startswith("dataset-"):
            lines += [f"![{chart.removesuffix('.png').replace('_', ' ')}]({chart})", ""]
    return "\n".join(lines)


def _dataset_section(dataset: str, methods: list[str], cell: dict[tuple[str, str], EvalResult],
                     paired: list[Row] | None, chart: str | None) -> list[str]:
    """One dataset: measured rows with their per-query record against the baseline, then the quoted rows."""
    reference = REFERENCE.get(_reference_key(dataset) or "", {})
    measured = [m for m in methods if (dataset, m) in cell]
    queries = cell[(dataset, measured[0])].queries
    lines = [f"## {dataset}: measured here, next to the paper", ""]
    if paired:
        lines += [f"Per query ({PAIRED_METRIC}, {queries} queries): how often each measured row is better, the "
                  f"same or worse than **{paired[0].label}** measured here, and the p-value of a paired "
                  f"randomisation test ({PERMUTATIONS:,} sign flips). Quoted rows have no per-query figures.", ""]
    lines += ["| Row | nDCG@10 × 100 | better / same / worse | p | Where from |", "|---|---:|---:|---:|---|"]
    rows = {row.label: row for row in paired or []}
    for i, method in enumerate(sorted(measured, key=lambda m: m != paired[0].label) if paired else measured):
        row = rows.get(method)
        record = "baseline" if paired and i == 0 else f"{row.wins} / {row.ties} / {row.losses}" if row else "—"
        p_value = f"{row.p_value:.3g}" if row and row.p_value is not None else "—"
        lines.append(f"| **{method}** | {_pct(cell[(dataset, method)], 'ndcg@10')} | {record} | {p_value} | "
                     "measured here |")
    for system in REFERENCE_SYSTEMS:
        if system in reference:
            lines.append(f"| {system} | {reference[system]:g} | — | — | *quoted*: paper, Table 1 |")
    if reference:
        lines += ["", f"Quoted rows: {REFERENCE_SOURCE}; BEIR's BM25 there ran on Elasticsearch 7. Not run here."]
    lines.append("")
    if chart:
        lines += [f"![{dataset}: nDCG@10 per row and per-query record]({chart})", ""]
    return lines


def _pct(result: EvalResult | None, metric: str) -> str:
    return f"{100 * result.metrics[metric]:.2f}" if result else "—"


def write_charts(results: Sequence[EvalResult], out: Path, paired: dict[str, list[Row]] | None = None) -> list[Path]:
    """nDCG@10 per dataset and method; latency versus nDCG@10; index size per method; per dataset,
    measured against quoted nDCG@10 beside the per-query record against the baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets, methods, cell = _grid(results)
    paths = []

    paths.append(_bars(datasets, methods, cell, lambda r: 100 * r.metrics["ndcg@10"], "nDCG@10 × 100",
                       "nDCG@10 per dataset and method", out / "ndcg.png"))

    figure, axes = plt.subplots(figsize=(5.5, 3.8))
    for method in methods:
        points = [r for r in results if r.method == method]
        axes.scatter([r.latency_ms["p50"] for r in points], [100 * r.metrics["ndcg@10"] for r in points], label=method)
        for r in points:
            axes.annotate(r.dataset, (r.latency_ms["p50"], 100 * r.metrics["ndcg@10"]), fontsize=7,
                          xytext=(3, 3), textcoords="offset points")
    axes.set_xlabel("engine latency p50 (ms)")
    axes.set_ylabel("nDCG@10 × 100")
    axes.set_title("Latency versus nDCG@10")
    axes.legend()
    paths.append(_save(figure, out / "latency_vs_ndcg.png"))

    paths.append(_bars(datasets, methods, cell, lambda r: (r.index_size_bytes or 0) / 2**20, "index size (MiB)",
                       "Index size per method", out / "index_size.png"))
    for dataset in datasets:
        paths.append(_dataset_chart(dataset, [m for m in methods if (dataset, m) in cell], cell,
                                    (paired or {}).get(dataset), out / dataset_chart_name(dataset)))
    return paths


def _dataset_chart(dataset: str, methods: list[str], cell: dict[tuple[str, str], EvalResult],
                   paired: list[Row] | None, path: Path) -> Path:
    """Left: nDCG@10 of the measured rows (solid) and the quoted ones (hatched, grey). Right: per query,
    better / same / worse than the baseline, stacked."""
    import matplotlib.pyplot as plt

    reference = REFERENCE.get(_reference_key(dataset) or "", {})
    labels = [*methods, *[f"{s} (quoted)" for s in REFERENCE_SYSTEMS if s in reference]]
    values = [100 * cell[(dataset, m)].metrics["ndcg@10"] for m in methods] + \
             [reference[s] for s in REFERENCE_SYSTEMS if s in reference]
    challengers = (paired or [])[1:]
    figure, panels = plt.subplots(1, 2 if challengers else 1, figsize=(10 if challengers else 5.5, 0.5 * len(labels) + 1.8),
                                  squeeze=False)
    left = panels[0][0]
    bars = left.barh(range(len(labels)), values, color=["C0"] * len(methods) + ["0.75"] * (len(labels) - len(methods)))
    for bar in bars[len(methods):]:
        bar.set_hatch("//")
    left.set_yticks(range(len(labels)), labels)
    left.invert_yaxis()
    left.bar_label(bars, [f"{v:.2f}" for v in values[:len(methods)]] + [f"{v:g}" for v in values[len(methods):]],
                   fontsize=8, padding=2)
    left.set_xlabel("nDCG@10 × 100")
    left.set_title(f"{dataset}: measured (solid), quoted (hatched)" if reference else f"{dataset}: measured",
                   fontsize=9)
    if challengers:
        right = panels[0][1]
        names = [row.label for row in challengers]
        done = [0] * len(names)
        for part, colour, field in (("better", "C2", "wins"), ("same", "0.8", "ties"), ("worse", "C3", "losses")):
            counts = [getattr(row, field) for row in challengers]
            right.barh(range(len(names)), counts, left=done, color=colour, label=part)
            done = [a + b for a, b in zip(done, counts)]
        right.set_yticks(range(len(names)), names)
        right.invert_yaxis()
        right.set_xlabel("queries")
        right.set_title(f"per query against {paired[0].label}", fontsize=9)
        right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3)
    return _save(figure, path)


def _bars(datasets: list[str], methods: list[str], cell: dict[tuple[str, str], EvalResult],
          value: Callable[[EvalResult], float], label: str, title: str, path: Path) -> Path:
    """Grouped bars: one group per dataset, one bar per method."""
    import matplotlib.pyplot as plt

    width = 0.8 / max(len(methods), 1)
    figure, axes = plt.subplots(figsize=(max(5.0, 1.6 * len(datasets) + 2), 3.6))
    for i, method in enumerate(methods):
        xs = [d + i * width for d in range(len(datasets))]
        axes.bar(xs, [value(cell[(name, method)]) if (name, method) in cell else 0 for name in datasets], width,
                 label=method)
    axes.set_xticks([d + width * (len(methods) - 1) / 2 for d in range(len(datasets))], datasets)
    axes.set_ylabel(label)
    axes.set_title(title)
    axes.legend()
    return _save(figure, path)


def _save(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    staging = path.with_name(f".{path.name}.tmp{path.suffix}")  # the suffix picks the format (PNG, SVG)
    figure.savefig(staging, dpi=120)
    plt.close(figure)
    staging.replace(path)
    return path


def check_chart_path(path: Path) -> None:
    """Refuse, before any work, a chart path matplotlib cannot write (its extension picks the
    format) or whose directory cannot be made or written: else a long run fails only at its end."""
    import os

    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    extension = path.suffix.lower().lstrip(".")
    if extension not in formats:
        what = f"its extension {path.suffix!r}" if extension else "no extension"
        raise InputError(f"chart {str(path)!r}: {what} names no format matplotlib writes (choose {', '.join(sorted(formats))})")
    if path.is_dir():
        raise InputError(f"chart {str(path)!r} is a directory")
    folder = path.parent.absolute()
    while not folder.exists():  # frontier_chart makes the missing folders: the nearest one that exists decides
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"chart {str(path)!r}: cannot write in {str(folder)!r}")


def frontier_chart(points: Sequence[tuple[str, float, float]], frontier: Sequence[tuple[str, float, float]],
                   chosen: tuple[str, float, float], title: str, path: Path) -> Path:
    """nDCG@10 against p50 latency for ``(label, p50 ms, nDCG@10)`` points: every setting, the
    Pareto frontier drawn as a line, the recommended setting marked (``splade-es tune``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.5, 4.2))
    axes.scatter([p[1] for p in points], [100 * p[2] for p in points], s=14, color="0.6", label="setting")
    axes.plot([p[1] for p in frontier], [100 * p[2] for p in frontier], "o-", color="tab:blue", ms=5,
              label="frontier")
    for label, p50, ndcg in frontier:
        axes.annotate(label, (p50, 100 * ndcg), fontsize=6, xytext=(3, 3), textcoords="offset points")
    axes.scatter([chosen[1]], [100 * chosen[2]], s=120, marker="*", color="tab:red", zorder=3,
                 label=f"recommended: {chosen[0]}")
    axes.set_xlabel("latency p50 (ms, round trip)")
    axes.set_ylabel("nDCG@10 × 100")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(figure, path)
