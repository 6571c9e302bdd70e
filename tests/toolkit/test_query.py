"""Query building, hybrid fusion and search: exactness against the local engine on both real engines."""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SHARED_DATA, engine_url
from splade_es.errors import ConfigError, InputError
from splade_es.toolkit.cli import main
from splade_es.toolkit.engines.base import Capabilities, EngineError
from splade_es.toolkit.engines.connect import connect
from splade_es.toolkit.ingest import set_splade_meta
from splade_es.toolkit.query import fusion
from splade_es.toolkit.query.forms import (TokenPruning, bm25_query, capped, filtered, leaf_clauses, split_heaviest,
                                          supported_forms, vector_query)
from splade_es.toolkit.query.searcher import Searcher
from splade_es.toolkit.query.tuned import describe

CRANFIELD = SHARED_DATA / "cranfield"
N_QUERIES = 60


# ---------------------------------------------------------------- query bodies
def test_each_form_scores_the_dot_product_with_the_engines_own_dsl():
    vector = {"wing": 1.5, "lift": 0.25}
    rank = vector_query(vector, "splade", "rank_feature")["bool"]["should"]
    assert rank == [{"rank_feature": {"field": "splade.wing", "linear": {}, "boost": 1.5}},
                    {"rank_feature": {"field": "splade.lift", "linear": {}, "boost": 0.25}}]
    term = vector_query(vector, "v", "term")["bool"]["should"]
    assert term[1] == {"term": {"v": {"value": "lift", "boost": 0.25}}}
    assert vector_query(vector, "v", "sparse_vector") == {
        "sparse_vector": {"field": "v", "query_vector": vector, "prune": False}}
    assert vector_query(vector, "v", "neural_sparse") == {"neural_sparse": {"v": {"query_tokens": vector}}}
    with pytest.raises(InputError, match="empty"):
        vector_query({}, "v", "term")
    with pytest.raises(ConfigError, match="unknown query form 'saturation'"):
        vector_query(vector, "v", "saturation")


def test_forms_follow_the_detected_capabilities():
    os_like = Capabilities(rank_features=True, sparse_vector_field=False)
    assert supported_forms(os_like, "rank_features") == ["rank_feature"]
    with_plugin = Capabilities(rank_features=True, sparse_vector_field=False, neural_sparse=True)
    assert supported_forms(with_plugin, "rank_features") == ["rank_feature", "neural_sparse"]
    es_core = Capabilities(rank_features=False, sparse_vector_field=True)
    assert supported_forms(es_core, "sparse_vector") == ["term"]
    es_xpack = Capabilities(rank_features=False, sparse_vector_field=True, sparse_vector_query=True)
    assert supported_forms(es_xpack, "sparse_vector") == ["sparse_vector", "term"]


def test_the_clause_limit_keeps_the_heaviest_terms_and_warns(caplog):
    vector = {f"t{i}": float(i + 1) for i in range(10)}
    with caplog.at_level(logging.WARNING, logger="splade_es"):
        kept = capped(vector, 4)
    assert kept == {"t9": 10.0, "t8": 9.0, "t7": 8.0, "t6": 7.0}
    assert "10 terms; kept the 4 heaviest" in caplog.text
    assert len(vector_query(vector, "v", "rank_feature", max_clauses=4)["bool"]["should"]) == 4


# ---------------------------------------------------------------- fusion
def _hits(*ids_scores):
    return [{"_id": doc_id, "_score": score} for doc_id, score in ids_scores]


def test_rrf_and_linear_fusion_match_hand_computed_values():
    bm25, sparse = _hits(("a", 9.0), ("b", 5.0), ("c", 1.0)), _hits(("c", 4.0), ("a", 2.0))
    fused = fusion.rrf([bm25, sparse], rank_constant=60)
    assert [hit["_id"] for _, hit in fused] == ["a", "c", "b"]
    assert fused[0][0] == pytest.approx(1 / 61 + 1 / 62) and fused[1][0] == pytest.approx(1 / 63 + 1 / 61)
    assert fused[2][0] == pytest.approx(1 / 62)
    linear = dict((hit["_id"], score) for score, hit in fusion.linear([bm25, sparse], [0.3, 0.7]))
    # OpenSearch's min-max: bm25 a 1, b 0.5, c 0.001 (the lowest hit is not 0); sparse c 1, a 0.001
    assert linear == pytest.approx({"a": 0.3 + 0.7 * 0.001, "b": 0.15, "c": 0.3 * 0.001 + 0.7}, rel=1e-12)
    single = fusion.linear([_hits(("a", 3.0), ("b", 3.0)), []], [0.5, 0.5])  # equal scores normalise to 1
    assert [score for score, _ in single] == [0.5, 0.5]


