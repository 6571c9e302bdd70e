"""The service's request bodies, checked before any work is done: a bad one is refused with one
line naming the field and what it must be, so a client's mistake never reaches the model or
the engine (where it would cost time, or come back as an engine error)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from splade_es.errors import InputError
from splade_es.toolkit.query.fusion import MODES

METHODS = ("splade", "bm25")  # bm25: the baseline the page shows beside the sparse hits
_SCALARS = (str, int, float, bool)


@dataclass(frozen=True)
class SearchRequest:
    """``POST /search``."""

    query: str
    k: int = 10
    method: str = "splade"
    hybrid: str | None = None
    hybrid_weight: float = 0.5
    filters: tuple[dict[str, Any], ...] = ()
    explain: bool = False

    @classmethod
    def parse(cls, body: Any, max_k: int, fields: Iterable[str]) -> SearchRequest:
        """``fields``: the index's fields, the only ones a filter may name."""
        _known(body, ("query", "k", "method", "hybrid", "hybrid_weight", "filter", "explain"))
        query = _field(body, "query", str, "a string")
        if not query.strip():
            raise InputError("'query' is empty: give some text to search for")
        k = _field(body, "k", int, "an integer", min(10, max_k))  # the default fits a smaller --max-k
        if not 1 <= k <= max_k:
            raise InputError(f"'k' must be between 1 and {max_k}, got {k}")
        method = _field(body, "method", str, "a string", "splade")
        if method not in METHODS:
            raise InputError(f"'method' must be one of {', '.join(METHODS)}, got {method!r}")
        hybrid = _field(body, "hybrid", str, "a string", None)
        if hybrid is not None and hybrid not in MODES:
            raise InputError(f"'hybrid' must be one of {', '.join(MODES)}, got {hybrid!r}")
        if hybrid is not None and method != "splade":
            raise InputError("'hybrid' fuses BM25 into the splade search: leave it out with method bm25")
        weight = float(_field(body, "hybrid_weight", (int, float), "a number", 0.5))
        if not 0.0 <= weight <= 1.0:
            raise InputError(f"'hybrid_weight' must be within [0, 1], got {weight}")
        filters = _filters(_field(body, "filter", dict, "an object of field: value", {}), frozenset(fields))
        return cls(query, k, method, hybrid, weight, filters, _field(body, "explain", bool, "true or false", False))


@dataclass(frozen=True)
class EncodeRequest:
    """``POST /encode``: ``query`` false encodes documents (the document template and pruning)."""

    texts: tuple[str, ...]
    query: bool = False

    @classmethod
    def parse(cls, body: Any, max_texts: int) -> EncodeRequest:
        _known(body, ("texts", "query"))
        texts = _field(body, "texts", list, "a list of strings")
        if not 1 <= len(texts) <= max_texts:
            raise InputError(f"'texts' must hold 1 to {max_texts} strings, got {len(texts)}")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"'texts[{i}]' must be a string, got {_json_type(text)}")
        return cls(tuple(texts), _field(body, "query", bool, "true or false", False))


def _known(body: Any, names: tuple[str, ...]) -> None:
    if not isinstance(body, dict):
        raise InputError(f"the body must be a JSON object, got {_json_type(body)}")
    unknown = sorted(set(body) - set(names))
    if unknown:
        raise InputError(f"unknown field(s) {', '.join(map(repr, unknown))}: expected {', '.join(names)}")


_REQUIRED = object()


def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str, default: Any = _REQUIRED) -> Any:
    """``body[name]`` of that JSON type (``null`` counts as absent); a bool is not a number here."""
    value = body.get(name)
    if value is None:
        if default is _REQUIRED:
            raise InputError(f"'{name}' is missing: it must be {what}")
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise InputError(f"'{name}' must be {what}, got {_json_type(value)}")
    return value


def _filters(spec: dict[str, Any], fields: frozenset[str]) -> tuple[dict[str, Any], ...]:
    """``{field: value}`` -> a term filter each, ``{field: [values]}`` -> a terms filter; every field
    must be one of the index's."""
    filters = []
    for name, value in spec.items():
        if name not in fields:
            shown = ", ".join(sorted(fields)[:20]) + (", ..." if len(fields) > 20 else "")
            raise InputError(f"unknown field {name!r} in 'filter': the index has {shown}")
        if isinstance(value, list) and value and all(isinstance(v, _SCALARS) for v in value):
            filters.append({"terms": {name: value}})
        elif isinstance(value, _SCALARS):
            filters.append({"term": {name: value}})
        else:
            raise InputError(f"'filter.{name}' must be a string, number, boolean or a non-empty list of them")
    return tuple(filters)


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
