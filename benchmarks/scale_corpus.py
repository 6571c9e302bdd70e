"""A seeded corpus generator for scale benchmarks: text for BM25 plus sparse vectors whose
statistics follow a real encoded collection.

Two steps:

``fit`` reads what a model wrote for a real collection (``splade-es encode --json`` document and
query vectors, the BEIR corpus and judgments) and keeps a small stats JSON: the features per
document and per query (quantiles), each term's document frequency by frequency rank (at
log-spaced ranks), the weight distribution per document-frequency decile (a FLOPS-trained model
gives frequent terms small weights, so weight and frequency are not independent), how much of a
query a relevant document holds, where the weights of the terms they share sit in their deciles
(a trained model weights them higher than its other terms, on both sides: that is what lets a
pruned query keep its answer), and the text's Zipf exponent and lengths.

``generate`` samples N documents and Q queries from that JSON with a seed and streams them to a
BEIR directory (``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv``) plus ``vectors.jsonl``
and ``query-vectors.jsonl`` (``splade-es encode --json`` lines), one block of documents at a time:
1M documents never sit in memory. Feature ``t<r>`` is the term of document-frequency rank ``r``;
word ``w<r>`` the text word of Zipf rank ``r``. Each query is written from one source document (its
one judged answer): the fitted share of its features from that document, the rest drawn by document
frequency; the shared terms' weights, in the query and in the answer, take their fitted places in
their deciles (stats without ``weight_places``, from before the coupling, draw them like any
other); its text is words of that document plus background words. Terms are drawn so that each
keeps its fitted document frequency (``_calibrated``).

What it does not model, so what pruning costs on a generated corpus is a proxy, not a forecast:
every query shares the same fraction of its terms with its answer (real queries vary, and those
sharing little are the ones pruning hurts), and has exactly one judged answer; which of the
answer's terms it shares is picked uniformly (a model may share rare terms more often than frequent
ones); a place is one distribution pooled over all deciles; and a shared term's place in the query
and its place in the answer are drawn independently (in a model they may go together). Each of
these can make pruning look better or worse than on the model's real output.

    splade-es encode --model M --input docs.jsonl --output doc-vectors.jsonl
    splade-es encode --model M --query --input queries.jsonl --output query-vectors.jsonl
    python benchmarks/scale_corpus.py fit --doc-vectors doc-vectors.jsonl --query-vectors query-vectors.jsonl \\
        --beir ../shared/data/cranfield --doc-top-k 128 --query-top-k 32 \\
        --out benchmarks/results/scale_stats_cranfield_minilm.json
    python benchmarks/scale_corpus.py generate --stats benchmarks/results/scale_stats_cranfield_minilm.json \\
        --docs 1000000 --queries 500 --seed 0 --out /tmp/scale-1m
"""

from __future__ import annotations

import argparse
import collections
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson

QUANTILES = np.linspace(0, 1, 101)
BUCKETS = 10  # document-frequency deciles of the weight distributions
RANK_POINTS = 200  # log-spaced ranks kept of the document-frequency curve
BLOCK = 10_000  # documents generated and written at a time
OVERSAMPLE = 1.4  # draws per wanted feature before duplicates are dropped


def _vectors(path: Path, top_k: int | None) -> Iterator[tuple[str, dict[str, float]]]:
    """``(id, features)`` of an encode output, each cut to its ``top_k`` heaviest features
    (static pruning, as ``ingest --doc-top-k`` / ``encode --top-k`` would cut them)."""
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                record = orjson.loads(line)
                features = record["features"]
                if top_k is not None:
                    features = dict(sorted(features.items(), key=lambda item: -item[1])[:top_k])
                yield str(record["id"]), features


def _quantiles(values: list[float] | np.ndarray) -> list[float]:
    return [round(float(v), 6) for v in np.quantile(np.asarray(values, dtype=np.float64), QUANTILES)]