def test_native_fusion_bodies_where_the_engine_has_them():
    bm25, sparse = {"match_all": {}}, {"term": {"v": "x"}}
    plain = Capabilities(rank_features=True, sparse_vector_field=False)
    assert fusion.native_body(plain, "rrf", bm25, sparse, 10, 100, 0.5) is None
    es = Capabilities(rank_features=False, sparse_vector_field=True, rrf_retriever=True)
    body = fusion.native_body(es, "rrf", bm25, sparse, 10, 100, 0.5)
    assert body["retriever"]["rrf"]["retrievers"] == [{"standard": {"query": bm25}}, {"standard": {"query": sparse}}]
    assert body["retriever"]["rrf"]["rank_window_size"] == 100 and body["size"] == 10
    assert fusion.native_body(es, "linear", bm25, sparse, 10, 100, 0.5) is None
    # OpenSearch 2.10-2.18: linear natively (each subquery returns size hits: size = window), RRF here
    old = Capabilities(rank_features=True, sparse_vector_field=False, hybrid_query=True)
    assert fusion.native_body(old, "rrf", bm25, sparse, 10, 100, 0.5) is None
    body = fusion.native_body(old, "linear", bm25, sparse, 10, 100, 0.8)
    assert body["query"] == {"hybrid": {"queries": [bm25, sparse]}} and body["size"] == 100
    processor = body["search_pipeline"]["phase_results_processors"][0]["normalization-processor"]
    assert processor["normalization"] == {"technique": "min_max"}
    assert processor["combination"]["parameters"]["weights"] == pytest.approx([0.2, 0.8])
    # 2.19+: RRF too, and the depth per subquery is the window
    new = Capabilities(rank_features=True, sparse_vector_field=False, hybrid_query=True, score_ranker=True)
    body = fusion.native_body(new, "rrf", bm25, sparse, 10, 100, 0.5)
    assert body["query"] == {"hybrid": {"queries": [bm25, sparse], "pagination_depth": 100}} and body["size"] == 10
    assert body["search_pipeline"]["phase_results_processors"] == [
        {"score-ranker-processor": {"combination": {"technique": "rrf", "rank_constant": 60}}}]


def test_opensearch_rrf_needs_2_19_and_the_hybrid_query():
    from splade_es.toolkit.engines.opensearch import OpenSearchEngine

    detect = OpenSearchEngine.detect_capabilities
    assert detect("2.19.0", set(), {"hybrid", "rank_feature"}).score_ranker
    assert detect("3.3.2", set(), {"hybrid"}).score_ranker
    assert not detect("2.18.0", set(), {"hybrid"}).score_ranker
    assert not detect("2.19.6", set(), {"rank_feature"}).score_ranker  # no neural-search plugin
    assert not detect("unknown", set(), {"hybrid"}).score_ranker


def test_leaf_clauses_count_what_lucene_counts():
    sparse = vector_query({f"t{i}": 1.0 for i in range(7)}, "v", "rank_feature")
    assert leaf_clauses(sparse) == 7
    assert leaf_clauses(filtered(sparse, [{"term": {"tag": "x"}}, {"ids": {"values": ["1", "2", "3"]}},
                                          {"bool": {"should": [{"term": {"a": 1}}, {"term": {"a": 2}}]}}])) == 11
    assert leaf_clauses(bm25_query("What is the lift of a wing?", ["title", "text"])) == 2 * 7
    assert leaf_clauses({"match": {"title": {"query": "東京 tower"}}}) == 3  # ideographs one by one


# ---------------------------------------------------------------- against engines
@pytest.fixture(scope="module")
def query_vectors(tiny_mistral_dir) -> list[tuple[str, str, dict[str, float]]]:
    """(id, text, vector) of the first Cranfield queries, encoded by the tiny model."""
    from splade_es.model import SparseEncoder

    queries = [json.loads(line) for line in (CRANFIELD / "queries.jsonl").read_text().splitlines()][:N_QUERIES]
    encoder = SparseEncoder.from_pretrained(str(tiny_mistral_dir), device="cpu")
    vectors = encoder.encode_queries([q["text"] for q in queries], show_progress=False)
    return [(q["_id"], q["text"], v.to_features()) for q, v in zip(queries, vectors)]


