"""Query settings an index carries from ``splade-es tune`` (``_meta.splade_es.tuned``).

``search``, ``serve``, ``eval``, :class:`~splade_es.toolkit.query.searcher.Searcher` and
:class:`~splade_es.toolkit.query.pipeline.QueryPipeline` take each setting from, in order: an
explicit value (a flag), the index's tuned record, the built-in default (the model's pruning,
no two-phase search). Each value keeps its source, so the output can say where it came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

QUERY_KEYS = ("query_top_k", "query_min_weight")  # the query encoder's pruning
SEARCH_KEYS = ("two_phase", "two_phase_window", "token_pruning")  # the search request ('tune' records two-phase only)
KEYS = QUERY_KEYS + SEARCH_KEYS
SOURCES = ("flag", "tuned", "default")
DEFAULT_WINDOW = 100


def resolve(explicit: Mapping[str, Any], tuned: Mapping[str, Any] | None,
            defaults: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """``(values, sources)`` for the names of ``explicit``: a non-None explicit value wins, then
    the tuned record (whose None is a decision too: e.g. no two-phase search), then ``defaults``."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, value in explicit.items():
        if value is not None:
            values[name], sources[name] = value, "flag"
        elif tuned is not None and name in tuned:
            values[name], sources[name] = tuned[name], "tuned"
        else:
            values[name], sources[name] = defaults.get(name), "default"
    return values, sources


def describe(values: Mapping[str, Any], sources: Mapping[str, str], tuned: Mapping[str, Any] | None) -> str:
    """One line for people: ``query top-k 16 (tuned on cranfield/test 2026-12-02), ...``."""
    def shown(name: str) -> str:
        value = values.get(name)
        if name == "two_phase" and not value:
            return "off"
        if name == "token_pruning":
            return f"{value['freq_ratio']:g},{value['weight']:g}"
        return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    origin = {"tuned": f"tuned on {tuned.get('dataset')}/{tuned.get('split')} {tuned.get('date')}" if tuned else "tuned",
              "flag": "flag", "default": "default"}
    labels = {"query_top_k": "query top-k", "query_min_weight": "min weight", "two_phase": "two-phase",
              "two_phase_window": "window", "token_pruning": "token pruning"}
    rescoring = values.get("two_phase") or values.get("token_pruning")
    return ", ".join(f"{labels[name]} {shown(name)} ({origin[sources[name]]})" for name in KEYS if name in sources
                     and not (name == "two_phase_window" and not rescoring))


def as_report(values: Mapping[str, Any], sources: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``{name: {"value", "source"}}``: the JSON form (``search --json``, ``eval --json``)."""
    return {name: {"value": values[name], "source": sources[name]} for name in KEYS if name in sources}
