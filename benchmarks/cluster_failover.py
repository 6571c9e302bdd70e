"""Kill the elected master of a running local cluster mid-ingest; report what the index holds.

Runs against the cluster ``splade-es engine start --kind K --nodes 3`` started (read from
``engine status``), with precomputed vectors, so no model time is measured. Writes
``benchmarks/results/cluster_failover_<kind>.json``.

    splade-es engine start --kind elasticsearch --nodes 3 --heap 384m --fresh
    python benchmarks/cluster_failover.py --kind elasticsearch --vectors cranfield-vectors.jsonl \\
        --model ./tiny-model
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from splade_es.io.corpus import read_corpus, resolve_corpus
from splade_es.toolkit.engines.connect import connect
from splade_es.toolkit.engines.node import LocalNode
from splade_cli import CLI

RESULTS = Path(__file__).parent / "results"


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=["opensearch", "elasticsearch"], required=True)
    parser.add_argument("--corpus", default=str(Path(__file__).resolve().parents[2] / "shared/data/cranfield"))
    parser.add_argument("--vectors", required=True, help="splade-es encode --json output for the corpus")
    parser.add_argument("--model", required=True, help="the model of the vectors; it encodes the query made with "
                                                       "the node down")
    parser.add_argument("--kill-after", type=int, default=300, help="settled documents before the kill")
    args = parser.parse_args()

    state = LocalNode(args.kind).status()
    if state is None or len(state.members()) < 3:
        sys.exit(f"start a cluster first: splade-es engine start --kind {args.kind} --nodes 3")
    urls = ",".join(member.url for member in state.members())
    index, state_dir = f"failover-{uuid.uuid4().hex[:8]}", Path(tempfile.mkdtemp())
    command = ["ingest", "--index", index, "--corpus", args.corpus, "--model", args.model, "--vectors",
               args.vectors, "--shards", "3", "--replicas", "1", "--chunk-docs", "50", "--concurrency", "1",
               "--url", urls, "--state-dir", str(state_dir), "--no-progress", "--json"]
    started = time.monotonic()
    run = _cli(*command)
    done = 0
    while done < args.kill_after and run.poll() is None:
        time.sleep(0.02)
        for checkpoint in state_dir.glob("ingest-*.json"):
            try:
                done = json.loads(checkpoint.read_text())["done"]
            except (ValueError, OSError, KeyError):
                pass
    engine = connect(urls)
    master = engine._send("GET", "/_cat/master", params={"format": "json"})[0]["node"]
    victim = next(member for member in state.members() if member.name == master)
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic() - started
    out, err = run.communicate()
    runs = [{"exit": run.returncode, "seconds": round(time.monotonic() - started, 1), "stderr_tail": err[-600:]}]
    if run.returncode != 0:
        run = _cli(*command, "--resume")
        out, err = run.communicate()
        runs.append({"exit": run.returncode, "seconds": round(time.monotonic() - started, 1),
                     "stderr_tail": err[-600:]})
    survivors = connect(",".join(member.url for member in state.members() if member is not victim))
    health = survivors._send("GET", "/_cluster/health", params={"wait_for_nodes": "2"})
    survivors.refresh(index)
    hits = survivors.search(index, {"size": 5000, "_source": False, "query": {"match_all": {}}})["hits"]["hits"]
    corpus = {document.id for document in read_corpus(resolve_corpus(Path(args.corpus), None, None))}
    search = _cli("search", "--index", index, "--model", args.model, "--url", urls, "--json", "--k", "5",
                  "shock wave boundary layer")
    answer, search_err = search.communicate()
    result = {
        "kind": args.kind, "version": state.version, "nodes": len(state.members()), "killed": master,
        "killed_after_documents": done, "killed_at_seconds": round(killed_at, 1), "runs": runs,
        "summary": json.loads(out.strip().splitlines()[-1]) if out.strip() else None,
        "count": survivors.count(index), "ids_equal_corpus": sorted(h["_id"] for h in hits) == sorted(corpus),
        "health": health["status"], "nodes_after": health["number_of_nodes"], "shard_layout": survivors.shard_layout(index),
        "search_exit": search.returncode,
        "search_hits": len(json.loads(answer)["hits"]) if search.returncode == 0 else None,
        "search_warned_about_dead_node": victim.url in search_err, "search_stderr_tail": search_err[-400:],
        "date": time.strftime("%Y-%m-%d"), "load_1m": os.getloadavg()[0], "cpus": os.cpu_count(),
    }
    survivors.delete_index(index)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"cluster_failover_{args.kind}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
