"""The one check of a sparse vector as the engines will see it, before anything is sent.

Lucene stores ``rank_features`` / ``sparse_vector`` weights as float32 and refuses any
value that is not finite or is below ``Float.MIN_NORMAL`` (``numpy.finfo(float32).tiny``)
*after* that cast, and any term longer than 32766 UTF-8 bytes; ``rank_feature`` queries
split a field path at its last dot, and ``sparse_vector`` refuses dots. The corpus reader,
``ingest --vectors``, the encoder's output and the local engine all call :func:`check_features`,
so a bad value fails here with ``FILE:LINE: problem`` instead of as a 400 half-way through a load.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from splade_es.errors import InputError

FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # 1.1754944e-38, Java's Float.MIN_NORMAL
MAX_TERM_BYTES = 32766  # Lucene's IndexWriter.MAX_TERM_LENGTH


def check_features(features: Any, where: str) -> dict[str, float]:
    """``features`` as ``{name: float}``, or :class:`InputError` ``"{where}: <problem>"``.

    The common case (string names, float weights, all fine) costs one vectorised check.
    """
    if not isinstance(features, dict):
        raise InputError(f"{where}: features must be an object of name: weight, got {type(features).__name__}")
    if not features:
        return features
    names, weights = list(features), list(features.values())
    if (set(map(type, weights)) <= {float, int} and all(type(name) is str for name in names)
            and all(abs(w) < 2 ** 128 for w in weights if type(w) is int)):
        with np.errstate(over="ignore"):
            cast = np.asarray(weights, dtype=np.float64).astype(np.float32)
        joined = "".join(names)
        if ("." not in joined and all(names) and max(map(len, names)) <= MAX_TERM_BYTES // 4
                and bool(np.all(np.isfinite(cast) & (cast >= FLOAT32_TINY)))):
            return features if all(type(w) is float for w in weights) else {k: float(v) for k, v in features.items()}
    for name, weight in features.items():
        problem = name_problem(name) or weight_problem(weight)
        if problem:
            raise InputError(f"{where}: feature {_short(name)}: {problem}")
    return {name: float(weight) for name, weight in features.items()}  # only very long names come here


def _short(name: Any) -> str:
    text = repr(name)
    return text if len(text) <= 80 else f"{text[:60]}...({len(text)} characters)"


def name_problem(name: Any) -> str | None:
    """Why an engine would refuse this feature name, or None."""
    if type(name) is not str:
        return f"the name must be a string, got {type(name).__name__}"
    if not name:
        return "the name is empty"
    if "." in name:
        return "the name contains '.' (rank_feature splits field paths at dots; sparse_vector refuses them)"
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_TERM_BYTES:
        return f"the name is {size} UTF-8 bytes long, over Lucene's term limit of {MAX_TERM_BYTES}"
    return None


def weight_problem(weight: Any) -> str | None:
    """Why an engine would refuse this weight after its float32 cast, or None."""
    if type(weight) not in (float, int):
        return f"the weight must be a number, got {type(weight).__name__} {weight!r}"
    if type(weight) is int and abs(weight) > 2 ** 128:
        return f"the weight {weight} overflows float32"
    if not np.isfinite(float(weight)):
        return f"the weight {weight!r} is not finite"
    with np.errstate(over="ignore"):
        cast = np.float32(weight)
    if not np.isfinite(cast):
        return f"the weight {weight!r} overflows float32 (largest {float(np.finfo(np.float32).max):.4g})"
    if cast < FLOAT32_TINY:
        return (f"the weight {weight!r} is {float(cast)!r} as float32, below the smallest value the engines "
                f"accept ({FLOAT32_TINY:.8g}); drop it or raise it")
    return None
