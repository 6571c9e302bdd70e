"""Ingest throughput: `splade-es ingest --vectors` versus a bare `helpers.bulk` of the same payload.

Both load the same precomputed documents into fresh indices of the same OpenSearch node
(one timed run each, after one untimed warm-up load so the JVM is equally warm for both);
the ratio ingest / helpers.bulk is printed (target >= 0.9). The ingest figure is the whole
command: reading the corpus and vectors files, checking the index, checkpoints, refresh.

    URL=$(splade-es engine start --kind opensearch --port 0 | tail -n 1)
    python benchmarks/ingest_throughput.py --url "$URL" --vectors vectors.jsonl --corpus ../shared/data/cranfield
"""

from __future__ import annotations

import argparse
import json
import time

from click.testing import CliRunner
from opensearchpy import OpenSearch, helpers

from splade_es.toolkit.cli import main
from splade_es.io.corpus import read_corpus, read_vectors, resolve_corpus
from splade_es.toolkit.engines.connect import connect
from splade_es.toolkit.layouts import SpladeLayout
from splade_es.toolkit.mappings import VectorIndexSpec, index_body


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--vectors", required=True)
    parser.add_argument("--corpus", required=True)
    args = parser.parse_args()
    engine = connect(args.url)
    spec = VectorIndexSpec("bench", None, {})
    documents = list(read_corpus(resolve_corpus(args.corpus, None, None)))
    vectors = {doc_id: features for _, doc_id, features in read_vectors(args.vectors)}
    actions = [{"_index": "bench-bulk", "_id": d.id, "_source": SpladeLayout(spec).document(d, vectors[d.id])}
               for d in documents]
    for name in ("bench-warmup", "bench-bulk", "bench-ingest"):
        engine.delete_index(name)
    client = OpenSearch([args.url], timeout=60)
    engine.create_index("bench-warmup", index_body(engine.info, spec))
    helpers.bulk(client, [{**action, "_index": "bench-warmup"} for action in actions], chunk_size=500)
    engine.delete_index("bench-warmup")
    engine.create_index("bench-bulk", index_body(engine.info, spec))
    start = time.perf_counter()
    helpers.bulk(client, actions, chunk_size=500)
    client.indices.refresh(index="bench-bulk")
    bulk_rate = len(actions) / (time.perf_counter() - start)
    start = time.perf_counter()
    result = CliRunner().invoke(main, ["ingest", "--index", "bench-ingest", "--corpus", args.corpus, "--model", "bench",
                                       "--vectors", args.vectors, "--url", args.url, "--no-progress", "--json",
                                       "--state-dir", "/tmp/splade-es-bench-state"])
    ingest_rate = len(actions) / (time.perf_counter() - start)
    assert result.exit_code == 0, result.output
    assert engine.count("bench-ingest") == engine.count("bench-bulk") == len(actions)
    print(json.dumps({"engine": f"{engine.info.kind} {engine.info.version}", "docs": len(actions), "helpers_bulk_docs_per_s": round(bulk_rate, 1),
                      "ingest_docs_per_s": round(ingest_rate, 1), "ratio": round(ingest_rate / bulk_rate, 3)}))


if __name__ == "__main__":
    main_()