def _load(args: list[str], tiny_mistral_dir, cranfield_vectors, tmp_path) -> str:
    index = f"query-{uuid.uuid4().hex[:8]}"
    result = CliRunner().invoke(main, ["ingest", "--index", index, "--corpus", str(CRANFIELD), "--model",
                                       str(tiny_mistral_dir), "--vectors", str(cranfield_vectors), "--no-progress",
                                       "--state-dir", str(tmp_path / "state"), *args])
    assert result.exit_code == 0, result.output
    return index


@pytest.fixture(scope="module")
def local_index(tmp_path_factory, tiny_mistral_dir, cranfield_vectors):
    data_dir = tmp_path_factory.mktemp("local-query")
    index = _load(["--data-dir", str(data_dir)], tiny_mistral_dir, cranfield_vectors, data_dir)
    engine = connect(None, "local", data_dir)
    yield {"engine": engine, "index": index, "args": ["--data-dir", str(data_dir)], "kind": "local"}
    engine.close()


@pytest.fixture(scope="module", params=["local", "opensearch", "elasticsearch"])
def indexed(request, tmp_path_factory, tiny_mistral_dir, cranfield_vectors, local_index):
    """Cranfield loaded (precomputed tiny-model vectors) into each engine, once per module."""
    if request.param == "local":
        yield local_index
        return
    url = engine_url(request.param)
    index = _load(["--url", url], tiny_mistral_dir, cranfield_vectors, tmp_path_factory.mktemp("state"))
    engine = connect(url)
    yield {"engine": engine, "index": index, "args": ["--url", url], "kind": request.param}
    engine.delete_index(index)
    engine.close()


def _overlap(a, b) -> float:
    return len({h.id for h in a.hits} & {h.id for h in b.hits}) / max(len(b.hits), 1)


def test_engine_top10_equals_the_exact_local_top10_for_every_query_form(indexed, local_index, query_vectors):
    vectors = [vector for _, _, vector in query_vectors]
    exact = Searcher(local_index["engine"], local_index["index"]).search_many(vectors, k=10)
    engine = indexed["engine"]
    forms = supported_forms(engine.info.capabilities, Searcher(engine, indexed["index"]).meta.field_type)
    assert forms, "no query form for this engine"
    for form in forms:
        results = Searcher(engine, indexed["index"], form).search_many(vectors, k=10, batch_size=25)
        assert len(results) == N_QUERIES
        overlap = sum(_overlap(got, want) for got, want in zip(results, exact)) / N_QUERIES
        assert overlap >= 0.98, f"{indexed['kind']} {form}: mean top-10 overlap {overlap:.3f}"
        for got, want in zip(results, exact):  # scores: Lucene keeps 9 significant bits
            assert got.hits[0].score == pytest.approx(want.hits[0].score, rel=2 ** -7)


def test_explain_contributions_sum_to_each_hit_score(indexed, query_vectors):
    searcher = Searcher(indexed["engine"], indexed["index"])
    for _, _, vector in query_vectors[:10]:
        result = searcher.search(vector, k=5, explain=True)
        assert len(result.hits) == 5
        for hit in result.hits:
            explained = sum(c.score for c in hit.contributions)
            assert explained == pytest.approx(hit.score, rel=0.01)
            assert all(c.term in vector for c in hit.contributions)


def test_filters_restrict_hits_without_changing_scores(indexed, query_vectors):
    searcher, vector = Searcher(indexed["engine"], indexed["index"]), query_vectors[0][2]
    unfiltered = searcher.search(vector, k=10)
    keep = [unfiltered.hits[1].id, unfiltered.hits[4].id]
    result = searcher.search(vector, k=10, filters=[{"ids": {"values": keep}}], track_total_hits=True)
    assert [h.id for h in result.hits] == keep and result.total == 2
    assert [h.score for h in result.hits] == pytest.approx([unfiltered.hits[1].score, unfiltered.hits[4].score])


