"""A real engine at scale: ingest against a bare bulk load, index size, and query cost per method.

For each corpus directory from ``benchmarks/scale_corpus.py generate`` (``--corpora``, smallest
first) and one engine (``--url``), every load runs in its own process, so its peak resident memory
(``ru_maxrss``) is its own:

- ``bulk``: the reference, ``helpers.streaming_bulk`` of the engine's own Python client with the
  exact documents ``ingest`` writes (same mapping, 500 per request), streamed from the files;
- ``ingest``: ``splade-es ingest --vectors`` of the same corpus with its defaults (the whole command:
  the precheck pass over the files, checkpoints, the final count); docs/s against ``bulk`` is the
  ratio to watch;
- ``pruned``: ``ingest --doc-min-weight W`` into a third index (documents statically pruned; W
  defaults to the weights' lower quartile);
- ``text``: the text alone (``helpers.streaming_bulk``), for BM25's share of the disk;
- ``eval``: ``splade-es eval`` of the generated queries (their precomputed vectors) on the ingested
  index, whose peak RSS should not grow with the corpus either.

Then each index is flushed and force-merged to one segment (so sizes and query times compare
like with like), its primary store size read, and the queries run one at a time, ``size`` 10
without sources, the methods taking turns (:func:`schedule`): BM25 (BEIR's ``multi_match``), the
full SPLADE query, its ``--top-k`` heaviest terms, two-phase (``--two-phase`` terms first, the
rest rescoring ``--two-phase-window`` hits per shard), the full query on the pruned index, and
Elasticsearch's token pruning (``--token-pruning``: the engine drops frequent light tokens, a
rescore of the window adds them back) (``--top-k``, ``--two-phase`` and ``--token-pruning``
take lists: one method per value). Each method reports the
engine's ``took`` p50/p99, the client's p50, both medians over BM25's, QPS of one client,
recall@10 against the full query's top 10 (the exact ranking), and nDCG@10 against the generated
judgments (pytrec_eval). ``--shards`` lays every index out in that many primary shards (replicas
stay the cluster's default, unassigned on one node).

    URL=$(splade-es engine start --kind opensearch --heap 2g --port 0 | tail -n 1)
    python benchmarks/engine_scale.py --url "$URL" --corpora /tmp/scale-100k,/tmp/scale-300k,/tmp/scale-1m \\
        --out benchmarks/results/engine_scale_os219.json --chart benchmarks/results/engine_scale_os219.png

Loading a million documents four times takes most of an hour; the query settings take seconds.
``--reuse`` times other settings (``--top-k``, ``--two-phase``) on the indices the last run left
(``--index-prefix``, default ``scale-``), loading nothing: the run marked them with its corpus's
path and fingerprint (the sha256 of its vectors, query vectors and judgments), and indices marked
with another corpus, or not marked, are refused.

    python benchmarks/engine_scale.py --url "$URL" --corpora /tmp/scale-1m --reuse --top-k 32 --two-phase 16 \\
        --out benchmarks/results/engine_scale_os219_sweep.json

Nothing here keeps a corpus in memory: a million documents stream through every step.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson

from memory import peak_rss_bytes

if TYPE_CHECKING:
    from splade_es.toolkit.engines.base import Engine
    from splade_es.toolkit.query.forms import TokenPruning

SUFFIXES = {"bulk": "bulk", "ingest": "splade", "pruned": "pruned", "text": "text"}  # index name per load
MODEL = "generated"  # the name recorded in the indices' _meta (the vectors come from the generator)
QUERIED = ("ingest", "pruned")  # the indices the queries run on: what --reuse needs to find
MARK = "benchmark_corpus"  # their _meta.splade_es entry recording which corpus they hold
# What a run reads of a corpus directory; the fingerprint covers the vectors, queries and judgments.
CORPUS_FILES = ("corpus.jsonl", "vectors.jsonl", "query-vectors.jsonl", "queries.jsonl", "qrels/test.tsv")
FINGERPRINTED = ("vectors.jsonl", "query-vectors.jsonl", "qrels/test.tsv")


def index_prefix(value: str) -> str:
    """An ``--index-prefix``: a plain index-name start, never empty, a wildcard or a list (the four
    indices are deleted by name before every load)."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a lowercase index-name prefix ([a-z0-9][a-z0-9._-]*)")
    return value


