"""The local engine's SEISMIC backend: exact at exhaustive settings, kept with the index, and a
clear refusal past the library's limits."""

from __future__ import annotations

import numpy as np
import pytest

from splade_es.toolkit.engines import seismic as seismic_backend
from splade_es.toolkit.engines.base import EngineError
from splade_es.toolkit.engines.local import LocalEngine
from splade_es.toolkit.query import forms

# Every posting kept, every block scanned, every query feature used: SEISMIC must then be exact.
EXHAUSTIVE = {"n_postings": 100_000, "max_fraction": 1.0, "summary_energy": 1.0, "heap_factor": 1.0,
              "query_cut": 0}
MAPPING = {"mappings": {"properties": {"rf": {"type": "rank_features"}, "sv": {"type": "sparse_vector"}}}}


def _corpus(rng: np.random.Generator, docs: int = 400, features: int = 300) -> dict[str, dict[str, float]]:
    """Weights that are multiples of 1/64 up to 4: exact in SEISMIC's float16, so its sums are exact too."""
    corpus = {}
    for i in range(docs):
        chosen = rng.choice(features, size=int(rng.integers(5, 40)), replace=False)
        corpus[f"d{i}"] = {f"f{c}": float(rng.integers(1, 257)) / 64 for c in chosen}
    return corpus


def _engine(root, corpus, backend: str = "seismic", **parameters) -> LocalEngine:
    engine = LocalEngine(root, sparse_backend=backend)
    engine.create_index("vec", MAPPING)
    assert engine.bulk("vec", [(d, {"rf": v, "sv": v}) for d, v in corpus.items()]) == []
    if parameters:
        engine.set_sparse_backend("vec", backend, **parameters)
    return engine


def _top(engine: LocalEngine, query: dict, k: int = 10) -> list[tuple[str, float]]:
    hits = engine.search("vec", {"query": query, "size": k})["hits"]["hits"]
    return [(hit["_id"], hit["_score"]) for hit in hits]


def test_exhaustive_seismic_returns_the_exact_top_k(tmp_path):
    rng = np.random.default_rng(0)
    corpus = _corpus(rng)
    exact = _engine(tmp_path / "exact", corpus, "exact")
    approximate = _engine(tmp_path / "seismic", corpus, **EXHAUSTIVE)
    compared = 0
    for _ in range(30):
        vector = {f"f{c}": float(rng.integers(1, 9)) / 8 for c in rng.choice(300, size=12, replace=False)}
        for form, field in (("rank_feature", "rf"), ("sparse_vector", "sv")):
            query = forms.vector_query(vector, field, form)
            want = _top(exact, query, 11)
            if want[9][1] == want[10][1]:
                continue  # a tie at the cut: either document is a right answer
            got = _top(approximate, query)
            assert [score for _, score in got] == pytest.approx([score for _, score in want[:10]], abs=1e-9)
            assert {doc for doc, _ in got} == {doc for doc, _ in want[:10]}
            compared += 1
    assert compared >= 40
    reply = approximate.search("vec", {"query": forms.vector_query(vector, "rf", "rank_feature"), "size": 10})
    assert reply["hits"]["total"] == {"value": 10, "relation": "gte"}  # SEISMIC does not count every match


def test_default_settings_are_approximate_and_other_queries_stay_exact(tmp_path):
    rng = np.random.default_rng(1)
    corpus = _corpus(rng, docs=2000)
    exact, approximate = _engine(tmp_path / "e", corpus, "exact"), _engine(tmp_path / "s", corpus)
    vector = {f"f{c}": 1.0 for c in range(20)}
    got = _top(approximate, forms.vector_query(vector, "rf", "rank_feature"))
    assert len(got) == 10 and all(score > 0 for _, score in got)
    filtered = forms.filtered(forms.vector_query(vector, "rf", "rank_feature"), [{"ids": {"values": ["d1", "d2"]}}])
    assert _top(approximate, filtered) == _top(exact, filtered)  # a filter: not a pure dot product, so exact
    assert approximate.search("vec", {"query": {"match_all": {}}})["hits"]["total"]["relation"] == "eq"