@pytest.mark.parametrize("mode", ["rrf", "linear"])
def test_hybrid_fuses_bm25_and_sparse_lists(indexed, query_vectors, mode):
    searcher = Searcher(indexed["engine"], indexed["index"])
    _, text, vector = query_vectors[2]
    result = searcher.search(vector, k=10, hybrid=mode, text=text, sparse_weight=0.6, window=50)
    engine, index = indexed["engine"], indexed["index"]
    bm25 = engine.search(index, searcher.body(searcher.bm25_query(text), 50))["hits"]["hits"]
    sparse = engine.search(index, searcher.body(searcher.sparse_query(vector), 50))["hits"]["hits"]
    assert bm25 and sparse
    expected = fusion.fuse(mode, [bm25, sparse], 0.6)[:10]
    assert result.fused_natively == (fusion.native(engine.info.capabilities, mode) is not None)
    assert [h.id for h in result.hits] == [hit["_id"] for _, hit in expected]
    assert [h.score for h in result.hits] == pytest.approx([score for score, _ in expected])


# ---------------------------------------------------------------- CLI
def _search(target, *args):
    return CliRunner().invoke(main, ["search", "--index", target["index"], *target["args"], *args])


def test_search_cli_json_explains_hits_and_marks_expansions(indexed, query_vectors):
    result = _search(indexed, "--json", "--explain", "--k", "3", query_vectors[5][1])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["index"] == indexed["index"] and data["engine"]["kind"] == indexed["kind"]
    assert [h["rank"] for h in data["hits"]] == [1, 2, 3]
    assert data["query_vector"].keys() == query_vectors[5][2].keys()
    for hit in data["hits"]:
        assert hit["explained_score"] == pytest.approx(hit["score"], rel=0.01)
        assert all(isinstance(c["expansion"], bool) for c in hit["contributions"])
    text = _search(indexed, "--explain", "--k", "2", query_vectors[5][1])
    assert text.exit_code == 0 and "terms (sum" in text.stdout and "'+' marks expansion terms" in text.stdout


def test_query_top_k_prunes_in_the_encoder(local_index, query_vectors):
    result = _search(local_index, "--json", "--query-top-k", "7", query_vectors[0][1])
    assert result.exit_code == 0, result.output
    vector = json.loads(result.stdout)["query_vector"]
    full = query_vectors[0][2]
    assert set(vector) == set(sorted(full, key=full.get, reverse=True)[:7])


def test_max_clauses_caps_with_a_warning(local_index, query_vectors):
    result = _search(local_index, "--json", "--max-clauses", "5", query_vectors[0][1])
    assert result.exit_code == 0, result.output
    assert "warning: the query has 128 terms; kept the 5 heaviest" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["   "], "the query is empty"),
    (["--query-min-weight", "50", "wing"], "has no terms left after pruning"),
    (["--index", "no-such-index", "wing"], "no index or alias named 'no-such-index'"),
])
def test_bad_search_input_is_one_clear_line(local_index, args, message):
    result = _search(local_index, *args)
    assert result.exit_code == 1 and message in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_an_index_built_by_another_model_is_refused(local_index, cranfield_vectors, tmp_path, tiny_mistral_dir):
    args = ["--data-dir", local_index["args"][1]]
    result = CliRunner().invoke(main, ["ingest", "--index", "other", "--vectors", str(cranfield_vectors),
                                       "--model", "someone/else", "--no-progress", "--state-dir", str(tmp_path), *args])
    assert result.exit_code == 0, result.output
    refused = CliRunner().invoke(main, ["search", "--index", "other", "--model", str(tiny_mistral_dir), *args, "wing"])
    assert refused.exit_code == 1 and "was built by model 'someone/else'" in refused.output


def test_an_engine_that_is_down_is_one_clear_line(tiny_mistral_dir):
    result = CliRunner().invoke(main, ["search", "--index", "x", "--url", "http://127.0.0.1:1", "wing"])
    assert result.exit_code == 1 and "cannot reach the engine at http://127.0.0.1:1" in result.output


def test_explain_cli_marks_text_terms_and_expansions(tiny_mistral_dir):
    from splade_es.model import SparseEncoder

    text = "boundary layer of a wing"
    result = CliRunner().invoke(main, ["explain", "--model", str(tiny_mistral_dir), "--json", "--top-k", "400", text])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["features"] == len(data["terms"]) == 400 and data["kind"] == "query"
    own = {t.lower() for t in SparseEncoder.from_pretrained(str(tiny_mistral_dir), device="cpu").text_features(text)}
    for term in data["terms"]:
        assert term["expansion"] == (term["term"].removeprefix("##").lower() not in own)
    assert data["expansions"] == sum(t["expansion"] for t in data["terms"])
    weights = [t["weight"] for t in data["terms"]]
    assert weights == sorted(weights, reverse=True)
    table = CliRunner().invoke(main, ["explain", "--model", str(tiny_mistral_dir), "--limit", "5", text])
    assert table.exit_code == 0 and len(table.stdout.strip().splitlines()) == 7  # summary, header, 5 rows
    assert "█" in table.stdout
    empty = CliRunner().invoke(main, ["explain", "--model", str(tiny_mistral_dir), " "])
    assert empty.exit_code == 1 and "the text is empty" in empty.output


