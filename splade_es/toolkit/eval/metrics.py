"""Retrieval metrics from pytrec_eval (the evaluator BEIR uses), never by hand.

- nDCG@10 (``ndcg_cut_10``), Recall@100 (``recall_100``), MAP (``map``) on the whole run;
- MRR@10: pytrec_eval's ``recip_rank`` looks down the whole list, so it is computed on the
  run cut to its top 10 (in trec_eval's own order: score, then document id, both descending).

As BEIR does, a retrieved document whose id equals the query's id is dropped first (ArguAna,
Quora: a query is also a corpus document). A judged query with no hits scores 0 on every
metric and still counts in the mean.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytrec_eval

Run = dict[str, dict[str, float]]
METRICS = ("ndcg@10", "recall@100", "mrr@10", "map")
_MEASURES = {"ndcg_cut.10", "recall.100", "map"}
_NAMES = {"ndcg_cut_10": "ndcg@10", "recall_100": "recall@100", "map": "map"}


def without_self_hits(run: Run) -> Run:
    return {qid: {did: score for did, score in docs.items() if did != qid} for qid, docs in run.items()}


def top(docs: Mapping[str, float], k: int) -> dict[str, float]:
    """The first ``k`` documents in trec_eval's ranking order."""
    ordered = sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)
    return dict(ordered[:k])


def evaluate(qrels: Mapping[str, Mapping[str, int]], run: Run, ignore_identical_ids: bool = True
             ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """``(mean over judged queries, per query)`` for :data:`METRICS`."""
    if ignore_identical_ids:
        run = without_self_hits(run)
    judged = {qid: dict(docs) for qid, docs in qrels.items()}
    present = {qid: docs for qid, docs in run.items() if qid in judged and docs}
    per_query = {qid: dict.fromkeys(METRICS, 0.0) for qid in judged}
    if present:
        full = pytrec_eval.RelevanceEvaluator(judged, _MEASURES).evaluate(present)
        cut = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(
            {qid: top(docs, 10) for qid, docs in present.items()})
        for qid, values in full.items():
            per_query[qid].update({_NAMES[name]: float(value) for name, value in values.items() if name in _NAMES})
            per_query[qid]["mrr@10"] = float(cut[qid]["recip_rank"])
    count = len(per_query)
    means = {name: (sum(values[name] for values in per_query.values()) / count if count else 0.0) for name in METRICS}
    return means, per_query
