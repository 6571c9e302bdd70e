"""A 3-node OpenSearch cluster loses a node mid-ingest and nothing is lost.

The test starts its own cluster (``LocalNode`` with its own node directory, sharing the
distribution .ci/run assembles), so killing a node disturbs no other test. It runs where the
engine tests run: under CI=true always (a missing engine fails it), elsewhere when
SPLADE_ES_TEST_OPENSEARCH_URL says engines are wanted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import SHARED_DATA, engine_url
from splade_es.io.corpus import read_corpus, resolve_corpus
from splade_es.toolkit.engines.connect import connect
from splade_es.toolkit.engines.node import LocalNode, engines_root

CRANFIELD = SHARED_DATA / "cranfield"
CRANFIELD_DOCS = 1400


@pytest.fixture
def cluster():
    engine_url("opensearch")  # the engine tests' gate: fails under CI=true when engines are missing
    node = LocalNode("opensearch", node_dir=engines_root() / "nodes" / f"opensearch-cluster-test-{uuid.uuid4().hex[:8]}")
    try:
        state = node.start(port=0, heap="320m", fresh=True, timeout=240, nodes=3)
        yield node, state
    finally:
        node.stop(timeout=20)
        shutil.rmtree(node.node_dir, ignore_errors=True)


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "splade_es.toolkit.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _done(state_dir: Path) -> int:
    for checkpoint in state_dir.glob("ingest-*.json"):
        try:
            return json.loads(checkpoint.read_text())["done"]
        except (ValueError, OSError, KeyError):
            pass
    return 0


def test_a_node_killed_mid_ingest_loses_nothing(cluster, cranfield_vectors, tiny_mistral_dir, tmp_path):
    node, state = cluster
    urls = ",".join(member.url for member in state.members())
    index = f"cluster-{uuid.uuid4().hex[:8]}"
    command = ["ingest", "--index", index, "--corpus", str(CRANFIELD), "--model", str(tiny_mistral_dir),
               "--vectors", str(cranfield_vectors), "--shards", "3", "--replicas", "1", "--chunk-docs", "50",
               "--concurrency", "1", "--url", urls, "--state-dir", str(tmp_path / "state"), "--no-progress", "--json"]
    run = _cli(*command)
    deadline = time.monotonic() + 120
    while _done(tmp_path / "state") < 300 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    engine = connect(urls)
    manager = engine._send("GET", "/_cat/cluster_manager", params={"format": "json"})[0]["node"]
    victim = next(member for member in state.members() if member.name == manager)  # the hardest node to lose
    done = _done(tmp_path / "state")
    os.kill(victim.pid, signal.SIGKILL)
    assert 300 <= done < CRANFIELD_DOCS and run.poll() is None, "the node was not killed part-way"
    out, err = run.communicate(timeout=300)
    if run.returncode != 0:  # stopped on the lost node: the same command resumes it
        run = _cli(*command, "--resume")
        out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["failed"] == 0

    survivors = ",".join(member.url for member in state.members() if member is not victim)
    engine = connect(survivors)
    health = engine._send("GET", "/_cluster/health", params={"wait_for_nodes": "2"})
    assert health["status"] != "red" and health["number_of_nodes"] == 2
    assert engine.shard_layout(index) == (3, 1)
    engine.refresh(index)
    assert engine.count(index) == CRANFIELD_DOCS
    hits = engine.search(index, {"size": 2000, "_source": False, "query": {"match_all": {}}})["hits"]["hits"]
    corpus_ids = {document.id for document in read_corpus(resolve_corpus(CRANFIELD, None, None))}
    assert sorted(hit["_id"] for hit in hits) == sorted(corpus_ids)

    search = _cli("search", "--index", index, "--model", str(tiny_mistral_dir), "--url", urls, "--json", "--k", "5",
                  "shock wave boundary layer")
    out, err = search.communicate(timeout=300)
    assert search.returncode == 0, err
    assert victim.url in err  # the dead node was tried, reported, and the others answered
    assert len(json.loads(out)["hits"]) == 5
    assert not victim.alive