def test_two_phase_scores_are_exact_and_a_full_window_is_the_exact_ranking(indexed, local_index, query_vectors):
    engine, index = indexed["engine"], indexed["index"]
    exact = Searcher(local_index["engine"], local_index["index"])
    vectors = [vector for _, _, vector in query_vectors[:15]]
    want = exact.search_many(vectors, k=10)
    whole = Searcher(engine, index, two_phase=16, two_phase_window=1400).search_many(vectors, k=10)
    overlap = sum(_overlap(got, ref) for got, ref in zip(whole, want)) / len(vectors)
    assert overlap >= 0.98
    narrow = Searcher(engine, index, two_phase=8, two_phase_window=20)
    body = narrow.sparse_body(vectors[0], 10)
    head, tail = split_heaviest(vectors[0], 8)
    assert len(head) == 8 and len(tail) == len(vectors[0]) - 8 > 0
    assert body["query"] == narrow.sparse_query(head)
    assert body["rescore"] == {"window_size": 20, "query": {
        "rescore_query": vector_query(tail, narrow.meta.field, narrow.form), "query_weight": 1.0,
        "rescore_query_weight": 1.0, "score_mode": "total"}}
    for vector, result in zip(vectors, narrow.search_many(vectors, k=10)):
        for hit in result.hits:  # inside the window every score is the full dot product
            assert hit.score == pytest.approx(exact.search(vector, k=1, filters=[{"ids": {"values": [hit.id]}}])
                                              .hits[0].score, rel=2 ** -7)


# ---------------------------------------------------------------- hybrid on every version, clause limit
def _require(condition: bool, message: str) -> None:
    """A prerequisite of the node: missing, it fails under CI and skips elsewhere (as conftest's engines)."""
    if not condition:
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def _same_ranking(got, want) -> None:
    """Same scores rank by rank, and the same documents wherever a score is not tied."""
    scores = [h.score for h in want.hits]
    assert [h.score for h in got.hits] == pytest.approx(scores, rel=1e-5)
    for rank, hit in enumerate(want.hits):
        if scores.count(hit.score) == 1:
            assert got.hits[rank].id == hit.id


@pytest.mark.parametrize("indexed", ["opensearch"], indirect=True)
@pytest.mark.parametrize("mode", ["rrf", "linear"])
def test_native_and_client_side_fusion_give_the_same_top10_on_opensearch(indexed, query_vectors, mode):
    engine, index = indexed["engine"], indexed["index"]
    capabilities = engine.info.capabilities
    # The neural-search plugin (hybrid query, score-ranker-processor) is not on Maven Central, so the CI node
    # cannot have it: a loud skip with the reason, reported by -ra, not a failure nobody can fix here.
    if not (capabilities.hybrid_query and (mode == "linear" or capabilities.score_ranker)):
        pytest.skip(f"OpenSearch {engine.info.version} at {engine.info.location} has no hybrid query"
                    f"{' with the score-ranker-processor (2.19+)' if mode == 'rrf' else ''} (the neural-search "
                    "plugin): native fusion cannot be compared with client-side fusion")
    native, client = Searcher(engine, index), Searcher(engine, index, native_fusion=False)
    for _, text, vector in query_vectors[:50]:
        got = native.search(vector, k=10, hybrid=mode, text=text, window=100)
        want = client.search(vector, k=10, hybrid=mode, text=text, window=100)
        assert got.fused_natively and not want.fused_natively
        _same_ranking(got, want)


