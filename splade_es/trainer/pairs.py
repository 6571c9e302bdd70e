"""Training pairs from a collection's own documents: title -> body, optionally a BM25 negative.

No queries or judgments needed, so any corpus with titles can adapt a model to its domain.
A title is a short, query-like description of its document; where the body repeats the
title at its start (Cranfield does), that copy is stripped, or the pair would be a copy task.
An optional hard negative is a document BM25 ranks high for the title: a harder task than
in-batch negatives alone, but in a collection of close topics such a document is often
relevant to the same questions, and training to push it away then hurts.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from splade_es.errors import InputError
from splade_es.io.atomic import atomic_text_file
from splade_es.io.corpus import CorpusFormat, read_corpus

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class TitlePair:
    title: str
    body: str
    negative: str | None

    def to_json(self) -> str:
        """A sentence-transformers training line: {"query", "pos", "neg"}."""
        record = {"query": self.title, "pos": [self.body], "neg": [self.negative] if self.negative else []}
        return orjson.dumps(record).decode()


@dataclass
class PairStats:
    pairs: int = 0
    no_title: int = 0
    no_body: int = 0
    stripped: int = 0


def strip_title(title: str, text: str) -> str:
    """``text`` without leading copies of ``title`` (compared case- and whitespace-insensitively)."""
    title_words = _SPACE.sub(" ", title).strip().lower().split(" ")
    words = text.split()
    start = 0
    while title_words != [""] and [w.lower() for w in words[start:start + len(title_words)]] == title_words:
        start += len(title_words)
    return " ".join(words[start:]) if start else text.strip()


def title_pairs(corpus: CorpusFormat, title_field: str = "title", body_field: str = "text",
                negatives_depth: int = 0, seed: int = 0, stats: PairStats | None = None) -> Iterator[TitlePair]:
    """One pair per document that has both a title and a body left after stripping.

    With ``negatives_depth`` > 0 a negative is drawn (seeded) from that many best BM25 hits of
    the title over the bodies, the document itself and identical bodies excluded; by default
    there is none (in-batch negatives only: BM25's best hits are often false negatives).
    """
    stats = stats if stats is not None else PairStats()
    titles, bodies = [], []
    for document in read_corpus(corpus):  # a malformed record raises, naming FILE:LINE
        title, text = document.fields.get(title_field, "").strip(), document.fields.get(body_field, "")
        body = strip_title(title, text)
        if not title:
            stats.no_title += 1
        elif not body:
            stats.no_body += 1
        else:
            stats.stripped += body != text.strip()
            titles.append(title)
            bodies.append(body)
    bm25 = _BM25(bodies) if negatives_depth > 0 and len(bodies) > 1 else None
    rng = random.Random(seed)
    for row, (title, body) in enumerate(zip(titles, bodies)):
        negative = None
        if bm25 is not None:
            scores = bm25.scores(title)
            ranked = np.argsort(-scores, kind="stable")[: negatives_depth + 1]
            candidates = [int(r) for r in ranked if r != row and scores[r] > 0 and bodies[r] != body]
            negative = bodies[rng.choice(candidates[:negatives_depth])] if candidates else None
        stats.pairs += 1
        yield TitlePair(title, body, negative)


class _BM25:
    """BM25 (Lucene's formula, k1 1.2, b 0.75) over the bodies with bm25s: lowercase words,
    English stop words removed, Porter-stemmed, as the engines' ``english`` analyzer does."""

    def __init__(self, texts: list[str]) -> None:
        import bm25s
        from snowballstemmer import stemmer

        self._bm25s, self._stemmer = bm25s, stemmer("porter")
        self.index = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
        self.index.index(self._tokenize(texts), show_progress=False)

    def _tokenize(self, texts: list[str], return_ids: bool = True):
        return self._bm25s.tokenize(texts, stopwords="en", stemmer=self._stemmer, return_ids=return_ids,
                                    show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        """Every body's score for ``query``."""
        return self.index.get_scores(self._tokenize([query], return_ids=False)[0])


def write_title_pairs(corpus: CorpusFormat, output: str | Path, **options) -> PairStats:
    """Write the pairs as JSON lines, atomically: a failure leaves no partial file behind."""
    stats = PairStats()
    with atomic_text_file(Path(output)) as handle:
        for pair in title_pairs(corpus, stats=stats, **options):
            handle.write(pair.to_json() + "\n")
        if not stats.pairs:
            raise InputError(f"{corpus.path}: no document has both a title and a body, so there are no pairs")
    return stats
