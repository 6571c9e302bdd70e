"""The sparse encoder: text -> tokens -> pooled LM-head weights -> pruned sparse vector.

Knows nothing about search engines; the toolkit and the trainer build on it.
"""

from splade_es.model.config import Pruning, SpladeConfig
from splade_es.model.encoder import SparseEncoder
from splade_es.model.features import FeatureNamer
from splade_es.model.vectors import SparseVector

__all__ = ["FeatureNamer", "Pruning", "SparseEncoder", "SparseVector", "SpladeConfig"]