def test_hybrid_and_filtered_queries_stay_under_the_clause_limit(indexed, query_vectors, cranfield_vectors):
    """A 1024-term query plus a filter plus BM25: every request stays within the 1024 leaf
    clauses Lucene allows in one query (nested ones count, TooManyNestedClauses)."""
    vocabulary: dict[str, float] = {}
    for line in cranfield_vectors.read_text().splitlines():
        for term, weight in json.loads(line)["features"].items():
            vocabulary[term] = max(vocabulary.get(term, 0.0), weight)
    vector = dict(sorted(vocabulary.items(), key=lambda item: (-item[1], item[0]))[:1024])
    assert len(vector) == 1024
    engine, index, text = indexed["engine"], indexed["index"], query_vectors[0][1]
    keep = [str(i) for i in range(1, 701)]
    filters = [{"ids": {"values": keep}}]
    searcher = Searcher(engine, index)
    plain = searcher.search(vector, k=10, filters=filters)
    assert plain.query_terms == 1023 and len(plain.hits) == 10 and {h.id for h in plain.hits} <= set(keep)
    for mode in fusion.MODES:
        bodies, _ = searcher.hybrid_bodies(vector, text, 10, mode, filters)
        assert all(leaf_clauses(body["query"]) <= 1024 for body in bodies if "query" in body)
        hybrid = searcher.search(vector, k=10, filters=filters, hybrid=mode, text=text)
        assert len(hybrid.hits) == 10 and {h.id for h in hybrid.hits} <= set(keep)
    if indexed["kind"] != "opensearch":
        return
    # OpenSearch's hybrid query holds both lists in one query: BM25's clauses come off the sparse ones.
    with connect(indexed["args"][1]) as hybrid_engine:
        hybrid_engine.info = replace(hybrid_engine.info, capabilities=replace(
            engine.info.capabilities, hybrid_query=True, score_ranker=True))
        [body], native = Searcher(hybrid_engine, index).hybrid_bodies(vector, text, 10, "rrf", filters)
    assert native
    bm25_part, sparse_part = body["query"]["hybrid"]["queries"]
    assert leaf_clauses(bm25_part) + leaf_clauses(sparse_part) <= 1024
    one_query = {"size": 1, "query": {"bool": {"filter": [bm25_part, sparse_part]}}}  # Lucene counts it as hybrid does
    engine.search(index, one_query)
    unbudgeted = {"size": 1, "query": {"bool": {"filter": [bm25_part, searcher.sparse_query(vector, filters)]}}}
    with pytest.raises(EngineError, match="too_many_nested_clauses"):
        engine.search(index, unbudgeted)


# ---------------------------------------------------------------- Elasticsearch's token pruning
def test_token_pruning_parses_and_refuses_out_of_range_values():
    assert TokenPruning.parse(" 5, 0.4 ") == TokenPruning.parse("5.0,0.4") == TokenPruning(5, 0.4)
    config = TokenPruning.parse("3,0.25").config(True)
    assert config == {"tokens_freq_ratio_threshold": 3, "tokens_weight_threshold": 0.25,
                      "only_score_pruned_tokens": True}
    assert type(config["tokens_freq_ratio_threshold"]) is int  # the engine reads an integer
    whole = "whole number from 1 to 100"
    for text, message in [("5", "FREQ_RATIO,WEIGHT"), ("5,0.4,1", "FREQ_RATIO,WEIGHT"), ("a,0.4", "FREQ_RATIO"),
                          ("2.5,0.4", whole), ("0.5,0.4", whole), ("101,0.4", whole), ("nan,0.4", whole),
                          ("inf,0.4", whole), ("5,1.5", "between 0 and 1"), ("5,-0.1", "between 0 and 1"),
                          ("5,nan", "between 0 and 1")]:
        with pytest.raises(ConfigError, match=message):
            TokenPruning.parse(text)
    with pytest.raises(ConfigError, match=whole):
        TokenPruning(True, 0.4)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not of rank_feature"):
        vector_query({"a": 1.0}, "v", "rank_feature", pruning=TokenPruning())


def _stored_statistics(engine, index: str, field: str) -> tuple[dict[str, int], int, float]:
    """Document frequency per token, documents with the field, and Elasticsearch's average token
    frequency ratio (sum of document frequencies / documents / distinct tokens: one segment)."""
    reply = engine.search(index, {"query": {"exists": {"field": field}}, "size": 10_000, "_source": [field],
                                  "track_total_hits": True})
    frequency: dict[str, int] = {}
    for hit in reply["hits"]["hits"]:
        for token in hit["_source"][field]:
            frequency[token] = frequency.get(token, 0) + 1
    documents = len(reply["hits"]["hits"])
    assert documents == reply["hits"]["total"]["value"], "every document's vector is counted"
    return frequency, documents, sum(frequency.values()) / documents / len(frequency)