def test_the_seismic_index_is_kept_with_the_index_and_rebuilt_when_the_log_grows(tmp_path, monkeypatch, capfd):
    rng = np.random.default_rng(2)
    corpus = _corpus(rng)
    engine = _engine(tmp_path, corpus, **EXHAUSTIVE)
    query = forms.vector_query({"f1": 1.0, "f2": 0.5}, "sv", "sparse_vector")
    first = _top(engine, query)
    assert capfd.readouterr().out == ""  # the library's progress lines do not reach standard output
    assert list((tmp_path / "indices" / "vec" / "cache").glob("seismic-*.index.seismic"))

    def no_build(*_, **__):
        raise AssertionError("rebuilt although the saved index matches the log")

    monkeypatch.setattr(seismic_backend.SeismicField, "build", no_build)
    reopened = LocalEngine(tmp_path)  # the backend comes from the index, not from this engine's default
    assert _top(reopened, query) == first
    monkeypatch.undo()
    assert reopened.bulk("vec", [("new", {"sv": {"f1": 100.0}, "rf": {"f1": 1.0}})]) == []
    assert _top(LocalEngine(tmp_path), query)[0] == ("new", 100.0)


def test_weights_past_float16_are_refused_in_one_line(tmp_path):
    engine = _engine(tmp_path, {"a": {"x": 70000.0}, "b": {"x": 1.0}})
    with pytest.raises(EngineError, match=r"^field 'sv': a weight of 70000 exceeds SEISMIC's float16 storage") as caught:
        engine.search("vec", {"query": forms.vector_query({"x": 1.0}, "sv", "sparse_vector")})
    assert caught.value.status == 400


def test_a_document_past_the_16_bit_packing_limit_is_refused_not_built(tmp_path):
    """pyseismic-lsr 0.5.4 panics (and hangs) on a document of 65,536 features: refused before the build."""
    engine = _engine(tmp_path, {"a": {f"f{j}": 1.0 for j in range(seismic_backend.MAX_DOCUMENT_FEATURES + 1)}})
    with pytest.raises(EngineError, match=r"^field 'sv': a document has 65535 features, more than SEISMIC packs"):
        engine.search("vec", {"query": forms.vector_query({"f1": 1.0}, "sv", "sparse_vector")})


@pytest.mark.parametrize(("backend", "parameters", "message"), [
    ("faiss", {}, "unknown local sparse backend 'faiss': choose exact or seismic"),
    ("seismic", {"heap": 0.5}, "unknown SEISMIC parameter(s) ['heap']"),
    ("seismic", {"n_postings": 1.5}, "SEISMIC parameter 'n_postings' must be an integer, got 1.5"),
    ("seismic", {"heap_factor": 0}, "SEISMIC parameter 'heap_factor' must be positive, got 0"),
])
def test_bad_backend_settings_are_refused(tmp_path, backend, parameters, message):
    engine = _engine(tmp_path, {"a": {"x": 1.0}}, "exact")
    with pytest.raises(EngineError) as caught:
        engine.set_sparse_backend("vec", backend, **parameters)
    assert str(caught.value) == message or str(caught.value).startswith(message)
    assert caught.value.status == 400


def test_a_field_past_65536_features_builds_the_u32_index_and_stays_exact(tmp_path):
    """More distinct features than SeismicIndex's u16 component ids: the LV (u32) index is built,
    saved, loaded, and at exhaustive settings answers the exact top k, ids above 65,535 included."""
    import scipy.sparse as sp

    rng = np.random.default_rng(3)
    docs, columns = 300, seismic_backend.U16_COMPONENTS + 4_464
    rows = np.repeat(np.arange(docs), 20)
    cols = np.concatenate([rng.choice(np.arange(columns - 2_000, columns) if d % 2 else np.arange(columns),
                                      size=20, replace=False) for d in range(docs)])
    matrix = sp.csc_matrix((rng.integers(1, 257, rows.size) / 64, (rows, cols)), shape=(docs, columns))
    parameters = seismic_backend.check_parameters(EXHAUSTIVE)
    built = seismic_backend.SeismicField.build(matrix, "rf", parameters)
    assert type(built.index).__name__ == "SeismicIndexLV"
    built.save(tmp_path / "rf")
    loaded = seismic_backend.SeismicField.load(tmp_path / "rf", True, parameters)
    dense = matrix.toarray()
    for _ in range(20):
        query_cols = rng.choice(np.unique(cols[cols >= seismic_backend.U16_COMPONENTS]), size=6, replace=False)
        query = {int(c): float(rng.integers(1, 9)) / 8 for c in query_cols}
        exact = dense[:, list(query)] @ np.array(list(query.values()))
        want = np.sort(exact)[::-1][:10]
        found, scores = loaded.search(query, 10)
        assert scores == pytest.approx(want[want > 0][:len(scores)], abs=1e-9) and len(scores) == (want > 0).sum()
        assert np.allclose(exact[found], scores)
