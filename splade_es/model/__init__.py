"""The sparse encoder: text -> tokens -> pooled LM-head weights -> pruned sparse vector.

Knows nothing about search engines; the toolkit and the trainer build on it. The public
names are imported on first use, so reading a bundle's config does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from splade_es.model.config import Pruning, SpladeConfig
    from splade_es.model.encoder import SparseEncoder
    from splade_es.model.features import FeatureNamer
    from splade_es.model.vectors import SparseVector

_HOMES = {
    "FeatureNamer": "features",
    "Pruning": "config",
    "SparseEncoder": "encoder",
    "SparseVector": "vectors",
    "SpladeConfig": "config",
}
__all__ = ["FeatureNamer", "Pruning", "SparseEncoder", "SparseVector", "SpladeConfig"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