def _bucket_of(ranks: np.ndarray, vocabulary: int) -> np.ndarray:
    """Decile of log-rank: bucket 0 holds the most frequent terms."""
    return np.minimum((np.log1p(ranks) / np.log1p(vocabulary) * BUCKETS).astype(int), BUCKETS - 1)


class DecileWeights:
    """The sorted weights of each document-frequency decile (all of them where a decile has too few),
    so a weight's place within its decile can be read back."""

    def __init__(self, vectors: list[dict[str, float]], rank: dict[str, int], vocabulary: int) -> None:
        self.rank, self.vocabulary = rank, vocabulary
        terms = [t for v in vectors for t in v if t in rank]
        weights = np.array([v[t] for v in vectors for t in v if t in rank], dtype=np.float64)
        buckets = _bucket_of(np.array([rank[t] for t in terms], dtype=np.int64), vocabulary)
        everything = np.sort(weights)
        self.sorted = [np.sort(weights[buckets == b]) if (buckets == b).sum() >= 20 else everything
                       for b in range(BUCKETS)]

    def table(self) -> list[list[float]]:
        return [_quantiles(values) for values in self.sorted]

    def percentile(self, term: str, weight: float) -> float:
        """Mid-rank of ``weight`` among its decile's weights, in [0, 1]."""
        values = self.sorted[int(_bucket_of(np.array([self.rank[term]]), self.vocabulary)[0])]
        below, upto = np.searchsorted(values, weight, "left"), np.searchsorted(values, weight, "right")
        return float((below + upto) / 2 / values.size)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def fit(doc_vectors: Path, query_vectors: Path, beir: Path, doc_top_k: int | None = None,
        query_top_k: int | None = None) -> dict:
    """The stats JSON of one encoded collection (see the module docstring)."""
    docs = dict(_vectors(doc_vectors, doc_top_k))
    queries = dict(_vectors(query_vectors, query_top_k))
    df = collections.Counter(t for v in docs.values() for t in v)
    ordered = [t for t, _ in df.most_common()]
    rank = {t: r for r, t in enumerate(ordered)}
    vocabulary = len(ordered)
    points = np.unique(np.geomspace(1, vocabulary, RANK_POINTS).astype(int)) - 1
    overlap = []
    with (beir / "qrels" / "test.tsv").open() as handle:
        next(handle)
        best: dict[str, tuple[int, str]] = {}
        for line in handle:
            qid, did, grade = line.split()[:3]
            if qid in queries and did in docs and int(grade) > best.get(qid, (0, ""))[0]:
                best[qid] = (int(grade), did)
    doc_weights = DecileWeights(list(docs.values()), rank, vocabulary)
    query_weights = DecileWeights(list(queries.values()), rank, vocabulary)
    # Where the weights of the terms a query shares with its answer sit in their deciles: a trained
    # model weights those heavier than the rest, on both sides, which is what lets pruning keep the answer.
    places: dict[str, list[float]] = {"query_shared": [], "query_other": [], "doc_shared": []}
    for qid, (_, did) in best.items():
        if queries[qid]:
            overlap.append(sum(t in docs[did] for t in queries[qid]) / len(queries[qid]))
        for term, weight in queries[qid].items():
            if term not in rank:
                continue
            shared = term in docs[did]
            places["query_shared" if shared else "query_other"].append(query_weights.percentile(term, weight))
            if shared:
                places["doc_shared"].append(doc_weights.percentile(term, docs[did][term]))
    word_counts: collections.Counter[str] = collections.Counter()
    doc_words, query_words = [], []
    for name, lengths in (("corpus.jsonl", doc_words), ("queries.jsonl", query_words)):
        with (beir / name).open("rb") as handle:
            for line in handle:
                record = orjson.loads(line)
                words = _words(f"{record.get('title', '')} {record.get('text', '')}")
                lengths.append(len(words))
                if name == "corpus.jsonl":
                    word_counts.update(words)
    frequencies = np.array(sorted(word_counts.values(), reverse=True), dtype=np.float64)
    head = np.arange(1, min(1000, frequencies.size) + 1)
    zipf_s = -np.polyfit(np.log(head), np.log(frequencies[: head.size]), 1)[0]
    return {
        "source": {"doc_vectors": doc_vectors.name, "query_vectors": query_vectors.name, "beir": beir.name,
                   "docs": len(docs), "queries": len(queries), "judged_queries": len(overlap),
                   "doc_top_k": doc_top_k, "query_top_k": query_top_k},
        "vocabulary": vocabulary,
        "doc_features": _quantiles([len(v) for v in docs.values()]),
        "query_features": _quantiles([len(v) for v in queries.values()]),
        "df_ranks": [int(r) for r in points],
        "df_fraction": [round(df[ordered[r]] / len(docs), 8) for r in points],
        "doc_weights_by_df_decile": doc_weights.table(),
        "query_weights_by_df_decile": query_weights.table(),
        "query_overlap": round(float(np.mean(overlap)), 4) if overlap else 0.5,
        # Quantiles of those places (uniform where fewer than 20 were seen: no coupling learnt).
        "weight_places": {name: _quantiles(values) if len(values) >= 20 else _quantiles(QUANTILES)
                          for name, values in places.items()},
        "text": {"zipf_s": round(float(zipf_s), 4), "vocabulary": len(word_counts),
                 "doc_words": _quantiles(doc_words), "query_words": _quantiles(query_words)},
    }


