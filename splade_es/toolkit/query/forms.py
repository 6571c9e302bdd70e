"""From a query vector to the engine-native query that scores the exact dot product.

| form | field | query |
|---|---|---|
| ``rank_feature`` | ``rank_features`` | ``bool.should`` of ``rank_feature`` with ``linear`` and ``boost = weight`` |
| ``sparse_vector`` | ``sparse_vector`` | the x-pack ``sparse_vector`` query, ``"prune": false`` |
| ``term`` | ``sparse_vector`` | ``bool.should`` of boosted ``term`` clauses (every ES build) |
| ``neural_sparse`` | ``rank_features`` | OpenSearch neural-search ``query_tokens`` |

``saturation`` (the ``rank_feature`` default) is not a dot product, hence ``linear``; newer
Elasticsearch prunes ``sparse_vector`` queries unless told not to, hence ``prune: false``.

Two-phase search (optional) runs the heaviest terms as the query and adds the rest through
``rescore`` on a window of candidates: exact scores inside the window, at about the cost of the
short query (a long disjunction is what makes learned sparse queries slow).

Token pruning (Elasticsearch 8.15+, ``sparse_vector`` only) is the engine's own two-phase
search: each shard leaves out of the query the tokens that are frequent in its index and light in
the query (:class:`TokenPruning`), and a rescore with only those tokens makes the window's scores
exact again. Which terms are costly is the engine's knowledge (document frequencies), so it can
beat cutting by weight alone.

The clause limit (``indices.query.bool.max_clause_count``) counts every leaf query of the whole
query, nested ones included (Lucene's ``TooManyNestedClauses``), so the sparse query gets what
its filters (and, in one hybrid query, BM25) leave: see :func:`leaf_clauses`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from splade_es.errors import ConfigError, InputError
from splade_es.toolkit.engines.base import Capabilities

FORMS = ("rank_feature", "sparse_vector", "term", "neural_sparse")
DEFAULT_MAX_CLAUSES = 1024  # indices.query.bool.max_clause_count on OpenSearch; ES derives >= 1024 from heap

_log = logging.getLogger(__name__)
# A word, or one CJK character (the standard tokenizer splits ideographs and kana one by one).
_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]|[^\W\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]+")


def supported_forms(capabilities: Capabilities, field_type: str) -> list[str]:
    """The exact query forms this engine runs on a ``field_type`` field, preferred first."""
    if field_type == "rank_features":
        forms = ["rank_feature"] if capabilities.rank_features else []
        return forms + (["neural_sparse"] if capabilities.neural_sparse else [])
    if field_type == "sparse_vector":
        return (["sparse_vector"] if capabilities.sparse_vector_query else []) + ["term"]
    raise ConfigError(f"unknown vector field type {field_type!r}")


def choose_form(capabilities: Capabilities, field_type: str, requested: str | None, where: str) -> str:
    forms = supported_forms(capabilities, field_type)
    if requested is None:
        if not forms:
            raise ConfigError(f"{where} has no query that scores a {field_type} field")
        return forms[0]
    if requested not in forms:
        raise ConfigError(f"{where} cannot run the {requested} query on a {field_type} field "
                          f"(it can: {', '.join(forms) or 'none'})")
    return requested


@dataclass(frozen=True)
class TokenPruning:
    """Elasticsearch's ``pruning_config``: a query token is left out when its document frequency
    is over ``freq_ratio`` times the field's average AND its weight is under ``weight`` times the
    query's heaviest (Elastic's defaults: 5 and 0.4). Bounds are the engine's own; at weight 1 no
    token is heavy enough to be kept by weight, so frequency alone decides."""

    freq_ratio: int = 5
    weight: float = 0.4

    def __post_init__(self) -> None:
        ratio = self.freq_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, int) or not 1 <= ratio <= 100:
            # Elasticsearch reads the ratio as an integer and would cut 2.5 to 2 without a word.
            raise ConfigError(f"token pruning's frequency ratio must be a whole number from 1 to 100, not {ratio:g}")
        if not 0 <= self.weight <= 1:
            raise ConfigError(f"token pruning's weight ratio must be between 0 and 1, not {self.weight:g}")

    @classmethod
    def parse(cls, text: str) -> TokenPruning:
        """``"FREQ_RATIO,WEIGHT"``, e.g. ``"5,0.4"``."""
        parts = [part.strip() for part in text.split(",")]
        try:
            ratio, weight = (float(part) for part in parts)
        except ValueError:
            raise ConfigError(f"token pruning takes FREQ_RATIO,WEIGHT (e.g. 5,0.4), not {text!r}") from None
        return cls(int(ratio) if ratio.is_integer() else ratio, weight)  # a fraction is refused there

    @property
    def label(self) -> str:
        """``"5,0.4"``: how flags and reports name it."""
        return f"{self.freq_ratio},{self.weight:g}"

    def config(self, only_pruned: bool) -> dict[str, Any]:
        """The query's ``pruning_config``: the kept tokens, or (``only_pruned``) the left-out ones."""
        return {"tokens_freq_ratio_threshold": self.freq_ratio, "tokens_weight_threshold": self.weight,
                "only_score_pruned_tokens": only_pruned}


