"""Where BM25 points come from: BEIR's Elasticsearch setup and its variants on one real node.

BEIR (and the papers quoting it: SciFact 66.5) ran BM25 on Elasticsearch 7 with ``title`` and
``text`` as ``english``-analysed fields, a ``multi_match`` ``best_fields`` query with
``tie_breaker`` 0.5, the top 1000 hits, and documents whose id equals the query's id dropped.
This script indexes a BEIR dataset into the given OpenSearch / Elasticsearch node once per
analysis setup and scores each variant with the same evaluator (pytrec_eval), changing one
thing at a time, next to an independent BM25 (bm25s with Lucene's formula) of the same setup:

- ``beir``: the setup above (what ``splade-es eval --method bm25`` sends);
- ``beir, self-hits kept``: without the identical-id rule;
- ``beir, depth 100``: 100 hits per query instead of 1000;
- ``beir, empty queries dropped``: BEIR averages over queries with a result (ours over all judged);
- ``dis_max``: ``tie_breaker`` 0 (the best field alone);
- ``most_fields``: the fields' scores summed (Pyserini's "multifield");
- ``one field``: title and text concatenated into one field (Pyserini's "flat");
- ``standard analyzer``: no stemming, no stop words.

    python benchmarks/bm25_beir.py --dataset ../shared/data/scifact --url http://127.0.0.1:9200 \\
        --out benchmarks/results/bm25_scifact_os219.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import uuid
from datetime import date
from pathlib import Path

from splade_es.io.corpus import Document, read_corpus, resolve_corpus
from splade_es.toolkit.engines.connect import connect
from splade_es.toolkit.eval.beir import load_beir
from splade_es.toolkit.eval.bm25_reference import beir_bm25_run
from splade_es.toolkit.eval.metrics import evaluate

DEPTH = 1000


def _mapping(analyzer: str, fields: list[str]) -> dict:
    return {"mappings": {"properties": {name: {"type": "text", "analyzer": analyzer} for name in fields}}}


def _load(engine, documents: list[Document], analyzer: str, flat: bool) -> str:
    index = f"bm25-beir-{uuid.uuid4().hex[:8]}"
    fields = ["all"] if flat else ["title", "text"]
    engine.create_index(index, {"settings": {"number_of_shards": 1}, **_mapping(analyzer, fields)})
    for start in range(0, len(documents), 500):
        batch = documents[start:start + 500]
        sources = [{"all": f"{d.fields.get('title') or ''} {d.fields.get('text') or ''}".strip()} if flat else
                   {"title": d.fields.get("title") or "", "text": d.fields.get("text") or ""} for d in batch]
        refused = engine.bulk(index, [(d.id, source) for d, source in zip(batch, sources)])
        if refused:
            raise SystemExit(f"{len(refused)} documents refused: {refused[0]}")
    engine.refresh(index)
    return index


def _run(engine, index: str, queries: dict[str, str], query, depth: int) -> dict[str, dict[str, float]]:
    ids = list(queries)
    run: dict[str, dict[str, float]] = {}
    for start in range(0, len(ids), 50):
        chunk = ids[start:start + 50]
        bodies = [{"query": query(queries[qid]), "size": depth, "_source": False} for qid in chunk]
        for qid, reply in zip(chunk, engine.msearch(index, bodies)):
            run[qid] = {hit["_id"]: float(hit["_score"]) for hit in reply["hits"]["hits"]}
    return run


def _multi_match(kind: str, tie_breaker: float | None):
    def query(text: str) -> dict:
        body = {"query": text, "type": kind, "fields": ["title", "text"]}
        if tie_breaker is not None:
            body["tie_breaker"] = tie_breaker
        return {"multi_match": body}
    return query


def _score(qrels, run, ignore_identical_ids: bool = True, drop_empty: bool = False) -> dict[str, float]:
    if drop_empty:  # BEIR's mean runs over the queries pytrec_eval saw: those with at least one hit
        qrels = {qid: docs for qid, docs in qrels.items() if run.get(qid)}
    means, _ = evaluate(qrels, run, ignore_identical_ids=ignore_identical_ids)
    return {name: round(value, 4) for name, value in means.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--url", required=True, help="OpenSearch or Elasticsearch node")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    dataset = load_beir(args.dataset)
    documents = [d for d in read_corpus(resolve_corpus(args.dataset, None, None)) if isinstance(d, Document)]
    queries = {qid: text for qid, text in dataset.queries.items() if qid in dataset.qrels}
    engine = connect(args.url)
    result = {"dataset": args.dataset.name, "documents": len(documents), "queries": len(queries),
              "engine": f"{engine.info.kind} {engine.info.version}", "date": date.today().isoformat(),
              "machine": f"{platform.machine()}, {platform.python_version()}", "depth": DEPTH, "rows": []}

    def row(name: str, run, **options) -> None:
        metrics = _score(dataset.qrels, run, **options)
        result["rows"].append({"variant": name, **metrics})
        print(f"{name:32s} nDCG@10 {metrics['ndcg@10']:.4f}  R@100 {metrics['recall@100']:.4f}", file=sys.stderr)

    created = []
    try:
        started = time.monotonic()
        if engine.info.capabilities.english_analyzer:
            english = _load(engine, documents, "english", flat=False)
            created.append(english)
            beir = _run(engine, english, queries, _multi_match("best_fields", 0.5), DEPTH)
            row("beir", beir)
            row("beir, self-hits kept", beir, ignore_identical_ids=False)
            row("beir, depth 100", {qid: dict(list(hits.items())[:100]) for qid, hits in beir.items()})
            row("beir, empty queries dropped", beir, drop_empty=True)
            row("dis_max (tie_breaker 0)", _run(engine, english, queries, _multi_match("best_fields", 0.0), DEPTH))
            row("most_fields (sum)", _run(engine, english, queries, _multi_match("most_fields", None), DEPTH))
            flat = _load(engine, documents, "english", flat=True)
            created.append(flat)
            row("one field (title + text)", _run(engine, flat, queries, lambda t: {"match": {"all": t}}, DEPTH))
        else:  # a node without analysis-common: only the standard analyzer's rows are comparable
            result["note"] = "this node has no english analyzer (no analysis-common module): english rows not run"
            print(result["note"], file=sys.stderr)
        standard = _load(engine, documents, "standard", flat=False)
        created.append(standard)
        row("beir, standard analyzer", _run(engine, standard, queries, _multi_match("best_fields", 0.5), DEPTH))
        result["engine_seconds"] = round(time.monotonic() - started, 1)
        row("bm25s, beir setup (independent)", beir_bm25_run(documents, queries, DEPTH))
    finally:
        for index in created:
            engine.delete_index(index)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
