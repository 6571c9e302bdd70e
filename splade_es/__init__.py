"""splade-es: LLM-based learned sparse retrieval for Elasticsearch and OpenSearch.

The import is kept light (no torch) so the CLI starts fast; the encoder classes
load on first access.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "SparseEncoder": "splade_es.model.encoder",
    "SparseVector": "splade_es.model.vectors",
    "SpladeConfig": "splade_es.model.config",
    "Pruning": "splade_es.model.config",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'splade_es' has no attribute {name!r}")