def capped(vector: Mapping[str, float], max_clauses: int) -> dict[str, float]:
    """The vector, or its ``max_clauses`` heaviest terms with a warning: engines refuse longer
    boolean queries outright (``too_many_clauses``), a slightly shorter query still ranks."""
    if len(vector) <= max_clauses:
        return dict(vector)
    kept = sorted(vector.items(), key=lambda item: (-item[1], item[0]))[:max_clauses]
    _log.warning("the query has %d terms; kept the %d heaviest (the engine's clause limit)", len(vector), max_clauses)
    return dict(kept)


def vector_query(vector: Mapping[str, float], field: str, form: str,
                 max_clauses: int = DEFAULT_MAX_CLAUSES, pruning: TokenPruning | None = None,
                 only_pruned: bool = False) -> dict[str, Any]:
    """The query clause whose score is ``sum_j q_j * d_j`` over the stored vector ``field``;
    with ``pruning``, the sum over the tokens the engine keeps (or, ``only_pruned``, leaves out)."""
    if not vector:
        raise InputError("the query vector is empty: nothing to search for")
    terms = capped(vector, max_clauses)
    if pruning is not None:
        if form != "sparse_vector":
            raise ConfigError(f"token pruning is an option of the sparse_vector query, not of {form}")
        return {"sparse_vector": {"field": field, "query_vector": terms, "prune": True,
                                  "pruning_config": pruning.config(only_pruned)}}
    if form == "rank_feature":
        return {"bool": {"should": [{"rank_feature": {"field": f"{field}.{term}", "linear": {}, "boost": weight}}
                                    for term, weight in terms.items()]}}
    if form == "term":
        return {"bool": {"should": [{"term": {field: {"value": term, "boost": weight}}}
                                    for term, weight in terms.items()]}}
    if form == "sparse_vector":
        return {"sparse_vector": {"field": field, "query_vector": terms, "prune": False}}
    if form == "neural_sparse":
        return {"neural_sparse": {field: {"query_tokens": terms}}}
    raise ConfigError(f"unknown query form {form!r}: choose {', '.join(FORMS)}")


def split_heaviest(vector: Mapping[str, float], n: int) -> tuple[dict[str, float], dict[str, float]]:
    """The ``n`` heaviest terms, and the rest."""
    ordered = sorted(vector.items(), key=lambda item: (-item[1], item[0]))
    return dict(ordered[:n]), dict(ordered[n:])


def rescore(query: dict[str, Any], window: int) -> dict[str, Any]:
    """Add ``query``'s score to each of the top ``window`` hits: with the query's remaining terms,
    the window's scores become the exact full dot product (two-phase search)."""
    return {"window_size": window, "query": {"rescore_query": query, "query_weight": 1.0,
                                             "rescore_query_weight": 1.0, "score_mode": "total"}}


def bm25_query(text: str, fields: list[str]) -> dict[str, Any]:
    """BEIR's Elasticsearch baseline: ``multi_match`` ``best_fields`` with ``tie_breaker`` 0.5."""
    return {"multi_match": {"query": text, "fields": fields, "type": "best_fields", "tie_breaker": 0.5}}


def filtered(query: dict[str, Any], filters: list[dict[str, Any]]) -> dict[str, Any]:
    """Restrict ``query`` to documents matching every filter, without changing scores."""
    return {"bool": {"must": [query], "filter": filters}} if filters else query


def leaf_clauses(query: Mapping[str, Any]) -> int:
    """The leaf queries Lucene counts against the clause limit in ``query``: a ``bool`` counts
    its clauses' leaves; a ``match`` / ``multi_match`` at most one per word and field (the
    analyser may drop stop words, never adds words); any other query one."""
    (kind, spec), = query.items()
    if kind == "bool":
        return sum(leaf_clauses(clause) for occur in ("must", "filter", "should", "must_not")
                   for clause in _as_list(spec.get(occur)))
    if kind == "multi_match":
        return text_tokens(str(spec.get("query", ""))) * max(len(spec.get("fields") or []), 1)
    if kind == "match":
        value = next(iter(spec.values()))
        return text_tokens(str(value.get("query", "") if isinstance(value, dict) else value))
    return 1


def text_tokens(text: str) -> int:
    """An upper bound on the tokens a text analyser makes of ``text``."""
    return len(_TOKEN.findall(text))


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
