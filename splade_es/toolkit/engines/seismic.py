"""SEISMIC (``pyseismic-lsr``) as the local engine's approximate backend for sparse vector queries.

SEISMIC keeps, per feature, only the heaviest postings, clusters them into blocks with summary
vectors and skips blocks whose summary cannot beat the current top k: much faster than an exact
pass over every posting, at a recall below 1 (measured in docs/BENCHMARKS.md). Its limits, as
pyseismic-lsr 0.5.4 stores a collection, are checked before a build:

- component ids: ``SeismicIndex`` stores them as u16 (at most 65,536 distinct features); a field
  with more is built with ``SeismicIndexLV`` (u32), which the library provides for large vocabularies;
- values are stored as float16: a weight above 65,504 would become infinite (refused here) and
  scores carry float16 rounding (about 1e-3 relative), so an approximate hit's score is not the
  exact dot product;
- a document's features are packed in a 16-bit range: a document with more than
  MAX_DOCUMENT_FEATURES makes the library's build panic (and hang), so it is refused here;
- documents without features are not indexed (they cannot match a sparse query anyway).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from splade_es.toolkit.engines.base import EngineError

FLOAT16_MAX = 65504.0
U16_COMPONENTS = 1 << 16
MAX_DOCUMENT_FEATURES = (1 << 16) - 2  # 65,536 panics in posting_list.rs ("16-bit packing limit")
BUILD_PARAMETERS = {"n_postings": 3500, "centroid_fraction": 0.1, "min_cluster_size": 2, "summary_energy": 0.4,
                    "max_fraction": 1.5, "doc_cut": 15}
QUERY_PARAMETERS = {"query_cut": 0, "heap_factor": 0.9}  # query_cut 0: every query feature
PARAMETERS = {**BUILD_PARAMETERS, **QUERY_PARAMETERS}


def check_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """SEISMIC's parameters with defaults filled in; an unknown name or a bad value is a 400."""
    unknown = sorted(set(parameters) - set(PARAMETERS))
    if unknown:
        raise EngineError(f"unknown SEISMIC parameter(s) {unknown}: known are {sorted(PARAMETERS)}", 400)
    checked = {**PARAMETERS, **parameters}
    for name, value in checked.items():
        kind = type(PARAMETERS[name])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise EngineError(f"SEISMIC parameter {name!r} must be {'an integer' if kind is int else 'a number'}, "
                              f"got {value!r}", 400)
        if value < 0 or (name != "query_cut" and value == 0):
            raise EngineError(f"SEISMIC parameter {name!r} must be positive, got {value!r}", 400)
        checked[name] = kind(value)
    return checked


def _library():
    try:
        import seismic
    except ImportError:
        raise EngineError("the SEISMIC backend needs pyseismic-lsr: pip install 'splade-es[local-fast]'", 400) from None
    return seismic


@contextmanager
def _quiet_stdout() -> Iterator[None]:
    """The library prints progress to the process's standard output (Rust ``println!``), which
    would corrupt ``--json`` output: send file descriptor 1 to /dev/null meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


class SeismicField:
    """One vector field's SEISMIC index; documents are addressed by row number."""

    def __init__(self, index: Any, parameters: dict[str, Any]) -> None:
        self.index = index
        self.parameters = parameters

    @classmethod
    def build(cls, matrix: sp.csc_matrix, field_name: str, parameters: dict[str, Any]) -> SeismicField:
        """Index a documents x features matrix, after checking the library's limits."""
        seismic = _library()
        if matrix.nnz and float(matrix.data.max()) > FLOAT16_MAX:
            raise EngineError(f"field {field_name!r}: a weight of {float(matrix.data.max()):g} exceeds SEISMIC's "
                              f"float16 storage (at most {FLOAT16_MAX:g}); use the exact backend", 400)
        large = matrix.shape[1] > U16_COMPONENTS
        rows = matrix.tocsr()
        rows.sort_indices()  # SEISMIC wants strictly increasing components per document
        longest = int(np.diff(rows.indptr).max()) if rows.shape[0] else 0
        if longest > MAX_DOCUMENT_FEATURES:
            raise EngineError(f"field {field_name!r}: a document has {longest} features, more than SEISMIC packs "
                              f"(at most {MAX_DOCUMENT_FEATURES}); prune the vectors (ingest --doc-top-k) or use "
                              "the exact backend", 400)
        dataset = (seismic.SeismicDatasetLV if large else seismic.SeismicDataset)(matrix.shape[1])
        with _quiet_stdout():
            dataset.add_documents_by_id([str(r) for r in range(rows.shape[0])], rows.indices.astype(np.int64),
                                        rows.data.astype(np.float32), rows.indptr.astype(np.int64))
            del rows
            kind = seismic.SeismicIndexLV if large else seismic.SeismicIndex
            index = kind.build_from_dataset(dataset, **{k: parameters[k] for k in BUILD_PARAMETERS})
        return cls(index, parameters)

    def save(self, prefix: Path) -> None:
        """Written as ``PREFIX.index.seismic`` (the library adds the suffix)."""
        with _quiet_stdout():
            self.index.save(str(prefix))

    @classmethod
    def load(cls, prefix: Path, large: bool, parameters: dict[str, Any]) -> SeismicField:
        seismic = _library()
        with _quiet_stdout():
            index = (seismic.SeismicIndexLV if large else seismic.SeismicIndex).load(f"{prefix}.index.seismic")
        return cls(index, parameters)

    def search(self, query: dict[int, float], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and scores of the (approximate) top ``k`` documents by dot product."""
        if not query or k == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        seismic = _library()
        components = np.array([str(c) for c in query], dtype=seismic.get_seismic_string())
        values = np.array(list(query.values()), dtype=np.float32)
        cut = self.parameters["query_cut"] or len(query)
        found = self.index.search("q", components, values, k=k, query_cut=cut,
                                  heap_factor=self.parameters["heap_factor"])
        return (np.array([int(doc) for _, _, doc in found], dtype=np.int64),
                np.array([score for _, score, _ in found], dtype=np.float64))