def index_names(prefix: str) -> dict[str, str]:
    """Each load's index: ``<prefix>bulk``, ``<prefix>splade``, ``<prefix>pruned``, ``<prefix>text``."""
    return {step: f"{prefix}{suffix}" for step, suffix in SUFFIXES.items()}


# ---------------------------------------------------------------- loads (child processes)
def _documents(corpus: Path, with_vectors: bool) -> Iterator[tuple[object, dict[str, float]]]:
    """The corpus's documents with their vectors, both files streamed in step (the generator writes
    them in the same order; a mismatch stops the run)."""
    from splade_es.io.corpus import Document, read_corpus, read_vectors, resolve_corpus

    vectors = read_vectors(corpus / "vectors.jsonl") if with_vectors else None
    for document in read_corpus(resolve_corpus(corpus, None, None)):
        if not isinstance(document, Document):
            raise SystemExit(f"{corpus}: a bad corpus record: {document}")
        features: dict[str, float] = {}
        if vectors is not None:
            _, vector_id, features = next(vectors)
            if vector_id != document.id:
                raise SystemExit(f"{corpus}: vectors.jsonl is out of step with corpus.jsonl at id {document.id}")
        yield document, features


def bulk_load(url: str, corpus: Path, index: str, text_only: bool, shards: int) -> dict:
    """The same documents as ``ingest`` writes, through the client's own streaming bulk helper."""
    from splade_es.toolkit.engines.connect import connect
    from splade_es.toolkit.layouts import SpladeLayout
    from splade_es.toolkit.mappings import VectorIndexSpec, choose_field_type, index_body, with_shards

    engine = connect(url)
    spec = VectorIndexSpec(MODEL, None, {}, field_type=choose_field_type(engine.info.capabilities, None, url))
    layout = SpladeLayout(spec)
    body = with_shards(index_body(engine.info, spec), shards, None)
    if text_only:
        body["mappings"]["properties"] = {name: field for name, field in body["mappings"]["properties"].items()
                                          if field.get("type") == "text"}
    engine.delete_index(index)
    engine.create_index(index, body)
    engine._send("PUT", f"/{index}/_settings", {"index": {"refresh_interval": "-1"}})
    if engine.info.kind == "opensearch":
        from opensearchpy import OpenSearch, helpers
        client = OpenSearch([url], timeout=120)
    else:
        from elasticsearch import Elasticsearch, helpers
        client = Elasticsearch([url], request_timeout=120)

    def actions() -> Iterator[dict]:
        for document, features in _documents(corpus, not text_only):
            source = layout.document(document, features)
            if text_only:
                source = {name: value for name, value in source.items() if name in body["mappings"]["properties"]}
            yield {"_index": index, "_id": document.id, "_source": source}

    started, count = time.perf_counter(), 0
    for ok, item in helpers.streaming_bulk(client, actions(), chunk_size=500, raise_on_error=False,
                                           max_retries=3):
        if not ok:
            raise SystemExit(f"bulk: refused {item}")
        count += 1
    engine._send("PUT", f"/{index}/_settings", {"index": {"refresh_interval": None}})
    engine.refresh(index)
    return {"docs": count, "seconds": round(time.perf_counter() - started, 2)}


def _cli(arguments: list[str]) -> dict:
    """A ``splade-es`` command in this process (so ru_maxrss is the command's own): its wall time and
    the JSON summary it printed last."""
    from click.testing import CliRunner

    from splade_es.toolkit.cli import main

    started = time.perf_counter()
    result = CliRunner().invoke(main, arguments)
    seconds = time.perf_counter() - started
    if result.exit_code != 0:
        raise SystemExit(f"{arguments[0]} failed: {result.output[-2000:]}")
    return {"summary": json.loads(result.stdout.strip().splitlines()[-1]), "seconds": round(seconds, 2)}