def _calibrated(fraction: np.ndarray, length: float, rounds: int = 60) -> np.ndarray:
    """Draw probabilities under which a document of ``length`` features holds each term with its
    fitted document frequency ``fraction``. Drawing by ``fraction`` itself would not: ``terms``
    draws with replacement and drops repeats, so frequent terms (drawn twice as often as kept)
    would fall a quarter short of their document frequency."""
    draws = int(length * OVERSAMPLE) + 4
    target = fraction / fraction.sum() * length  # expected times each term is held, summing to length
    draw = fraction / fraction.sum()
    for _ in range(rounds):
        seen = -np.expm1(draws * np.log1p(-np.minimum(draw, 1 - 1e-12)))  # P(drawn at least once)
        held = seen * min(1.0, length / seen.sum())  # then ``length`` of the distinct ones are kept
        draw = draw * np.clip(target / np.maximum(held, 1e-300), 0.5, 2.0)
        draw /= draw.sum()
    return draw


class Sampler:
    """Draws documents and queries from a stats JSON (``fit``'s output) with one seeded generator."""

    def __init__(self, stats: dict, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        # The query-answer coupling (stats with "weight_places") draws from a generator of its own,
        # so that it moves only the answers' weights and the queries: the rest of the corpus is the
        # same, seed for seed, with or without it.
        self.places = stats.get("weight_places")
        self.pairs = np.random.default_rng([seed, 1])
        self.vocabulary = int(stats["vocabulary"])
        ranks = np.arange(self.vocabulary)
        # Document frequency at every rank, interpolated log-log between the kept points.
        fraction = np.exp(np.interp(np.log1p(ranks), np.log1p(stats["df_ranks"]), np.log(stats["df_fraction"])))
        draw = _calibrated(fraction, float(np.mean(stats["doc_features"])))
        self.term_cdf = np.cumsum(draw) / draw.sum()
        self.bucket = _bucket_of(ranks, self.vocabulary)
        self.stats = stats
        text = stats["text"]
        self.words = int(text["vocabulary"])
        word_p = 1.0 / np.arange(1, self.words + 1) ** text["zipf_s"]
        self.word_cdf = np.cumsum(word_p) / word_p.sum()

    def lengths(self, quantiles: list[float], n: int, low: int = 1,
                rng: np.random.Generator | None = None) -> np.ndarray:
        chance = (rng or self.rng).random(n)
        return np.maximum(np.round(np.interp(chance, QUANTILES, quantiles)).astype(int), low)

    def weights(self, terms: np.ndarray, by_decile: list[list[float]], place: str | None = None) -> np.ndarray:
        """One weight per term, from the weight quantiles of its document-frequency decile; with
        ``place`` (a key of the stats' ``weight_places``) its place in the decile follows that fit
        instead of being uniform."""
        table = np.asarray(by_decile)
        if place is None:
            chance = self.rng.random(terms.size)
        else:
            chance = np.interp(self.pairs.random(terms.size), QUANTILES, self.places[place])
        weights = np.empty(terms.size)
        for bucket in np.unique(self.bucket[terms]):
            mine = self.bucket[terms] == bucket
            weights[mine] = np.interp(chance[mine], QUANTILES, table[bucket])
        return np.maximum(np.round(weights, 4), 1e-4)

    def terms(self, count: int) -> np.ndarray:
        """``count`` distinct terms drawn by document frequency (sorted ranks)."""
        drawn = np.unique(np.searchsorted(self.term_cdf, self.rng.random(int(count * OVERSAMPLE) + 4)))
        drawn = np.minimum(drawn, self.vocabulary - 1)
        return np.sort(self.rng.permutation(drawn)[:count])

    def terms_besides(self, count: int, taken: np.ndarray, rounds: int = 50) -> np.ndarray:
        """``count`` distinct terms drawn by document frequency, none of them in ``taken``: a query's
        terms beyond those it shares with its answer (drawing ``count`` and dropping the answer's
        would leave the query short by the terms that happened to be the answer's, and its overlap
        with the answer above the fitted one by those it drew that were). Where ``rounds`` of
        drawing cannot find enough (nearly the whole vocabulary taken, the rest too rare to come
        up), the last are drawn uniformly from what is left."""
        count = min(count, self.vocabulary - np.unique(taken).size)
        found = taken[:0]
        for _ in range(rounds):
            if found.size == count:
                return found
            found = np.union1d(found, np.setdiff1d(self.terms(count - found.size), taken))
        left = np.setdiff1d(np.arange(self.vocabulary), np.union1d(found, taken))
        return np.union1d(found, self.rng.choice(left, size=count - found.size, replace=False))

    def text(self, count: int) -> np.ndarray:
        return np.minimum(np.searchsorted(self.word_cdf, self.rng.random(count)), self.words - 1)


def _features(terms: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    return {f"t{t}": float(w) for t, w in zip(terms.tolist(), weights.tolist())}


def _sentence(words: np.ndarray) -> str:
    return " ".join(f"w{w}" for w in words.tolist())


def generate(stats: dict, docs: int, queries: int, seed: int, out: Path) -> dict:
    """Write the corpus, its vectors, queries, their vectors and judgments under ``out``, streaming."""
    sampler = Sampler(stats, seed)
    sources = np.sort(sampler.rng.choice(docs, size=min(queries, docs), replace=False))
    wanted = set(sources.tolist())
    # Source documents' terms and words, and with the coupling the query's length and shared terms.
    kept: dict[int, tuple[np.ndarray, np.ndarray, int, np.ndarray]] = {}
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    nnz = 0
    with (out / "corpus.jsonl").open("wb") as corpus, (out / "vectors.jsonl").open("wb") as vectors:
        for start in range(0, docs, BLOCK):
            count = min(BLOCK, docs - start)
            lengths = sampler.lengths(stats["doc_features"], count)
            word_counts = sampler.lengths(stats["text"]["doc_words"], count)
            corpus_lines, vector_lines = [], []
            for offset in range(count):
                position = start + offset
                terms = sampler.terms(int(lengths[offset]))
                words = sampler.text(int(word_counts[offset]))
                weights = sampler.weights(terms, stats["doc_weights_by_df_decile"])
                nnz += terms.size
                if position in wanted:
                    kept[position] = (terms, words, 0, terms[:0])
                    if sampler.places:
                        # The query is known here: its shared terms get the weights answers give them.
                        length = int(sampler.lengths(stats["query_features"], 1, rng=sampler.pairs)[0])
                        shared = np.sort(sampler.pairs.permutation(terms)[: round(stats["query_overlap"] * length)])
                        mine = np.isin(terms, shared)
                        weights[mine] = sampler.weights(shared, stats["doc_weights_by_df_decile"], "doc_shared")
                        kept[position] = (terms, words, length, shared)
                corpus_lines.append(orjson.dumps({"_id": f"d{position}", "title": "", "text": _sentence(words)}))
                vector_lines.append(orjson.dumps({"id": f"d{position}", "features": _features(terms, weights)}))
            corpus.write(b"\n".join(corpus_lines) + b"\n")
            vectors.write(b"\n".join(vector_lines) + b"\n")
    lengths = sampler.lengths(stats["query_features"], sources.size)  # the coupling drew its own; drawn anyway
    word_counts = sampler.lengths(stats["text"]["query_words"], sources.size)
    with ((out / "queries.jsonl").open("wb") as text_out, (out / "query-vectors.jsonl").open("wb") as vector_out,
          (out / "qrels" / "test.tsv").open("w") as qrels):
        qrels.write("query-id\tcorpus-id\tscore\n")
        for i, source in enumerate(sources.tolist()):
            terms, words, length, shared = kept[source]
            if sampler.places:
                others = sampler.terms_besides(length - shared.size, terms)
                chosen = np.concatenate([shared, others])
                weights = np.concatenate([
                    sampler.weights(shared, stats["query_weights_by_df_decile"], "query_shared"),
                    sampler.weights(others, stats["query_weights_by_df_decile"], "query_other")])
            else:
                own = sampler.rng.permutation(terms)[: int(round(stats["query_overlap"] * lengths[i]))]
                chosen = np.union1d(own, sampler.terms_besides(int(lengths[i]) - own.size, terms))
                weights = sampler.weights(chosen, stats["query_weights_by_df_decile"])
            text = np.concatenate([sampler.rng.permutation(words)[: max(1, int(word_counts[i]) // 2)],
                                   sampler.text(int(word_counts[i]) - int(word_counts[i]) // 2)])
            text_out.write(orjson.dumps({"_id": f"q{i}", "text": _sentence(text)}) + b"\n")
            vector_out.write(orjson.dumps({"id": f"q{i}", "features": _features(chosen, weights)}) + b"\n")
            qrels.write(f"q{i}\td{source}\t1\n")
    return {"docs": docs, "queries": int(sources.size), "seed": seed, "mean_doc_features": round(nnz / docs, 2),
            "out": str(out)}


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fitting = commands.add_parser("fit", help="stats JSON from an encoded collection")
    fitting.add_argument("--doc-vectors", type=Path, required=True, help="splade-es encode --json of the documents")
    fitting.add_argument("--query-vectors", type=Path, required=True, help="splade-es encode --query --json output")
    fitting.add_argument("--beir", type=Path, required=True, help="the BEIR directory they came from (text, qrels)")
    fitting.add_argument("--doc-top-k", type=int, help="keep each document's K heaviest features (static pruning)")
    fitting.add_argument("--query-top-k", type=int, help="keep each query's K heaviest features")
    fitting.add_argument("--out", type=Path, required=True)
    generating = commands.add_parser("generate", help="a seeded corpus from a stats JSON")
    generating.add_argument("--stats", type=Path, required=True)
    generating.add_argument("--docs", type=int, required=True)
    generating.add_argument("--queries", type=int, default=500)
    generating.add_argument("--seed", type=int, default=0)
    generating.add_argument("--out", type=Path, required=True, help="directory to write (created)")
    args = parser.parse_args()
    if args.command == "fit":
        stats = fit(args.doc_vectors, args.query_vectors, args.beir, args.doc_top_k, args.query_top_k)
        args.out.write_text(json.dumps(stats, indent=1) + "\n")
        print(f"wrote {args.out}")
    else:
        if args.docs < 1 or args.queries < 1:
            parser.error("--docs and --queries must be positive")
        print(json.dumps(generate(json.loads(args.stats.read_text()), args.docs, args.queries, args.seed, args.out)))


if __name__ == "__main__":
    run()
