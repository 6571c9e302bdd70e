"""Sparse vectors and the pruning that turns a pooled dense row into one.

Pruning lives here, before any engine sees a vector, so every engine (local,
OpenSearch, Elasticsearch) scores exactly the same vector.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from splade_es.errors import EncodingError
from splade_es.model.config import MIN_WEIGHT, Pruning
from splade_es.model.features import FeatureNamer


@dataclass(frozen=True, eq=False)
class SparseVector:
    """Token ids and float32 weights, largest weight first."""

    indices: np.ndarray
    values: np.ndarray
    namer: FeatureNamer = field(repr=False)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def to_features(self) -> dict[str, float]:
        """``{feature_name: weight}``: the body of a ``rank_features`` / ``sparse_vector`` field."""
        return dict(zip(self.namer.names(self.indices.tolist()), _short_floats(self.values)))

    def to_dict(self) -> dict[int, float]:
        """``{token_id: weight}``."""
        return dict(zip(self.indices.tolist(), _short_floats(self.values)))

    def top(self, k: int | None = None) -> list[tuple[str, float]]:
        """The ``k`` heaviest ``(feature, weight)`` pairs (all when ``k`` is None)."""
        n = len(self) if k is None else min(k, len(self))
        return list(zip(self.namer.names(self.indices[:n].tolist()), _short_floats(self.values[:n])))

    def dot(self, other: SparseVector) -> float:
        """Exact score ``Σ_j self_j · other_j`` (what the engines approximate to 9 bits)."""
        common, mine, theirs = np.intersect1d(self.indices, other.indices, assume_unique=True, return_indices=True)
        if common.size == 0:
            return 0.0
        return float(np.dot(self.values[mine].astype(np.float64), other.values[theirs].astype(np.float64)))

    def to_dense(self) -> np.ndarray:
        dense = np.zeros(len(self.namer), dtype=np.float32)
        dense[self.indices] = self.values
        return dense


def _short_floats(values: np.ndarray) -> list[float]:
    """Python floats that print as the shortest text reading back to the same float32."""
    return [float(str(v)) for v in values]


def prune_rows(dense: torch.Tensor, pruning: Pruning, namer: FeatureNamer) -> list[SparseVector]:
    """Turn ``[batch, vocab]`` pooled weights (special ids already zeroed) into sparse vectors."""
    dense = dense.detach().to(device="cpu", dtype=torch.float32)
    bad_rows = (~torch.isfinite(dense)).any(dim=1).nonzero().flatten().tolist()
    if bad_rows:
        raise EncodingError(
            f"the model produced non-finite weights for batch row(s) {bad_rows} "
            "(try dtype=float32; half precision can overflow)"
        )
    threshold = torch.full((dense.shape[0], 1), max(MIN_WEIGHT, float(pruning.min_weight)))
    if pruning.max_ratio > 0:
        threshold = torch.maximum(threshold, dense.amax(dim=1, keepdim=True) * pruning.max_ratio)
    kept = torch.where(dense >= threshold, dense, torch.zeros(()))
    k = dense.shape[1] if pruning.top_k is None else min(pruning.top_k, dense.shape[1])
    values, indices = torch.sort(kept, dim=1, descending=True, stable=True)
    values, indices = values[:, :k].numpy(), indices[:, :k].numpy()
    vectors = []
    for row_values, row_indices in zip(values, indices):
        n = int(np.count_nonzero(row_values))
        vectors.append(SparseVector(row_indices[:n].astype(np.int64), row_values[:n].copy(), namer))
    return vectors


def empty_vector(namer: FeatureNamer) -> SparseVector:
    """The documented result for an empty or whitespace-only text: no features."""
    return SparseVector(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), namer)
