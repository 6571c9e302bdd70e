"""Query latency: SPLADE queries versus BM25 ``match`` on the same OpenSearch index.

For each corpus (Cranfield, and a synthetic corpus of >= 100k documents with Zipf-distributed
terms) and each setting (query top-k 16/32/64/all, ``track_total_hits`` false/true) the
queries run one at a time: one untimed warm-up pass of every setting, then two timed passes
(the second in reverse order), on an index force-merged to one segment. Reported: engine-side latency (the
``took`` of each response) p50/p95/p99, the client round trip p50, and QPS of that single
client; query encoding is timed on its own. nDCG@10 of each pruning level (pytrec_eval) shows
what pruning costs: on Cranfield with its judgments, on the synthetic corpus with each query's
source document as the one relevant answer. ``--two-phase-top-k`` prunes the query under the
two-phase rows; ``--doc-min-weight`` / ``--doc-top-k`` also time a statically pruned copy of each
index (``ingest --doc-min-weight``), its nDCG set against the same judgments.

    URL=$(splade-es engine start --kind opensearch --port 0 --heap 1g | tail -n 1)
    python benchmarks/query_latency.py --url "$URL" --model ./bundle --out benchmarks/results/query_latency.json
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pytrec_eval
from click.testing import CliRunner
from opensearchpy import OpenSearch

from splade_es.model import SparseEncoder
from splade_es.toolkit.cli import main
from splade_es.toolkit.engines.connect import connect
from splade_es.toolkit.query.searcher import Searcher

TWO_PHASE = (16, 32)  # default first-phase terms of the two-phase rows (--two-phase)
TWO_PHASE_WINDOWS = (100,)  # default rescore windows (--windows)
TOP_KS = (16, 32, 64, None)  # None ("all"): the model's own query pruning, no tighter top-k
CRANFIELD = Path(__file__).resolve().parents[2] / "shared" / "data" / "cranfield"


def _ingest(url: str, index: str, corpus: Path, vectors: Path, model: str, work: Path,
            pruning: Sequence[str] = ()) -> None:
    engine = connect(url)
    engine.delete_index(index)
    result = CliRunner().invoke(main, ["ingest", "--index", index, "--corpus", str(corpus), "--vectors", str(vectors),
                                       "--model", model, "--url", url, "--no-progress", "--json",
                                       "--state-dir", str(work / "state"), "--failures", str(work / "failures.jsonl"),
                                       *pruning])
    assert result.exit_code == 0, result.output
    print(f"ingested {index}: {result.stdout.strip().splitlines()[-1]}", flush=True)
    # A read-only benchmark index: merge to one segment so no background merge runs during timing.
    OpenSearch([url], timeout=600).indices.forcemerge(index=index, max_num_segments=1)


def _pass(engine, index: str, bodies: list[dict]) -> tuple[list[float], list[float], float, list[dict]]:
    took, wall, results = [], [], []
    start = time.perf_counter()
    for body in bodies:
        t0 = time.perf_counter()
        reply = engine.search(index, body)
        wall.append((time.perf_counter() - t0) * 1000)
        took.append(float(reply["took"]))
        results.append({hit["_id"]: float(hit["_score"]) for hit in reply["hits"]["hits"]})
    return took, wall, time.perf_counter() - start, results


def _timed_settings(engine, settings: list[tuple[dict, str, list[dict]]]) -> list[dict]:
    """One untimed warm-up pass of every setting, then two timed passes, the second in reverse
    order, so no setting profits from running later (caches, merges, JIT)."""
    for _, index, bodies in settings:
        _pass(engine, index, bodies)
    samples: dict[int, list] = {i: [[], [], 0.0, None] for i in range(len(settings))}
    for order in (range(len(settings)), reversed(range(len(settings)))):
        for i in order:
            took, wall, elapsed, results = _pass(engine, settings[i][1], settings[i][2])
            samples[i][0] += took
            samples[i][1] += wall
            samples[i][2] += elapsed
            samples[i][3] = results
    rows = []
    for i, (row, _, bodies) in enumerate(settings):
        took, wall, elapsed, results = samples[i]
        rows.append({**row, "engine_ms": {f"p{p}": float(np.percentile(took, p)) for p in (50, 95, 99)},
                     "engine_ms_mean": round(float(np.mean(took)), 2),
                     "client_ms": {f"p{p}": round(float(np.percentile(wall, p)), 2) for p in (50, 95, 99)},
                     "qps": round(len(wall) / elapsed, 1), "queries": len(bodies), "_run": results})
    return rows


def _ndcg(run: list[dict], query_ids: list[str], qrels: dict) -> float:
    runs = {qid: scores for qid, scores in zip(query_ids, run) if qid in qrels}
    evaluator = pytrec_eval.RelevanceEvaluator({q: qrels[q] for q in runs}, {"ndcg_cut.10"})
    values = [m["ndcg_cut_10"] for m in evaluator.evaluate(runs).values()]
    return round(float(np.mean(values)) if values else 0.0, 4)


@dataclass(frozen=True)
class Plan:
    """The SPLADE settings timed besides BM25 and the plain query top-k rows."""

    two_phase: Sequence[int] = TWO_PHASE  # first-phase term counts
    windows: Sequence[int] = TWO_PHASE_WINDOWS  # rescore windows
    two_phase_top_k: int | None = None  # query pruning under the two-phase rows (None: the model's own)
    doc_pruning: Sequence[str] = ()  # ingest options of a second, statically pruned copy of the index

    def top_ks(self) -> list[int | None]:
        return [*TOP_KS, *([self.two_phase_top_k] if self.two_phase_top_k not in TOP_KS else [])]

    def indexes(self, base: str) -> list[tuple[str, str, Sequence[str]]]:
        """(index, label of its documents, ingest options): the full index, then the pruned copy
        when asked."""
        label = " ".join(self.doc_pruning).replace("--doc-", "")
        return [(base, "all", ()), *([(f"{base}-pruned", label, self.doc_pruning)] if self.doc_pruning else [])]


def _terms(vectors: list[dict]) -> float:
    return round(float(np.mean([len(v) for v in vectors])), 1)


def _suite(url: str, indexes: list[tuple[str, str]], vectors_by_k: dict, texts: list[str], query_ids: list[str],
           qrels: dict, text_field: str, plan: Plan) -> list[dict]:
    engine = connect(url)
    settings = []
    for total_hits in (False, True):
        base = Searcher(engine, indexes[0][0])
        bm25 = [base.body({"match": {text_field: text}}, 10, total_hits) for text in texts]
        settings.append(({"method": "bm25", "docs": "all", "top_k": None, "track_total_hits": total_hits},
                         indexes[0][0], bm25))
        for index, docs in indexes:
            searcher = Searcher(engine, index)
            for top_k in TOP_KS:
                vectors = vectors_by_k[top_k]
                bodies = [searcher.body(searcher.sparse_query(v), 10, total_hits) for v in vectors]
                settings.append(({"method": "splade", "docs": docs, "top_k": top_k or "all",
                                  "track_total_hits": total_hits, "query_terms_mean": _terms(vectors)}, index, bodies))
            vectors = vectors_by_k[plan.two_phase_top_k]
            for first, window in itertools.product(plan.two_phase, plan.windows):  # heaviest first, rest rescored
                two = Searcher(engine, index, two_phase=first, two_phase_window=window)
                bodies = [two.sparse_body(v, 10, track_total_hits=total_hits) for v in vectors]
                settings.append(({"method": f"splade two-phase {first}+rest/{window}", "docs": docs,
                                  "top_k": plan.two_phase_top_k or "all", "track_total_hits": total_hits,
                                  "query_terms_mean": _terms(vectors)}, index, bodies))
    rows = _timed_settings(engine, settings)
    for row in rows:
        row["ndcg@10"] = _ndcg(row.pop("_run"), query_ids, qrels)
    return rows


def _read_qrels(path: Path) -> dict:
    qrels: dict = {}
    for line in path.read_text().splitlines()[1:]:
        qid, did, grade = line.split("\t")
        qrels.setdefault(qid, {})[did] = int(grade)
    return qrels


def _model_key(model: str) -> str:
    """Short hash of where the model is and what its weights and config files are (size, mtime)."""
    path = Path(model)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else []
    stamp = [str(path.resolve() if path.exists() else model)] + [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    return hashlib.sha1("|".join(stamp).encode()).hexdigest()[:10]


def _load(url: str, base: str, corpus: Path, vectors: Path, model: str, work: Path, plan: Plan) -> list[tuple[str, str]]:
    """The index (and its statically pruned copy when the plan asks for one), loaded."""
    indexes = plan.indexes(base)
    for index, _, options in indexes:
        _ingest(url, index, corpus, vectors, model, work, options)
    return [(index, label) for index, label, _ in indexes]


def cranfield(url: str, model: str, work: Path, plan: Plan) -> dict:
    encoder = SparseEncoder.from_pretrained(model, device="cpu")
    vectors_file = work / f"cranfield-vectors-{_model_key(model)}.jsonl"  # never another model's vectors
    if not vectors_file.exists():
        documents = [orjson.loads(line) for line in (CRANFIELD / "corpus.jsonl").read_bytes().splitlines()]
        encoded = encoder.encode_documents([f"{d.get('title', '')}\n{d['text']}".strip() for d in documents])
        vectors_file.write_bytes(b"".join(orjson.dumps({"id": d["_id"], "features": v.to_features()}) + b"\n"
                                          for d, v in zip(documents, encoded)))
    indexes = _load(url, "bench-cranfield", CRANFIELD, vectors_file, model, work, plan)
    print(f"query pruning of the model: {encoder.config.pruning(True)}", flush=True)
    queries = [orjson.loads(line) for line in (CRANFIELD / "queries.jsonl").read_bytes().splitlines()]
    texts = [q["text"] for q in queries]
    vectors_by_k, encode_ms = {}, []
    for top_k in plan.top_ks():
        vectors = []
        for text in texts:  # one at a time: the latency a search user sees
            t0 = time.perf_counter()
            pruning = encoder.config.pruning(True).override(top_k=top_k)
            vectors.append(encoder.encode_queries(text, pruning=pruning).to_features())
            encode_ms.append((time.perf_counter() - t0) * 1000)
        vectors_by_k[top_k] = vectors
    rows = _suite(url, indexes, vectors_by_k, texts, [q["_id"] for q in queries],
                  _read_qrels(CRANFIELD / "qrels" / "test.tsv"), "text", plan)
    return {"corpus": "cranfield", "docs": 1400, "queries": len(texts),
            "query_encoding_ms": {f"p{p}": round(float(np.percentile(encode_ms, p)), 2) for p in (50, 99)},
            "rows": rows}


def synthetic(url: str, docs: int, n_queries: int, work: Path, plan: Plan, seed: int = 0) -> dict:
    """Zipf-distributed terms (s = 1.05 over 30k terms), ~110 features per document (log-normal);
    weights log-normal times an idf-like factor ``log(rank + 1) / log(V + 1)``, because FLOPS
    regularisation makes a trained model give frequent terms small weights; text of 80
    Zipf-distributed words; each query takes terms and words of one document (its relevant
    answer) plus background terms."""
    rng = np.random.default_rng(seed)
    vocab, words = 30000, 50000

    def zipf(n: int, size: int) -> np.ndarray:
        cdf = np.cumsum(1.0 / np.arange(1, n + 1) ** 1.05)
        return np.searchsorted(cdf / cdf[-1], rng.random(size))

    idf = np.log(np.arange(2, vocab + 2)) / np.log(vocab + 1) + 0.02  # term id = frequency rank - 1
    lengths = np.clip(rng.lognormal(np.log(110), 0.5, docs).astype(int), 10, 400)
    terms = zipf(vocab, int(lengths.sum() * 1.3))
    text_words = zipf(words, docs * 80).reshape(docs, 80)
    corpus, vectors = work / "synthetic-corpus.jsonl", work / "synthetic-vectors.jsonl"
    doc_terms: list[np.ndarray] = []
    offset = 0
    with corpus.open("wb") as c_out, vectors.open("wb") as v_out:
        for i in range(docs):
            chosen = np.unique(terms[offset:offset + int(lengths[i] * 1.3)])[: lengths[i]]
            offset += int(lengths[i] * 1.3)
            weights = np.round(np.clip(rng.lognormal(-0.2, 0.6, chosen.size) * idf[chosen], 0.01, 3.0), 4)
            doc_terms.append(chosen)
            c_out.write(orjson.dumps({"_id": f"d{i}", "title": "", "text": " ".join(f"w{w}" for w in text_words[i])})
                        + b"\n")
            v_out.write(orjson.dumps({"id": f"d{i}", "features": {f"t{t}": float(w) for t, w in zip(chosen, weights)}})
                        + b"\n")
    indexes = _load(url, "bench-synthetic", corpus, vectors, "synthetic", work, plan)
    sources = rng.choice(docs, n_queries, replace=False)
    full, texts = [], []
    for source in sources:
        own = rng.choice(doc_terms[source], min(30, doc_terms[source].size), replace=False)
        background = zipf(vocab, 90)
        ids = np.unique(np.concatenate([own, background]))
        weights = rng.lognormal(0.0, 0.7, ids.size) * idf[ids] * np.where(np.isin(ids, own), 2.0, 1.0)
        full.append({f"t{t}": float(w) for t, w in zip(ids, weights)})
        texts.append(" ".join(f"w{w}" for w in rng.choice(text_words[source], 6, replace=False)))
    vectors_by_k = {k: [dict(sorted(v.items(), key=lambda kv: -kv[1])[:k]) if k else v for v in full]
                    for k in plan.top_ks()}
    query_ids = [f"q{i}" for i in range(n_queries)]
    qrels = {qid: {f"d{source}": 1} for qid, source in zip(query_ids, sources)}
    rows = _suite(url, indexes, vectors_by_k, texts, query_ids, qrels, "text", plan)
    return {"corpus": "synthetic", "docs": docs, "queries": n_queries, "rows": rows}


def _print(result: dict) -> None:
    print(f"\n{result['corpus']} ({result['docs']} docs, {result['queries']} queries)")
    print(f"{'method':<34}{'docs':>16}{'top_k':>6}{'tth':>6}{'terms':>7}{'p50':>7}{'p95':>7}{'p99':>7}{'rt p50':>8}{'qps':>8}"
          f"{'nDCG@10':>9}")
    for r in result["rows"]:
        e = r["engine_ms"]
        print(f"{r['method']:<34}{r['docs']:>16}{r['top_k'] or '-'!s:>6}{str(r['track_total_hits'])[0]:>6}"
              f"{r.get('query_terms_mean', '-'):>7}{e['p50']:>7.1f}{e['p95']:>7.1f}{e['p99']:>7.1f}"
              f"{r['client_ms']['p50']:>8.2f}{r['qps']:>8.1f}{r['ndcg@10']:>9.4f}")


def _int_list(parser: argparse.ArgumentParser, option: str, value: str) -> list[int]:
    try:
        numbers = [int(n) for n in value.split(",") if n.strip()]
    except ValueError:
        numbers = []
    if not numbers or min(numbers) < 1:
        parser.error(f"{option}: expected comma-separated positive integers, got {value!r}")
    return numbers


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="OpenSearch URL (splade-es engine start --kind opensearch)")
    parser.add_argument("--model", required=True, help="model bundle for Cranfield documents and queries")
    parser.add_argument("--synthetic-docs", type=int, default=100_000)
    parser.add_argument("--synthetic-queries", type=int, default=200)
    parser.add_argument("--work-dir", default="/tmp/splade-es-query-latency")
    parser.add_argument("--corpora", default="cranfield,synthetic",
                        help="comma-separated: cranfield (uses --model), synthetic (model-free vectors)")
    parser.add_argument("--two-phase", default=",".join(map(str, TWO_PHASE)),
                        help="comma-separated first-phase term counts of the two-phase rows")
    parser.add_argument("--windows", default=",".join(map(str, TWO_PHASE_WINDOWS)),
                        help="comma-separated rescore windows of the two-phase rows")
    parser.add_argument("--two-phase-top-k", type=int,
                        help="query top-k under the two-phase rows (default: all the model's query terms)")
    parser.add_argument("--doc-min-weight", type=float,
                        help="also time a statically pruned copy of each index (ingest --doc-min-weight)")
    parser.add_argument("--doc-top-k", type=int, help="also time a copy pruned to K features per document")
    parser.add_argument("--out", help="write the raw results here (JSON)")
    args = parser.parse_args()
    if args.two_phase_top_k is not None and args.two_phase_top_k < 1:
        parser.error(f"--two-phase-top-k: expected a positive integer, got {args.two_phase_top_k}")
    doc_pruning = [*(["--doc-min-weight", str(args.doc_min_weight)] if args.doc_min_weight is not None else []),
                   *(["--doc-top-k", str(args.doc_top_k)] if args.doc_top_k is not None else [])]
    plan = Plan(_int_list(parser, "--two-phase", args.two_phase), _int_list(parser, "--windows", args.windows),
                args.two_phase_top_k, tuple(doc_pruning))
    corpora = [name.strip() for name in args.corpora.split(",") if name.strip()]
    unknown = sorted(set(corpora) - {"cranfield", "synthetic"})
    if unknown or not corpora:
        parser.error(f"--corpora: unknown {', '.join(unknown) or 'nothing given'} (choose cranfield, synthetic)")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    engine = connect(args.url)
    results = {"engine": f"{engine.info.kind} {engine.info.version}", "machine": platform.platform(),
               "date": time.strftime("%Y-%m-%d"), "model": args.model,
               "doc_pruning": " ".join(doc_pruning) or None,
               "corpora": [cranfield(args.url, args.model, work, plan) if name == "cranfield"
                           else synthetic(args.url, args.synthetic_docs, args.synthetic_queries, work, plan)
                           for name in corpora]}
    for result in results["corpora"]:
        _print(result)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    run()