def _kept_tokens(vector: dict[str, float], pruning: TokenPruning, statistics) -> dict[str, float]:
    """The tokens Elasticsearch keeps, computed here from the stored vectors (float32, as Java)."""
    frequency, documents, average = statistics
    best = np.float32(max(vector.values()))
    kept = {}
    for token, weight in vector.items():
        count = frequency.get(token, 0)
        rare = np.float32(count) / np.float32(documents) < np.float32(pruning.freq_ratio) * np.float32(average)
        if count and (rare or np.float32(weight) > np.float32(pruning.weight) * best):
            kept[token] = weight
    return kept


@pytest.mark.parametrize("indexed", ["elasticsearch"], indirect=True)
def test_token_pruned_query_scores_the_tokens_an_independent_count_keeps(indexed, local_index, query_vectors):
    """The engine's pruned first phase, checked against a reimplementation of its rule on the
    stored vectors: same top 10 and scores as the exact search over the tokens kept here."""
    engine, index = indexed["engine"], indexed["index"]
    engine.force_merge(index, 1)  # the average below is exact on one segment
    searcher, exact = Searcher(engine, index), Searcher(local_index["engine"], local_index["index"])
    statistics = _stored_statistics(engine, index, searcher.meta.field)
    vectors = [vector for _, _, vector in query_vectors[:20]]
    for pruning in (TokenPruning(1, 1.0), TokenPruning(1, 0.8), TokenPruning(2, 0.9)):
        kept = [_kept_tokens(vector, pruning, statistics) for vector in vectors]
        indexed_tokens = [[t for t in v if statistics[0].get(t, 0)] for v in vectors]  # unindexed ones score 0 anyway
        dropped = sum(len(v) - len(k) for v, k in zip(indexed_tokens, kept))
        assert dropped > 0 and all(kept), f"{pruning}: the check needs tokens dropped ({dropped}) and some kept"
        for vector, tokens in zip(vectors, kept):
            query = vector_query(vector, searcher.meta.field, "sparse_vector", pruning=pruning)
            hits = engine.search(index, {"query": query, "size": 10, "_source": False})["hits"]["hits"]
            want = exact.search(tokens, k=10)
            assert [h["_score"] for h in hits] == pytest.approx([h.score for h in want.hits], rel=2 ** -7)
            _same_top_10({h["_id"]: h["_score"] for h in hits}, {h.id: h.score for h in want.hits})


def _same_top_10(got: dict[str, float], want: dict[str, float]) -> None:
    """The two top tens hold the same documents, except ones tied with the tenth score."""
    tenth = min(want.values())
    differ = [score for doc, score in got.items() if doc not in want]
    differ += [score for doc, score in want.items() if doc not in got]
    assert all(score == pytest.approx(tenth, rel=2 ** -7) for score in differ), (got, want)


@pytest.mark.parametrize("indexed", ["elasticsearch"], indirect=True)
def test_token_pruning_rescores_the_window_to_exact_scores(indexed, local_index, query_vectors):
    engine, index = indexed["engine"], indexed["index"]
    exact = Searcher(local_index["engine"], local_index["index"])
    vectors = [vector for _, _, vector in query_vectors[:15]]
    pruning = TokenPruning(1, 0.5)
    whole = Searcher(engine, index, two_phase_window=1400, token_pruning=pruning).search_many(vectors, k=10)
    want = exact.search_many(vectors, k=10)
    assert sum(_overlap(got, ref) for got, ref in zip(whole, want)) / len(vectors) >= 0.98
    narrow = Searcher(engine, index, two_phase_window=20, token_pruning=pruning)
    body = narrow.sparse_body(vectors[0], 10, filters=[{"ids": {"values": ["1", "2"]}}])
    assert body["query"]["bool"]["filter"] == [{"ids": {"values": ["1", "2"]}}]
    first = body["query"]["bool"]["must"][0]["sparse_vector"]
    second = body["rescore"]["query"]["rescore_query"]["sparse_vector"]
    assert first["prune"] is second["prune"] is True and first["query_vector"] == second["query_vector"] == vectors[0]
    assert first["pruning_config"]["only_score_pruned_tokens"] is False
    assert second["pruning_config"]["only_score_pruned_tokens"] is True and body["rescore"]["window_size"] == 20
    assert narrow.sparse_body(vectors[0], 50)["rescore"]["window_size"] == 50  # every hit returned is rescored
    for vector, result in zip(vectors, narrow.search_many(vectors, k=10)):
        for hit in result.hits:  # inside the window every score is the full dot product
            assert hit.score == pytest.approx(exact.search(vector, k=1, filters=[{"ids": {"values": [hit.id]}}])
                                              .hits[0].score, rel=2 ** -7)


