"""BEIR's BM25 baseline rebuilt outside any engine, with bm25s: the independent check that the
engines' BM25 (tests) and its variants (``benchmarks/bm25_beir.py``) are measured against.

Lucene's BM25 (k1 1.2, b 0.75) per field over English-stemmed, stop-worded tokens, the ``title``
and ``text`` fields combined as ``multi_match`` ``best_fields`` with ``tie_breaker`` 0.5.
Stemming needs PyStemmer (the ``dev`` extra).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from splade_es.io.corpus import Document


def beir_bm25_run(documents: Sequence[Document], queries: Mapping[str, str],
                  depth: int = 1000) -> dict[str, dict[str, float]]:
    """``{query id: {doc id: score}}``, the top ``depth`` documents with a positive score."""
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    fields = []
    for name in ("title", "text"):
        retriever = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
        retriever.index(bm25s.tokenize([d.fields.get(name) or "" for d in documents], stopwords="en",
                                       stemmer=stemmer, show_progress=False), show_progress=False)
        fields.append(retriever)
    run = {}
    for qid, text in queries.items():
        tokens = bm25s.tokenize(text, stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False)[0]
        scores = np.vstack([retriever.get_scores(tokens) for retriever in fields])
        best = scores.max(axis=0)
        combined = best + 0.5 * (scores.sum(axis=0) - best)
        top = np.argsort(-combined)[:depth]
        run[qid] = {documents[i].id: float(combined[i]) for i in top if combined[i] > 0}
    return run


class AnalysedBm25s:
    """bm25s (Lucene's BM25, k1 1.2, b 0.75) over tokens the caller's ``analyze`` gives: the same
    analysis as the scorer it is compared with, so only the BM25 arithmetic is checked. Lucene
    counts only documents holding a term of the field (docCount, average length), so texts with
    no token stay out of the index."""

    def __init__(self, texts: Sequence[str], analyze: Callable[[str], list[str]]) -> None:
        import bm25s

        tokens = [analyze(text) for text in texts]
        self.kept = np.asarray([i for i, t in enumerate(tokens) if t], dtype=np.int64)
        self.size, self.analyze = len(tokens), analyze
        self.retriever = bm25s.BM25(method="lucene", k1=1.2, b=0.75, dtype="float64")
        self.retriever.index([tokens[i] for i in self.kept], show_progress=False)

    def score(self, text: str) -> np.ndarray:
        """Every text's score for the analysed ``text`` (0 for texts without a token)."""
        scores = np.zeros(self.size)
        terms = [t for t in self.analyze(text) if t in self.retriever.vocab_dict]
        if terms:
            scores[self.kept] = self.retriever.get_scores(terms)
        return scores