def ingest_load(url: str, corpus: Path, index: str, shards: int, extra: list[str]) -> dict:
    """``splade-es ingest --vectors`` with its defaults, into ``shards`` primary shards."""
    with tempfile.TemporaryDirectory() as state:
        done = _cli(["ingest", "--index", index, "--corpus", str(corpus), "--vectors", str(corpus / "vectors.jsonl"),
                     "--model", MODEL, "--url", url, "--no-progress", "--json", "--state-dir", state,
                     "--shards", str(shards), *extra])
    summary = done["summary"]
    return {"docs": summary["indexed"] + summary.get("resumed", 0), "seconds": done["seconds"]}


def eval_run(url: str, corpus: Path, index: str) -> dict:
    """``splade-es eval`` of every generated query (precomputed vectors, 1,000 hits each) on the ingested
    index: its wall time and, from the caller, its peak RSS, which should not grow with the corpus."""
    done = _cli(["eval", "--dataset", str(corpus), "--index", index, "--url", url, "--query-vectors",
                 str(corpus / "query-vectors.jsonl"), "--no-tuned", "--no-progress", "--json"])
    summary = done["summary"]
    return {"docs": summary["index_docs"], "queries": summary["queries"], "seconds": done["seconds"],
            "ndcg@10": round(summary["metrics"]["ndcg@10"], 4)}