@pytest.mark.parametrize("indexed", ["elasticsearch"], indirect=True)
def test_token_pruning_replaces_a_tuned_two_phase_and_refuses_an_explicit_one(indexed, query_vectors):
    engine, index = indexed["engine"], indexed["index"]
    with pytest.raises(ConfigError, match="both rescore the top hits: choose one"):
        Searcher(engine, index, two_phase=8, token_pruning=TokenPruning())
    searcher = Searcher(engine, index, two_phase=0, token_pruning=TokenPruning(3, 0.2))
    assert searcher.settings == {"two_phase": None, "two_phase_window": 100,
                                 "token_pruning": {"freq_ratio": 3, "weight": 0.2}}
    set_splade_meta(engine, index, "tuned", {"two_phase": 8, "two_phase_window": 50})
    try:
        assert Searcher(engine, index).two_phase == 8
        assert "token pruning" not in describe(Searcher(engine, index).settings, Searcher(engine, index).sources, None)
        given_way = Searcher(engine, index, token_pruning=TokenPruning())
        # The window tuned for two-phase search is not this method's: the default is.
        assert given_way.two_phase is None and given_way.two_phase_window == 100
        assert given_way.sources == {"two_phase_window": "default", "token_pruning": "flag"}
        rescored = given_way.sparse_body(query_vectors[0][2], 10)["rescore"]["query"]["rescore_query"]
        assert rescored["sparse_vector"]["pruning_config"]["only_score_pruned_tokens"] is True
        described = describe(given_way.settings, given_way.sources, None)
        assert described == "window 100 (default), token pruning 5,0.4 (flag)"
        assert Searcher(engine, index, two_phase_window=30, token_pruning=TokenPruning()).two_phase_window == 30
    finally:
        set_splade_meta(engine, index, "tuned", None)


@pytest.mark.parametrize("indexed", ["elasticsearch"], indirect=True)
def test_token_pruned_queries_keep_to_the_clause_limit(indexed):
    engine, index = indexed["engine"], indexed["index"]
    long_vector = {f"t{i}": 1.0 + i / 2000 for i in range(1500)}
    for limit, terms in ((2000, 1500), (5, 5)):
        body = Searcher(engine, index, max_clauses=limit, token_pruning=TokenPruning()).sparse_body(long_vector, 10)
        first = body["query"]["sparse_vector"]["query_vector"]
        assert len(first) == len(body["rescore"]["query"]["rescore_query"]["sparse_vector"]["query_vector"]) == terms


@pytest.mark.parametrize("indexed", ["local", "opensearch"], indirect=True)
def test_token_pruning_where_the_engine_has_no_such_query_is_one_clear_line(indexed):
    with pytest.raises(ConfigError, match="token pruning is Elasticsearch's sparse_vector query option"):
        Searcher(indexed["engine"], indexed["index"], token_pruning=TokenPruning())


def test_search_and_eval_cli_take_token_pruning(indexed, query_vectors, tiny_mistral_dir):
    text = query_vectors[0][1]
    args = ["--index", indexed["index"], *indexed["args"], "--model", str(tiny_mistral_dir)]
    bad = CliRunner().invoke(main, ["search", *args, "--token-pruning", "5", text])
    assert bad.exit_code == 2 and "FREQ_RATIO,WEIGHT" in bad.output
    found = CliRunner().invoke(main, ["search", *args, "--token-pruning", "2,0.5", "--json", text])
    if indexed["kind"] != "elasticsearch":
        assert found.exit_code == 1 and found.output.count("\n") == 1, found.output
        assert "Error: token pruning is Elasticsearch's sparse_vector query option" in found.output
        return
    assert found.exit_code == 0, found.output
    report = json.loads(found.output)
    assert report["settings"]["token_pruning"] == {"value": {"freq_ratio": 2, "weight": 0.5}, "source": "flag"}
    assert len(report["hits"]) == 10
    scored = CliRunner().invoke(main, ["eval", "--dataset", str(CRANFIELD), *args, "--token-pruning", "2,0.5",
                                       "--k", "10", "--no-progress"])
    assert scored.exit_code == 0, scored.output
    assert "token pruning 2,0.5 (flag)" in scored.output
