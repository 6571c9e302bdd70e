"""Metric values against hand-computed fixtures (trec_eval's linear-gain nDCG, MRR cut at 10)."""

from __future__ import annotations

import math

import pytest

from splade_es.toolkit.eval.metrics import evaluate, top

LOG2_3 = math.log2(3)


def test_metrics_match_hand_computed_values():
    qrels = {"q1": {"d1": 2, "d2": 1, "d3": 0}, "q2": {"d4": 1}}
    run = {"q1": {"d2": 3.0, "d1": 2.0, "d5": 1.0}, "q2": {"d9": 3.0, "d4": 2.0}}
    means, per_query = evaluate(qrels, run)
    # q1: DCG = 1/log2(2) + 2/log2(3); ideal = 2/log2(2) + 1/log2(3)
    ndcg_q1 = (1 + 2 / LOG2_3) / (2 + 1 / LOG2_3)
    assert per_query["q1"]["ndcg@10"] == pytest.approx(ndcg_q1, abs=1e-6)
    assert per_query["q2"]["ndcg@10"] == pytest.approx(1 / LOG2_3, abs=1e-6)
    assert per_query["q1"]["mrr@10"] == 1.0 and per_query["q2"]["mrr@10"] == 0.5
    assert per_query["q1"]["map"] == pytest.approx(1.0) and per_query["q2"]["map"] == pytest.approx(0.5)
    assert per_query["q1"]["recall@100"] == 1.0 and per_query["q2"]["recall@100"] == 1.0
    assert means["ndcg@10"] == pytest.approx((ndcg_q1 + 1 / LOG2_3) / 2, abs=1e-6)
    assert means["mrr@10"] == pytest.approx(0.75)


def test_mrr_is_cut_at_ten_while_recall_looks_deeper():
    qrels = {"q": {"hit": 1}}
    run = {"q": {**{f"miss{i:02d}": 100.0 - i for i in range(10)}, "hit": 50.0}}  # the hit is 11th
    _, per_query = evaluate(qrels, run)
    assert per_query["q"]["mrr@10"] == 0.0
    assert per_query["q"]["recall@100"] == 1.0
    assert per_query["q"]["map"] == pytest.approx(1 / 11)


def test_the_query_itself_is_ignored_as_beir_does():
    qrels = {"arg1": {"counter1": 1}}
    run = {"arg1": {"arg1": 9.0, "counter1": 5.0}}
    _, per_query = evaluate(qrels, run)
    assert per_query["arg1"]["mrr@10"] == 1.0 and per_query["arg1"]["ndcg@10"] == pytest.approx(1.0)
    _, kept = evaluate(qrels, run, ignore_identical_ids=False)
    assert kept["arg1"]["mrr@10"] == 0.5


def test_a_query_without_hits_scores_zero_and_counts_in_the_mean():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    means, per_query = evaluate(qrels, {"q1": {"d1": 1.0}, "q2": {}})
    assert per_query["q2"] == {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0, "map": 0.0}
    assert means["ndcg@10"] == pytest.approx(0.5) and means["mrr@10"] == pytest.approx(0.5)


def test_ties_are_cut_in_trec_eval_order():
    assert list(top({"a": 1.0, "c": 1.0, "b": 2.0}, 2)) == ["b", "c"]