def run_child(step: str, url: str, corpus: Path, prefix: str, shards: int, extra: list[str]) -> dict:
    """One load in a fresh interpreter; its wall time, docs/s and own peak RSS."""
    command = [sys.executable, __file__, "--child", step, "--url", url, "--corpora", str(corpus),
               "--index-prefix", prefix, "--shards", str(shards), "--child-extra", json.dumps(extra)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"step {step} on {corpus} failed:\n{done.stderr[-3000:]}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    if step != "eval":
        record["docs_per_s"] = round(record["docs"] / record["seconds"], 1)
    return record


# ---------------------------------------------------------------- queries
def _queries(corpus: Path, texts: dict[str, str], limit: int) -> list[tuple[str, str, dict[str, float]]]:
    """The first ``limit`` generated query vectors with their texts."""
    found = []
    with (corpus / "query-vectors.jsonl").open("rb") as handle:
        for line in handle:
            if len(found) == limit:
                break
            record = orjson.loads(line)
            found.append((str(record["id"]), texts[str(record["id"])], record["features"]))
    return found


def measure_queries(url: str, corpus: Path, names: dict[str, str], args: argparse.Namespace) -> dict:
    """Each method's latency, its medians against BM25's, recall@10 against the full query and nDCG@10.

    The methods take turns step by step (:func:`schedule`), so a slow moment of this shared machine
    lands on all of them alike and the ratios to BM25 are side by side, not minutes apart."""
    from splade_es.toolkit.engines.connect import connect
    from splade_es.toolkit.eval.beir import load_beir
    from splade_es.toolkit.eval.metrics import evaluate
    from splade_es.toolkit.eval.runner import percentiles
    from splade_es.toolkit.query.forms import split_heaviest
    from splade_es.toolkit.query.searcher import Searcher

    engine = connect(url)
    dataset = load_beir(corpus)
    queries = _queries(corpus, dataset.queries, args.queries)
    exact = Searcher(engine, names["ingest"], use_tuned=False)
    pruned = Searcher(engine, names["pruned"], use_tuned=False)
    methods = {
        "bm25": lambda text, vector: (names["ingest"], exact.body(exact.bm25_query(text), 10)),
        "splade full": lambda text, vector: (names["ingest"], exact.sparse_body(vector, 10)),
    }
    for k in args.top_k:
        methods[f"splade top-{k}"] = lambda text, vector, k=k: (
            names["ingest"], exact.sparse_body(split_heaviest(vector, k)[0], 10))
    for n in args.two_phase:
        phased = Searcher(engine, names["ingest"], two_phase=n, two_phase_window=args.two_phase_window,
                          use_tuned=False)
        methods[f"two-phase {n}"] = lambda text, vector, phased=phased: (names["ingest"], phased.sparse_body(vector, 10))
    for pruning in args.token_pruning:
        engine_pruned = Searcher(engine, names["ingest"], two_phase_window=args.two_phase_window, use_tuned=False,
                                 token_pruning=pruning)
        methods[f"token pruning {pruning.label}"] = lambda text, vector, searcher=engine_pruned: (
            names["ingest"], searcher.sparse_body(vector, 10))
    methods["splade full, pruned documents"] = lambda text, vector: (names["pruned"], pruned.sparse_body(vector, 10))
    for _, text, vector in queries[:20]:  # warm-up: caches and JIT, untimed
        for build in methods.values():
            engine.search(*_no_source(build(text, vector)))
    runs: dict[str, dict[str, dict[str, float]]] = {name: {} for name in methods}
    timings: dict[str, dict[str, list[float]]] = {name: {"took": [], "wall": []} for name in methods}
    for position, name in schedule(list(methods), len(queries)):
        query_id, text, vector = queries[position]
        index, body = _no_source(methods[name](text, vector))
        started = time.perf_counter()
        reply = engine.search(index, body)
        timings[name]["wall"].append((time.perf_counter() - started) * 1000)
        timings[name]["took"].append(float(reply["took"]))
        runs[name][query_id] = {hit["_id"]: float(hit["_score"]) for hit in reply["hits"]["hits"]}
    wanted = {q for q, _, _ in queries}
    qrels = {q: judged for q, judged in dataset.qrels.items() if q in wanted}
    reference = runs["splade full"]
    medians = {name: {kind: percentiles(values) for kind, values in timing.items()} for name, timing in timings.items()}
    results = {}
    for name, run in runs.items():
        means, _ = evaluate(qrels, run)
        recall = [len(_top10(run.get(q, {})) & _top10(reference[q])) / max(len(_top10(reference[q])), 1)
                  for q in reference]
        took, client, wall = medians[name]["took"], medians[name]["wall"], timings[name]["wall"]
        results[name] = {"took_ms": {"p50": took["p50"], "p99": took["p99"]},
                         "client_ms": {"p50": client["p50"]},
                         "p50_vs_bm25": {"took": _ratio(took["p50"], medians["bm25"]["took"]["p50"]),
                                         "client": _ratio(client["p50"], medians["bm25"]["wall"]["p50"])},
                         "qps_one_client": round(1000 * len(wall) / sum(wall), 1),
                         "recall@10_vs_full": round(float(np.mean(recall)), 4),
                         "ndcg@10": round(float(means["ndcg@10"]), 4)}
    return {"queries": len(queries), "timed_per_method": {name: len(timing["wall"]) for name, timing in timings.items()},
            "order": "interleaved (Williams design), a different query per method at each step",
            "two_phase_window": args.two_phase_window, "methods": results}


def _ratio(median: float, bm25: float) -> float | None:
    """A median over BM25's; None where BM25's is 0 (``took`` counts whole milliseconds)."""
    return round(median / bm25, 2) if bm25 > 0 else None


def schedule(methods: list[str], queries: int) -> Iterator[tuple[int, str]]:
    """(query position, method) in timing order, ``2 * queries`` steps of one search per method.

    The order within a step follows a Williams design (rows of a Latin square, cycled step by step),
    so within a step each method runs first, and right after each other method, equally often over
    a cycle: none always follows a heavy one (whose garbage or cold caches it would inherit). Steps
    run back to back, so across their boundary a few pairs recur more often (about 1.5x). Within a
    step each method runs a different query (method ``j`` is ``j * queries // len(methods)``
    queries ahead), so none finds the postings another just read for the same query in the CPU's
    caches; with fewer queries than methods some must share. Over the two passes every method
    runs every query twice."""
    rows = williams_rows(len(methods))
    stride = max(queries // len(methods), 1)
    for step in range(2 * queries):
        for j in rows[step % len(rows)]:
            yield (step + j * stride) % queries, methods[j]


def williams_rows(n: int) -> list[list[int]]:
    """A Williams design for ``n`` treatments: ``n`` orders (``2n`` when ``n`` is odd) in which each
    treatment comes first once per order set and each ordered pair is adjacent equally often."""
    first, low, high = [0], 1, n - 1
    for position in range(1, n):
        if position % 2:
            first.append(low)
            low += 1
        else:
            first.append(high)
            high -= 1
    rows = [[(value + shift) % n for value in first] for shift in range(n)]
    return rows + [row[::-1] for row in rows] if n % 2 else rows


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive whole number")
    return number


def _counts(value: str) -> list[int]:
    """``--top-k`` / ``--two-phase``: comma-separated positive term counts."""
    try:
        counts = [int(part) for part in value.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1 or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of distinct positive counts")
    return counts


def _token_prunings(value: str) -> list[TokenPruning]:
    """``--token-pruning``: space-separated FREQ_RATIO,WEIGHT pairs (Elastic's default: 5,0.4)."""
    from splade_es.errors import ConfigError
    from splade_es.toolkit.query.forms import TokenPruning

    try:
        found = [TokenPruning.parse(part) for part in value.split()]
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not found or len(set(found)) != len(found):
        raise argparse.ArgumentTypeError(f"{value!r} is not a list of distinct FREQ_RATIO,WEIGHT pairs")
    return found


def _no_source(pair: tuple[str, dict]) -> tuple[str, dict]:
    index, body = pair
    return index, {**body, "_source": False}


def _top10(run: dict[str, float]) -> set[str]:
    return {doc for doc, _ in sorted(run.items(), key=lambda item: (-item[1], item[0]))[:10]}


def merged_sizes(url: str, names: dict[str, str]) -> dict[str, int]:
    """Each index flushed and merged to one segment, then its primary store size in bytes."""
    from splade_es.toolkit.engines.connect import connect
    from splade_es.toolkit.engines.rest import url_part

    engine = connect(url, timeout=3600)  # merging a million documents takes minutes
    for index in names.values():  # one segment each: sizes and query times of alike indices
        engine.settle(index)
        engine.force_merge(index, 1)
        engine.settle(index)  # the merged-away segments' files are dropped only now
    rows = engine._send("GET", f"/_cat/indices/{','.join(url_part(name) for name in names.values())}",
                        params={"format": "json", "bytes": "b", "h": "index,pri.store.size"})
    return {row["index"]: int(row["pri.store.size"]) for row in rows}


# ---------------------------------------------------------------- the run
def lower_quartile_weight(corpus: Path, sample: int = 10_000) -> float:
    """The 25th percentile of the stored weights over the first ``sample`` documents: the pruned
    index drops about a quarter of the postings, as ``tune``'s first document threshold does."""
    weights = []
    with (corpus / "vectors.jsonl").open("rb") as handle:
        for _, line in zip(range(sample), handle):
            weights.extend(orjson.loads(line)["features"].values())
    return round(float(np.percentile(weights, 25)), 4)


def fingerprint(corpus: Path) -> str:
    """The sha256 of the corpus's vectors, queries and judgments, whole: two generated corpora of one
    seed, with and without the query coupling, differ only in their few hundred judged documents
    and their queries (a few seconds per GB, next to the minutes of loading)."""
    digest = hashlib.sha256()
    for name in FINGERPRINTED:
        digest.update(name.encode() + b"\0")
        with (corpus / name).open("rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()[:16]


def mark(url: str, corpus: Path, names: dict[str, str]) -> None:
    """Record which corpus the queried indices hold, next to what ingest recorded, for ``--reuse``."""
    from splade_es.toolkit.engines.connect import connect
    from splade_es.toolkit.ingest import set_splade_meta

    engine = connect(url)
    held = {"fingerprint": fingerprint(corpus), "corpus": str(corpus)}
    for step in QUERIED:
        set_splade_meta(engine, names[step], MARK, held)


def shard_count(engine: Engine, names: dict[str, str]) -> int:
    """The queried indices' primary shards, read back (one count: the methods compare like with like)."""
    counts = {(engine.shard_layout(names[step]) or (0, 0))[0] for step in QUERIED}
    if len(counts) != 1 or 0 in counts:
        raise SystemExit(f"{', '.join(names[step] for step in QUERIED)}: primary shards {sorted(counts)}, not one count")
    return counts.pop()


def requery(url: str, corpus: Path, names: dict[str, str], args: argparse.Namespace) -> dict:
    """Only the queries, on the indices an earlier run loaded with this same corpus."""
    from splade_es.toolkit.engines.connect import connect
    from splade_es.toolkit.ingest import splade_meta

    engine = connect(url)
    metas = {}
    for step in QUERIED:  # every index there and marked before the corpus is hashed
        index = names[step]
        if not engine.exists(index):
            raise SystemExit(f"--reuse: {index} does not exist: run once without --reuse first")
        metas[step] = splade_meta(engine, index)
        held = metas[step].get(MARK)
        if not isinstance(held, dict) or "fingerprint" not in held:
            raise SystemExit(f"--reuse: {index} has no {MARK} mark of this script's (not loaded by it, or by an "
                             "older version): run once without --reuse first")
    wanted = fingerprint(corpus)
    for step in QUERIED:
        index, held = names[step], metas[step][MARK]
        if held["fingerprint"] != wanted:
            raise SystemExit(f"--reuse: {index} holds {held.get('corpus')} ({held['fingerprint']}), not {corpus} "
                             f"({wanted}): run once without --reuse first")
    return {"corpus": str(corpus), "docs": engine.count(names["ingest"]), "reused": True,
            "doc_min_weight": metas["pruned"]["pruning"]["min_weight"],
            "shards": shard_count(engine, names), **measure_queries(url, corpus, names, args)}


def measure(url: str, corpus: Path, names: dict[str, str], args: argparse.Namespace) -> dict:
    doc_min_weight = args.doc_min_weight if args.doc_min_weight is not None else lower_quartile_weight(corpus)
    from splade_es.toolkit.engines.connect import connect

    engine = connect(url)
    for index in names.values():  # ingest adds to an existing index: every load starts empty
        engine.delete_index(index)
    prefix = args.index_prefix
    loads = {"bulk": run_child("bulk", url, corpus, prefix, args.shards, []),
             "ingest": run_child("ingest", url, corpus, prefix, args.shards, []),
             "pruned": run_child("pruned", url, corpus, prefix, args.shards, ["--doc-min-weight", str(doc_min_weight)]),
             "text": run_child("text", url, corpus, prefix, args.shards, [])}
    loads["ingest"]["ratio_to_bulk"] = round(loads["ingest"]["docs_per_s"] / loads["bulk"]["docs_per_s"], 3)
    sizes = merged_sizes(url, names)
    mark(url, corpus, names)
    docs = loads["ingest"]["docs"]
    disk = {step: {"bytes": sizes[names[step]], "gb_per_million_docs": round(sizes[names[step]] / docs * 1e6 / 1e9, 3)}
            for step in ("ingest", "pruned", "text")}
    return {"corpus": str(corpus), "docs": docs, "doc_min_weight": doc_min_weight, "loads": loads, "disk": disk,
            "eval": run_child("eval", url, corpus, prefix, args.shards, []), "shards": shard_count(engine, names),
            **measure_queries(url, corpus, names, args)}


def chart(records: list[dict], path: Path, title: str) -> None:
    """p50 against corpus size per method, and each method's p50 over BM25's with the 2x target: the
    client's round trip, whose resolution the engine's whole-millisecond ``took`` lacks at 100k. A
    method measured at some sizes only (runs with other ``--top-k`` lists) is drawn where it was."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency, ratio) = plt.subplots(1, 2, figsize=(11, 4.5))
    methods = list(dict.fromkeys(method for record in records for method in record["methods"]))
    markers = "osD^v<>Px*"
    for number, method in enumerate(methods):
        measured = [r for r in records if method in r["methods"]]
        sizes = [r["docs"] for r in measured]
        p50 = [r["methods"][method]["client_ms"]["p50"] for r in measured]
        style = {"marker": markers[number % len(markers)], "label": method}
        latency.plot(sizes, p50, **style)
        ratio.plot(sizes, [ms / r["methods"]["bm25"]["client_ms"]["p50"] for ms, r in zip(p50, measured)], **style)
    ratio.axhline(2.0, color="black", linestyle="--", linewidth=1, label="target: 2x BM25")
    latency.set_ylabel("p50 latency (client round trip, ms)")
    ratio.set_ylabel("p50 / BM25's p50")
    for axis in (latency, ratio):
        axis.set_xscale("log")
        axis.set_xlabel("documents")
        axis.grid(True, alpha=0.3)
    figure.legend(*ratio.get_legend_handles_labels(), loc="center right", fontsize=7)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0, 0.82, 1))
    figure.savefig(path, dpi=120)


def chart_title(engine: str, records: list[dict]) -> str:
    """The engine and its shard layout (runs before ``--shards`` had one shard)."""
    shards = sorted({record.get("shards", 1) for record in records})
    if len(shards) > 1:
        layout = "shards " + "/".join(map(str, shards))
    else:
        layout = f"{shards[0]} shard" + ("s" if shards[0] > 1 else "")
    return f"{engine}, {layout}: query p50 against corpus size"


def merged_results(paths: list[Path]) -> tuple[str, list[dict]]:
    """One engine's runs from several result files, by corpus size; a size measured twice is refused."""
    engine, runs = None, {}
    for path in paths:
        try:
            result = json.loads(path.read_text())
            name, records = result["engine"], [(run["docs"], run) for run in result["runs"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"{path}: not an engine_scale.py result ({type(exc).__name__}: {exc})") from None
        if engine is not None and name != engine:
            raise SystemExit(f"{path}: {name}, but the files before it hold {engine} (one engine per chart)")
        engine = name
        for docs, run in records:
            if docs in runs:
                raise SystemExit(f"{path}: {docs} documents are measured twice")
            runs[docs] = run
    if not runs:
        raise SystemExit(f"{', '.join(map(str, paths))}: no runs to draw")
    return engine, [runs[docs] for docs in sorted(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="one engine node (a scratch cluster: the --index-prefix indices are replaced)")
    parser.add_argument("--corpora", help="comma-separated generated corpus directories, smallest first")
    parser.add_argument("--queries", type=_positive, default=200, help="queries per method (default 200)")
    parser.add_argument("--top-k", type=_counts, default=[16], metavar="K,K,...",
                        help="terms kept by the pruned query, one method per value (default 16)")
    parser.add_argument("--two-phase", type=_counts, default=[8], metavar="N,N,...",
                        help="first-phase terms of two-phase search, one method per value (default 8)")
    parser.add_argument("--two-phase-window", type=_positive, default=100, metavar="W",
                        help="hits each shard rescores in two-phase search and token pruning (default 100)")
    parser.add_argument("--token-pruning", type=_token_prunings, default=[], metavar="'R,W R,W ...'",
                        help="Elasticsearch 8.15+: its token pruning with these FREQ_RATIO,WEIGHT thresholds, then "
                             "the window rescored with the pruned tokens, one method per pair (e.g. '5,0.4 3,0.4')")
    parser.add_argument("--shards", type=_positive, metavar="N",
                        help="primary shards of every loaded index (default 1; --reuse keeps the indices' own)")
    parser.add_argument("--doc-min-weight", type=float,
                        help="static document pruning of the pruned index (default: the stored weights' lower "
                             "quartile, so about a quarter of the postings go)")
    parser.add_argument("--reuse", action="store_true",
                        help="load nothing: time the queries (other --top-k / --two-phase) on the indices the last "
                             "run left, which must hold this one corpus")
    parser.add_argument("--index-prefix", default="scale-", type=index_prefix,
                        help="names of the four indices: PREFIX{bulk,splade,pruned,text} (default scale-)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--chart", type=Path, help="a PNG of the client p50 against corpus size per method, and "
                        "its ratio to BM25's against the 2x target")
    parser.add_argument("--chart-from", type=Path, nargs="+", metavar="JSON",
                        help="measure nothing: draw --chart from earlier --out files of one engine (sizes run in "
                             "separate sessions), their runs merged by corpus size")
    parser.add_argument("--child", choices=[*SUFFIXES, "eval"], help=argparse.SUPPRESS)
    parser.add_argument("--child-extra", default="[]", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.chart_from:
        if not args.chart or args.url or args.corpora:
            parser.error("--chart-from needs --chart and measures nothing (no --url, no --corpora)")
        engine, runs = merged_results(args.chart_from)
        chart(runs, args.chart, chart_title(engine, runs))
        return
    if not args.url or not args.corpora:
        parser.error("--url and --corpora are required (unless --chart-from)")
    corpora = [Path(part) for part in args.corpora.split(",") if part]
    if args.reuse and len(corpora) != 1:
        parser.error(f"--reuse takes one corpus, the one the indices hold ({len(corpora)} given)")
    if args.reuse and args.shards is not None:
        parser.error("--reuse takes no --shards: the indices keep the layout they were loaded with")
    args.shards = args.shards or 1
    if args.reuse and args.doc_min_weight is not None:
        parser.error("--reuse takes no --doc-min-weight: the pruned index keeps the threshold it was loaded with")
    for corpus in corpora:
        missing = [name for name in CORPUS_FILES if not (corpus / name).is_file()]
        if missing:
            parser.error(f"{corpus}: not a generated corpus (no {', '.join(missing)}; "
                         "see benchmarks/scale_corpus.py generate)")
    names = index_names(args.index_prefix)
    if args.child:
        extra = json.loads(args.child_extra)
        if args.child == "eval":
            record = eval_run(args.url, corpora[0], names["ingest"])
        elif args.child in ("bulk", "text"):
            record = bulk_load(args.url, corpora[0], names[args.child], args.child == "text", args.shards)
        else:
            record = ingest_load(args.url, corpora[0], names[args.child], args.shards, extra)
        print(json.dumps({**record, "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1)}))
        return
    from splade_es.toolkit.engines.connect import connect

    info = connect(args.url).info
    if args.token_pruning and not info.capabilities.token_pruning:
        parser.error(f"--token-pruning needs Elasticsearch 8.15+ (the sparse_vector query's pruning_config), "
                     f"not {info.kind} {info.version}")
    result = {"engine": f"{info.kind} {info.version}", "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d"), "load_average_start": list(os.getloadavg()),
              "command": " ".join(sys.argv), "runs": []}
    for corpus in corpora:
        measured = requery if args.reuse else measure
        result["runs"].append(measured(args.url, corpus, names, args))
        text = json.dumps(result, indent=1)
        if args.out:  # written after each corpus: a long run that stops keeps what it measured
            args.out.write_text(text + "\n")
    print(text)
    if args.chart:
        chart(result["runs"], args.chart, chart_title(result["engine"], result["runs"]))


if __name__ == "__main__":
    main()
