"""The local engine as a strict reference: exact where it answers, a one-line 400 where it would
only approximate, and its BM25 equal to an independent implementation (bm25s, Lucene's formula)."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from conftest import SHARED_DATA
from splade_es.io.corpus import Document, read_corpus, resolve_corpus
from splade_es.toolkit.engines.base import EngineError
from splade_es.toolkit.engines.local import LocalEngine, analyze
from splade_es.toolkit.query import forms

CRANFIELD = SHARED_DATA / "cranfield"
ENGLISH = {"type": "text", "analyzer": "english"}
DOCS = {
    "a": {"title": "Wing lift", "text": "lift of a swept wing in supersonic flow", "tag": "x",
          "rf": {"wing": 2.0, "lift": 1.0}, "sv": {"wing": 2.0, "lift": 1.0}},
    "b": {"title": "Drag", "text": "drag of a flat plate", "tag": ["y", "z"],
          "rf": {"drag": 3.0, "wing": 0.5}, "sv": {"drag": 3.0, "wing": 0.5}},
    "c": {"title": "Heat", "text": "heat transfer in the boundary layer of a wing", "tag": "x",
          "rf": {"heat": 1.5}, "sv": {"heat": 1.5}},
}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> LocalEngine:
    engine = LocalEngine(tmp_path_factory.mktemp("local-strict"))
    engine.create_index("small", {"mappings": {"dynamic": "strict", "properties": {
        "title": ENGLISH, "text": ENGLISH, "plain": {"type": "text"}, "tag": {"type": "keyword"},
        "rf": {"type": "rank_features"}, "sv": {"type": "sparse_vector"}}}})
    assert engine.bulk("small", list(DOCS.items())) == []
    return engine


def _scores(engine: LocalEngine, query: dict, **body) -> dict[str, float]:
    reply = engine.search("small", {"query": query, "size": 10, **body})
    return {hit["_id"]: hit["_score"] for hit in reply["hits"]["hits"]}


# ---------------------------------------------------------------- what splade-es sends is exact
def test_every_form_splade_es_sends_scores_the_exact_dot_product(small):
    vector = {"wing": 1.5, "drag": 0.25, "unknown": 0.1}
    want = {doc_id: sum(w * doc["rf"].get(t, 0.0) for t, w in vector.items()) for doc_id, doc in DOCS.items()}
    want = {doc_id: score for doc_id, score in want.items() if score}
    for form, field in (("rank_feature", "rf"), ("term", "sv"), ("sparse_vector", "sv")):
        query = forms.vector_query(vector, field, form)
        assert _scores(small, query) == pytest.approx(want), form
        filtered = forms.filtered(query, [{"term": {"tag": "x"}}, {"ids": {"values": ["a", "b"]}}])
        assert _scores(small, filtered) == pytest.approx({"a": want["a"]}), form
    head, tail = forms.split_heaviest(vector, 1)
    two_phase = _scores(small, forms.vector_query(head, "rf", "rank_feature"),
                        rescore=forms.rescore(forms.vector_query(tail, "rf", "rank_feature"), 10))
    assert two_phase == pytest.approx(want)


def test_text_queries_are_bm25_over_the_analysed_field(small):
    bm25 = _scores(small, forms.bm25_query("wings lift", ["title", "text"]))
    title = _scores(small, {"match": {"title": "wings lift"}})
    text = _scores(small, {"match": {"text": {"query": "wings lift", "boost": 2.0}}})
    assert set(bm25) == {"a", "c"}
    for doc_id in bm25:  # best_fields, tie_breaker 0.5, on the per-field scores
        pair = sorted([title.get(doc_id, 0.0), text.get(doc_id, 0.0) / 2])
        assert bm25[doc_id] == pytest.approx(pair[1] + 0.5 * pair[0])
    # term is not analysed, the document is: "wing" matches "Wing", "wings" matches nothing
    assert _scores(small, {"term": {"title": "wing"}}) == pytest.approx({"a": title["a"] - _scores(
        small, {"match": {"title": "lift"}})["a"]})
    assert _scores(small, {"term": {"title": "wings"}}) == {}
    # terms is constant-score; keyword values match as stored, arrays by any value
    assert _scores(small, {"terms": {"tag": ["z", "nope"], "boost": 3.0}}) == {"b": 3.0}
    assert _scores(small, {"bool": {"filter": [{"term": {"tag": "x"}}]}}) == {"a": 0.0, "c": 0.0}
    assert _scores(small, {"term": {"no_such_field": "x"}}) == {}  # the engines match nothing there


def test_bool_matching_follows_lucene(small):
    wing = {"term": {"sv": {"value": "wing", "boost": 1.0}}}
    heat = {"term": {"sv": {"value": "heat", "boost": 1.0}}}
    # without a required clause one should clause must match, whatever minimum_should_match says
    assert set(_scores(small, {"bool": {"should": [wing], "minimum_should_match": 0}})) == {"a", "b"}
    # with one, should clauses only add to the score
    assert _scores(small, {"bool": {"filter": [{"terms": {"tag": ["x"]}}], "should": [wing]}}) == {"a": 2.0, "c": 0.0}
    both = _scores(small, {"bool": {"should": [wing, heat], "minimum_should_match": 2}})
    assert both == {}
    assert _scores(small, {"bool": {"must_not": [wing]}}) == {"c": 0.0}


# ---------------------------------------------------------------- and everything else is refused
REFUSED = [
    ({"rank_feature": {"field": "rf.wing"}}, 'without "linear": {} is saturation'),
    ({"rank_feature": {"field": "rf.wing", "saturation": {"pivot": 2}}}, "with saturation is not a dot product"),
    ({"rank_feature": {"field": "rf.wing", "log": {"scaling_factor": 1}}}, "with log is not a dot product"),
    ({"rank_feature": {"field": "rf.wing", "sigmoid": {"pivot": 1, "exponent": 1}}}, "with sigmoid is not"),
    ({"rank_feature": {"field": "rf.wing", "linear": {"x": 1}}}, 'without "linear": {}'),
    ({"bool": {"should": [{"rank_feature": {"field": "rf.wing", "linear": {}, "_name": "q"}}]}},
     "does not model [rank_feature] option(s) ['_name']"),
    ({"rank_feature": {"field": "sv.wing", "linear": {}}}, "needs a rank_features field, 'sv'"),
    ({"rank_feature": {"field": "rf.wing", "linear": {}, "boost": -1}}, "negative [boost] are not allowed"),
    ({"sparse_vector": {"field": "sv", "query_vector": {"wing": 1.0}}}, 'without "prune": false'),
    ({"sparse_vector": {"field": "sv", "inference_id": "elser", "query": "wing", "prune": False}},
     "does not model [sparse_vector] option(s) ['inference_id', 'query']"),
    ({"sparse_vector": {"field": "rf", "query_vector": {"wing": 1.0}, "prune": False}}, "needs a sparse_vector field"),
    ({"term": {"sv": {"value": "wing", "boost": 1.0, "case_insensitive": True}}},
     "does not model [term] option(s) ['case_insensitive']"),
    ({"term": {"tag": "x"}}, "[term] on keyword field 'tag' is scored by BM25"),
    ({"term": {"rf": "wing"}}, "[term] on rank_features field 'rf' is not supported"),
    ({"match": {"text": {"query": "wing", "operator": "and"}}}, "does not model [match] option(s) ['operator']"),
    ({"match": {"plain": "wing"}}, "analyses text fields with the english analyzer only"),
    ({"match": {"tag": "x"}}, "[match] on field 'tag' (keyword)"),
    ({"multi_match": {"query": "wing", "fields": ["title"], "type": "cross_fields"}}, "best_fields only"),
    ({"multi_match": {"query": "wing", "fields": ["title"], "fuzziness": 1}}, "option(s) ['fuzziness']"),
    ({"multi_match": {"query": "wing"}}, "[multi_match] needs ['fields']"),
    ({"multi_match": {"query": "wing", "fields": ["t*"]}}, "no wildcards"),
    ({"bool": {"should": [{"match_all": {}}], "minimum_should_match": "75%"}}, "non-negative count only"),
    ({"bool": {"should": [], "adjust_pure_negative": True}}, "option(s) ['adjust_pure_negative']"),
    ({"function_score": {"query": {"match_all": {}}}}, "does not support the [function_score] query"),
    ({"match_all": {}, "ids": {"values": []}}, "exactly one query type"),
    ({"ids": {"values": "a"}}, "[ids] values must be a list"),
]


@pytest.mark.parametrize("query, message", REFUSED, ids=[json.dumps(q)[:60] for q, _ in REFUSED])
def test_forms_it_cannot_score_exactly_are_refused_in_one_line(small, query, message):
    with pytest.raises(EngineError) as error:
        small.search("small", {"query": query})
    assert error.value.status == 400 and message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("body, message", [
    ({"explain": True}, "search option(s) ['explain']"),
    ({"search_pipeline": {}}, "search option(s) ['search_pipeline']"),
    ({"size": 9_000, "from": 1_001}, "Result window is too large"),
    ({"size": "ten"}, "[size] must be a non-negative integer"),
    ({"_source": {"excludes": ["text"]}}, "does not model [_source] option(s) ['excludes']"),
    ({"_source": ["ti*"]}, "_source as true, false or a list of field names"),
    ({"rescore": [{"query": {"rescore_query": {"match_all": {}}}}]}, "not a list of them"),
    ({"rescore": {"query": {"rescore_query": {"match_all": {}}, "score_mode": "max"}}}, "score_mode total only"),
])
def test_search_options_it_does_not_model_are_refused(small, body, message):
    with pytest.raises(EngineError) as error:
        small.search("small", {"query": {"match_all": {}}, **body})
    assert error.value.status == 400 and message in str(error.value)


# ---------------------------------------------------------------- BM25 against bm25s
@pytest.fixture(scope="module")
def cranfield_local(tmp_path_factory):
    documents = [d for d in read_corpus(resolve_corpus(CRANFIELD, None, None)) if isinstance(d, Document)]
    engine = LocalEngine(tmp_path_factory.mktemp("local-bm25"))
    engine.create_index("cran", {"mappings": {"properties": {"title": ENGLISH, "text": ENGLISH}}})
    assert engine.bulk("cran", [(d.id, d.fields) for d in documents]) == []
    queries = [json.loads(line)["text"] for line in (CRANFIELD / "queries.jsonl").read_text().splitlines()]
    return engine, documents, queries


def _lucene_bm25(documents: list[Document], field: str):
    """Lucene's BM25 (k1 1.2, b 0.75) written out from its definition over the local analyzer's
    tokens, in plain Python: independent of the engine, which scores through bm25s. Lucene counts
    only documents holding a token of the field (docCount, average length)."""
    postings: dict[str, list[tuple[str, int]]] = {}
    lengths: dict[str, int] = {}
    for document in documents:
        tokens = analyze(document.fields[field])
        if tokens:
            lengths[document.id] = len(tokens)
            for token, tf in Counter(tokens).items():
                postings.setdefault(token, []).append((document.id, tf))
    count, average = len(lengths), sum(lengths.values()) / len(lengths)

    def scores(text: str) -> dict[str, float]:
        total: dict[str, float] = {}
        for token in analyze(text):  # a repeated query word is a repeated clause
            holding = postings.get(token, [])
            idf = math.log(1 + (count - len(holding) + 0.5) / (len(holding) + 0.5))
            for doc_id, tf in holding:
                norm = 1.2 * (1 - 0.75 + 0.75 * lengths[doc_id] / average)
                total[doc_id] = total.get(doc_id, 0.0) + idf * tf / (tf + norm)
        return total
    return scores


@pytest.mark.parametrize("field", ["title", "text"])
def test_local_bm25_equals_lucenes_formula_on_cranfield_to_1e_9(cranfield_local, field):
    engine, documents, queries = cranfield_local
    independent = _lucene_bm25(documents, field)
    worst, compared = 0.0, 0
    for text in queries:
        got = _cran(engine, {"match": {field: text}})
        want = independent(text)
        assert got.keys() == want.keys(), text
        worst = max([worst, *(abs(got[d] - want[d]) for d in want)])
        compared += len(want)
    print(f"{field}: {compared} (query, document) scores over {len(queries)} queries, max |diff| {worst:.2e}")
    assert compared > 20_000 and worst <= 1e-9  # float64 throughout: float32 scores would miss by ~1e-7


def test_local_bm25_counts_a_repeated_word_twice_and_skips_empty_texts(tmp_path):
    """Lucene builds one clause per query token, so "wing wing" scores twice "wing"; a document
    whose text analyses to nothing (stop words only) neither matches nor counts in docCount."""
    engine = LocalEngine(tmp_path)
    engine.create_index("t", {"mappings": {"properties": {"text": ENGLISH}}})
    texts = {"a": "wing flutter", "b": "the of and", "c": "wing wing tip", "d": "tip vortex"}
    assert engine.bulk("t", [(d, {"text": t}) for d, t in texts.items()]) == []
    reference = _lucene_bm25([Document(d, {"text": t}, f"test:{d}") for d, t in texts.items()], "text")

    def hits(text: str) -> dict[str, float]:
        found = engine.search("t", {"query": {"match": {"text": text}}, "_source": False})["hits"]["hits"]
        return {hit["_id"]: hit["_score"] for hit in found}
    once, twice = hits("wing"), hits("wing wing")
    assert once.keys() == {"a", "c"} and twice == pytest.approx({d: 2 * v for d, v in once.items()})
    assert once == pytest.approx(reference("wing")) and "b" not in hits("the tip")


def test_bm25_past_bm25s_32_bit_ids_is_refused_in_one_line(tmp_path, monkeypatch):
    """bm25s numbers documents and words with int32: past that a search says so (the limit is
    lowered here; 2^31 texts do not fit a test)."""
    from splade_es.toolkit.engines import local

    engine = LocalEngine(tmp_path)
    engine.create_index("t", {"mappings": {"properties": {"text": ENGLISH}}})
    assert engine.bulk("t", [("a", {"text": "wing flutter"}), ("b", {"text": "tip vortex"})]) == []
    monkeypatch.setattr(local.BM25, "LIMIT", 3)
    with pytest.raises(EngineError, match=r"BM25 over 2 texts and 4 distinct words: past bm25s's 32-bit ids \(3\)"):
        engine.search("t", {"query": {"match": {"text": "wing"}}})


def test_local_best_fields_equals_the_formula_fields_combined(cranfield_local):
    engine, documents, queries = cranfield_local
    title, text = _lucene_bm25(documents, "title"), _lucene_bm25(documents, "text")
    for query in queries[:50]:
        got = _cran(engine, forms.bm25_query(query, ["title", "text"]))
        per_title, per_text = title(query), text(query)
        want = {d: max(per_title.get(d, 0), per_text.get(d, 0)) + 0.5 * min(per_title.get(d, 0), per_text.get(d, 0))
                for d in per_title.keys() | per_text.keys()}
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9)


def _cran(engine: LocalEngine, query: dict) -> dict[str, float]:
    hits = engine.search("cran", {"query": query, "size": 1400, "_source": False})["hits"]["hits"]
    return {hit["_id"]: hit["_score"] for hit in hits}


# ---------------------------------------------------------------- storage: cache, replaced documents, ranking
def _vector_index(root, docs: dict[str, dict[str, float]]) -> LocalEngine:
    engine = LocalEngine(root)
    engine.create_index("vec", {"mappings": {"properties": {"rf": {"type": "rank_features"}, "tag": {"type": "keyword"}}}})
    assert engine.bulk("vec", [(doc_id, {"rf": vector, "tag": doc_id}) for doc_id, vector in docs.items()]) == []
    return engine


def _vector_scores(engine: LocalEngine, vector: dict[str, float]) -> dict[str, float]:
    hits = engine.search("vec", {"query": forms.vector_query(vector, "rf", "rank_feature"), "size": 100})["hits"]["hits"]
    return {hit["_id"]: hit["_score"] for hit in hits}


def test_a_reopened_index_loads_its_cache_and_a_grown_log_is_read_again(tmp_path, monkeypatch):
    from splade_es.toolkit.engines import local

    docs = {f"d{i}": {"a": 1.0 + i, "b": 0.5 * (i + 1)} for i in range(5)}
    first = _vector_scores(_vector_index(tmp_path, docs), {"a": 1.0, "b": 2.0})
    assert first == pytest.approx({d: v["a"] + 2 * v["b"] for d, v in docs.items()})

    def no_json(*_):
        raise AssertionError("the log was parsed although the cache matches it")

    monkeypatch.setattr(local._IndexData, "_lines", no_json)
    reopened = LocalEngine(tmp_path)
    assert _vector_scores(reopened, {"a": 1.0, "b": 2.0}) == first
    assert reopened.get("vec", "d3") == {"rf": docs["d3"], "tag": "d3"}  # the source, read from the log by offset
    monkeypatch.undo()
    assert reopened.bulk("vec", [("d3", {"rf": {"b": 4.0}, "tag": "new"}), ("d9", {"rf": {"a": 0.25}})]) == []
    grown = _vector_scores(LocalEngine(tmp_path), {"a": 1.0, "b": 2.0})
    assert grown == pytest.approx({**{d: s for d, s in first.items() if d != "d3"}, "d3": 8.0, "d9": 0.25})


def test_a_replaced_document_keeps_only_its_latest_vector(tmp_path):
    engine = _vector_index(tmp_path, {"x": {"a": 1.0}, "y": {"a": 2.0}})
    assert engine.bulk("vec", [("x", {"rf": {"c": 3.0}, "tag": "x"})]) == []
    assert _vector_scores(LocalEngine(tmp_path), {"a": 1.0, "c": 1.0}) == {"y": 2.0, "x": 3.0}
    assert LocalEngine(tmp_path).count("vec") == 2


@pytest.mark.parametrize("count", [0, 1, 7, 50, 400])
def test_ranking_only_the_top_gives_the_full_sort_order(count):
    from splade_es.toolkit.engines.local import _ranked

    rng = np.random.default_rng(count)
    scores = rng.integers(0, 20, 1000).astype(float)  # many ties: the row breaks them
    rows = np.flatnonzero(rng.random(1000) < 0.4)
    full = rows[np.lexsort((rows, -scores[rows]))]
    assert _ranked(rows, scores, count).tolist() == full[:count].tolist()


def test_only_the_returned_hits_read_the_log_and_no_source_reads_none(tmp_path, monkeypatch):
    """A search reads sources for the page it returns, after the indices' hits are merged, and
    none with ``_source: false`` (eval asks 1000 hits per query: reading each was 97% of its time)."""
    from splade_es.toolkit.engines import local

    engine = _vector_index(tmp_path, {f"d{i}": {"a": 1.0 + i} for i in range(30)})
    engine.create_index("vec2", {"mappings": {"properties": {"rf": {"type": "rank_features"}, "tag": {"type": "keyword"}}}})
    assert engine.bulk("vec2", [(f"e{i}", {"rf": {"a": 0.5 + i}, "tag": f"e{i}"}) for i in range(30)]) == []
    engine._save_aliases({"both": ["vec", "vec2"]})  # an alias over two indices, as after a reindex
    reads: list[int] = []
    real_row = local._IndexData.row
    monkeypatch.setattr(local._IndexData, "row", lambda self, row: reads.append(row) or real_row(self, row))
    query = forms.vector_query({"a": 1.0}, "rf", "rank_feature")
    page = engine.search("both", {"query": query, "size": 5, "from": 3})["hits"]["hits"]
    assert [hit["_id"] for hit in page] == ["e28", "d27", "e27", "d26", "e26"]
    assert [hit["_source"]["tag"] for hit in page] == [hit["_id"] for hit in page] and len(reads) == 5
    reads.clear()
    bare = engine.search("both", {"query": query, "size": 1000, "_source": False})["hits"]["hits"]
    assert len(bare) == 60 and reads == [] and all(hit["_source"] is None for hit in bare)
    assert [hit["_id"] for hit in bare[:3]] == ["d29", "e29", "d28"]


def test_bm25_statistics_are_cached_with_the_index_and_rebuilt_when_the_log_grows(tmp_path, monkeypatch):
    """A new process scores text from cached arrays, not by analysing every source again; the
    scores are the same, and a grown log is read again."""
    from splade_es.toolkit.engines import local

    engine = LocalEngine(tmp_path)
    engine.create_index("txt", {"mappings": {"properties": {"text": ENGLISH}}})
    assert engine.bulk("txt", [(d, {"text": doc["text"]}) for d, doc in DOCS.items()] + [("e", {"text": ""})]) == []
    query = {"match": {"text": "wing of the boundary layer"}}
    first = engine.search("txt", {"query": query})["hits"]["hits"]

    def no_sources(*_):
        raise AssertionError("the sources were analysed again although the cache matches the log")

    monkeypatch.setattr(local._IndexData, "sources", no_sources)
    again = LocalEngine(tmp_path).search("txt", {"query": query})["hits"]["hits"]
    assert [(h["_id"], h["_score"]) for h in again] == [(h["_id"], h["_score"]) for h in first]
    assert [h["_id"] for h in first] == ["c", "a"]
    monkeypatch.undo()
    assert engine.bulk("txt", [("f", {"text": "boundary layer of a wing, the wing"})]) == []
    grown = LocalEngine(tmp_path).search("txt", {"query": query})["hits"]["hits"]
    assert grown[0]["_id"] == "f" and len(grown) == 3


def test_cached_bm25_scores_of_other_scoring_or_format_are_rebuilt(tmp_path, monkeypatch):
    """The cache holds finished scores: one computed with another k1 (or bm25s version), one in
    the format before bm25s (raw term counts), and one whose arrays disagree are all rebuilt."""
    from splade_es.toolkit.engines import local

    engine = LocalEngine(tmp_path)
    engine.create_index("txt", {"mappings": {"properties": {"text": ENGLISH}}})
    assert engine.bulk("txt", [(d, {"text": doc["text"]}) for d, doc in DOCS.items()]) == []
    query = {"query": {"match": {"text": "wing"}}}

    def scores() -> dict[str, float]:
        return {h["_id"]: h["_score"] for h in LocalEngine(tmp_path).search("txt", query)["hits"]["hits"]}
    want = scores()
    monkeypatch.setattr(local.BM25, "K1", 2.0)
    other = scores()
    assert other.keys() == want.keys() and all(other[d] != pytest.approx(want[d]) for d in want), \
        "scores cached with k1 1.2 were served for k1 2.0"
    monkeypatch.setattr(local.BM25, "K1", 1.2)
    assert scores() == want
    cache = next((tmp_path / "indices" / "txt" / "cache").glob("bm25-*.npz"))
    log_size = int(np.load(cache)["log_size"])
    np.savez(cache, log_size=np.int64(log_size), analysis=np.frombuffer(local.ANALYSIS, np.uint8),  # before bm25s
             tf=np.ones(3, np.int32), indices=np.arange(3, dtype=np.int32), indptr=np.asarray([0, 3]),
             lengths=np.ones(3, np.int32), terms=np.frombuffer(b'["wing"]', np.uint8))
    assert scores() == want
    arrays = dict(np.load(cache))
    arrays["indptr"] = arrays["indptr"][:-1]  # one column short of the terms
    np.savez(cache, **arrays)
    assert scores() == want


def test_cached_bm25_of_other_analysis_or_damaged_is_rebuilt_and_threads_save_apart(tmp_path, monkeypatch):
    """A BM25 cache written with other analysis (an upgrade changed stop words or stemming) or
    damaged on disk is rebuilt, not served; threads of one process (serve) save without colliding."""
    import threading

    from splade_es.toolkit.engines import local

    engine = LocalEngine(tmp_path)
    engine.create_index("txt", {"mappings": {"properties": {"text": ENGLISH}}})
    assert engine.bulk("txt", [(d, {"text": doc["text"]}) for d, doc in DOCS.items()]) == []
    query = {"query": {"match": {"text": "wing"}}}
    want = [(h["_id"], h["_score"]) for h in engine.search("txt", query)["hits"]["hits"]]
    monkeypatch.setattr(local, "ANALYSIS", b"other analysis")
    rebuilt: list[int] = []
    real_init = local.BM25.__init__
    monkeypatch.setattr(local.BM25, "__init__", lambda self, texts: rebuilt.append(1) or real_init(self, texts))
    assert [(h["_id"], h["_score"]) for h in LocalEngine(tmp_path).search("txt", query)["hits"]["hits"]] == want
    assert rebuilt == [1], "a cache of other analysis was served"
    cached = next((tmp_path / "indices" / "txt" / "cache").glob("bm25-*.npz"))
    cached.write_bytes(b"PK\x03\x04 torn")
    assert [(h["_id"], h["_score"]) for h in LocalEngine(tmp_path).search("txt", query)["hits"]["hits"]] == want
    data = LocalEngine(tmp_path)._data("txt")
    errors: list[BaseException] = []

    def save() -> None:
        try:
            for _ in range(20):
                data._save("bm25-probe", analysis=np.zeros(3, np.uint8))
        except BaseException as exc:  # noqa: BLE001 - any failure of a thread is the finding
            errors.append(exc)

    threads = [threading.Thread(target=save) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
