"""Side-by-side comparison of ``splade-es eval --json`` results on the same queries.

The first result is the baseline. Besides the means, a paired view: on how many queries each
method beats, ties or loses to the baseline (nDCG@10), and a paired randomisation test, since a
mean difference over a few hundred queries can be noise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from splade_es.errors import InputError
from splade_es.toolkit.eval.metrics import METRICS

PAIRED_METRIC = "ndcg@10"
PERMUTATIONS = 10_000


@dataclass(frozen=True)
class Row:
    label: str
    metrics: dict[str, float]
    p50_ms: float | None
    wins: int | None = None  # against the baseline, per query
    ties: int | None = None
    losses: int | None = None
    p_value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def load_result(path: str | Path) -> dict[str, Any]:
    """One ``eval --json`` object, checked for the fields a comparison reads."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not JSON (line {exc.lineno}: {exc.msg}); write it with 'splade-es eval --json'") from None
    missing = [key for key in ("dataset", "split", "method", "metrics", "per_query") if key not in data] \
        if isinstance(data, dict) else ["an object"]
    if missing:
        raise InputError(f"{path}: not an 'eval --json' result (missing {', '.join(missing)})")
    return data


def compare(results: list[dict[str, Any]], labels: list[str], seed: int = 0) -> list[Row]:
    """Rows in input order; every row after the first carries its paired figures against the first."""
    if len(results) < 2:
        raise InputError("compare needs at least two results")
    base = results[0]
    for label, result in zip(labels[1:], results[1:]):
        if (result["dataset"], result["split"]) != (base["dataset"], base["split"]):
            raise InputError(f"{label}: {result['dataset']} ({result['split']}) is not the baseline's "
                             f"{base['dataset']} ({base['split']}); compare results on the same queries")
        if set(result["per_query"]) != set(base["per_query"]):
            raise InputError(f"{label}: scored other queries than {labels[0]}; compare results on the same queries")
    rows = [_row(labels[0], base)]
    rng = np.random.default_rng(seed)
    baseline = _per_query(base)
    for label, result in zip(labels[1:], results[1:]):
        diff = _per_query(result) - baseline
        rows.append(_row(label, result, wins=int((diff > 0).sum()), ties=int((diff == 0).sum()),
                         losses=int((diff < 0).sum()), p_value=_randomisation_p(diff, rng)))
    return rows


def table(rows: list[Row]) -> list[str]:
    """A plain-text table; differences are against the first row."""
    header = f"{'':<22}" + "".join(f"{m:>12}" for m in METRICS) + f"{'p50 ms':>9}   per query vs {rows[0].label}"
    lines = [header]
    for i, row in enumerate(rows):
        cells = "".join(f"{row.metrics[m]:>12.4f}" for m in METRICS)
        p50 = f"{row.p50_ms:>9.1f}" if row.p50_ms is not None else f"{'-':>9}"
        paired = "" if i == 0 else f"   {row.wins} better, {row.ties} same, {row.losses} worse (p = {row.p_value:.3g})"
        lines.append(f"{row.label[:22]:<22}{cells}{p50}{paired}")
        if i:
            delta = "".join(f"{round(row.metrics[m] - rows[0].metrics[m], 4) + 0.0:>+12.4f}" for m in METRICS)  # no -0
            lines.append(f"{'  difference':<22}{delta}")
    return lines


def _row(label: str, result: dict[str, Any], **paired) -> Row:
    metrics = {m: float(result["metrics"][m]) for m in METRICS}
    p50 = (result.get("latency_ms") or {}).get("p50")
    return Row(label, metrics, p50, **paired)


def _per_query(result: dict[str, Any]) -> np.ndarray:
    return np.array([result["per_query"][qid][PAIRED_METRIC] for qid in sorted(result["per_query"])])


def _randomisation_p(diff: np.ndarray, rng: np.random.Generator) -> float:
    """Two-sided paired randomisation test: how often random sign flips give a mean this far from 0."""
    observed = abs(diff.mean())
    extreme, chunk = 0, max(1, 2_000_000 // max(diff.size, 1))  # bounded memory for large query sets
    for done in range(0, PERMUTATIONS, chunk):
        signs = rng.choice((-1.0, 1.0), size=(min(chunk, PERMUTATIONS - done), diff.size))
        extreme += int((np.abs((signs * diff).mean(axis=1)) >= observed - 1e-12).sum())
    return (extreme + 1) / (PERMUTATIONS + 1)
