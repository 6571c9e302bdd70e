"""`splade-es ingest` against the local engine and real OpenSearch / Elasticsearch nodes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import SHARED_DATA
from splade_es.toolkit.cli import main
from toolkit.fault_proxy import FaultProxy, NoProxy

CRANFIELD = SHARED_DATA / "cranfield"
CRANFIELD_DOCS = 1400


def _vectors(path: Path) -> dict[str, dict[str, float]]:
    return {r["id"]: r["features"] for r in map(json.loads, path.read_text().splitlines())}


def _ingest(target: dict, *extra: str, vectors: Path | None = None, url: str | None = None, model: str = "tiny-model"):
    args = ["ingest", "--index", target["index"], "--corpus", str(CRANFIELD), "--model", model, "--no-progress",
            "--json", *target["args"], *extra]
    if vectors is not None:
        args += ["--vectors", str(vectors)]
    if url is not None:
        args[args.index("--url") + 1] = url
    return CliRunner().invoke(main, args)


def _summary(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def _exact_query(engine, field: str, field_type: str, vector: dict[str, float]) -> dict:
    if field_type == "rank_features":
        clauses = [{"rank_feature": {"field": f"{field}.{k}", "linear": {}, "boost": v}} for k, v in vector.items()]
        return {"bool": {"should": clauses}}
    if engine.info.capabilities.sparse_vector_query:
        return {"sparse_vector": {"field": field, "query_vector": vector, "prune": False}}
    return {"bool": {"should": [{"term": {field: {"value": k, "boost": v}}} for k, v in vector.items()]}}


def test_cranfield_counts_vectors_and_scores_are_exact(target, cranfield_vectors, tmp_path):
    summary = _summary(_ingest(target, vectors=cranfield_vectors))
    engine, index = target["engine"], target["index"]
    assert summary["indexed"] == CRANFIELD_DOCS and summary["failed"] == 0
    assert engine.count(index) == CRANFIELD_DOCS == summary["index_docs"]
    assert summary["empty"] == 2  # two Cranfield abstracts are empty: indexed with no features
    meta = next(iter(engine.mappings(index).values()))["_meta"]["splade_es"]
    assert meta["model"] == "tiny-model" and meta["field"] == "splade"
    expected = _vectors(cranfield_vectors)
    for doc_id in ("1", "486", "1400"):
        stored = engine.get(index, doc_id)
        assert stored["splade"] == pytest.approx(expected[doc_id], rel=2**-9)
        top = sorted(expected[doc_id], key=expected[doc_id].get, reverse=True)
        assert stored["splade_terms"] == top[:32]
    # Scores: the engine's dot product equals the exact one within Lucene's 9-bit precision.
    query_vector = dict(sorted(expected["486"].items(), key=lambda kv: -kv[1])[:40])
    field_type = meta["field_type"]
    reply = engine.search(index, {"query": _exact_query(engine, "splade", field_type, query_vector), "size": 5})
    for hit in reply["hits"]["hits"]:
        exact = sum(w * expected[hit["_id"]].get(k, 0.0) for k, w in query_vector.items())
        assert hit["_score"] == pytest.approx(exact, rel=2 ** -7)
    assert reply["hits"]["hits"][0]["_id"] == "486"
    # Running again replaces, never duplicates.
    again = _summary(_ingest(target, vectors=cranfield_vectors))
    assert again["indexed"] == CRANFIELD_DOCS and engine.count(index) == CRANFIELD_DOCS


@pytest.mark.parametrize("target", ["local", "opensearch"], indirect=True)
def test_doc_pruning_applies_to_precomputed_vectors(target, cranfield_vectors):
    """--doc-top-k / --doc-min-weight prune --vectors too (static pruning), and the index says so."""
    expected = _vectors(cranfield_vectors)
    weights = sorted(w for features in expected.values() for w in features.values())
    cut = weights[len(weights) // 2]
    summary = _summary(_ingest(target, "--doc-top-k", "20", "--doc-min-weight", str(cut), vectors=cranfield_vectors))
    engine, index = target["engine"], target["index"]
    kept = {doc_id: dict(sorted(((k, w) for k, w in features.items() if w >= cut), key=lambda kv: (-kv[1], kv[0]))[:20])
            for doc_id, features in expected.items()}
    assert summary["features"] == sum(map(len, kept.values())) < sum(map(len, expected.values()))
    for doc_id in ("1", "486", "1400"):
        assert 0 < len(kept[doc_id]) <= 20
        assert engine.get(index, doc_id)["splade"] == pytest.approx(kept[doc_id], rel=2**-9)
    meta = next(iter(engine.mappings(index).values()))["_meta"]["splade_es"]
    assert meta["pruning"] == {"precomputed": cranfield_vectors.name, "top_k": 20, "min_weight": cut}


@pytest.mark.parametrize("target", ["local", "opensearch"], indirect=True)
def test_ingest_encodes_with_the_tiny_model(target, tiny_mistral_dir, cranfield_vectors):
    summary = _summary(_ingest(target, "--batch-size", "128", model=str(tiny_mistral_dir)))
    engine, index = target["engine"], target["index"]
    assert summary["indexed"] == CRANFIELD_DOCS and engine.count(index) == CRANFIELD_DOCS
    expected = _vectors(cranfield_vectors)
    for doc_id in ("2", "700"):
        stored = engine.get(index, doc_id)["splade"]
        heaviest = sorted(expected[doc_id], key=expected[doc_id].get, reverse=True)[:50]
        assert {k: stored.get(k) for k in heaviest} == pytest.approx({k: expected[doc_id][k] for k in heaviest}, rel=2**-9)


def test_another_model_is_refused(target, cranfield_vectors):
    _summary(_ingest(target, vectors=cranfield_vectors))
    result = _ingest(target, vectors=cranfield_vectors, model="another-model")
    assert result.exit_code == 1
    assert "holds vectors from model 'tiny-model'" in result.output and "Traceback" not in result.output


def test_alias_points_at_the_newest_versioned_index(target, cranfield_vectors):
    engine, alias = target["engine"], target["index"]
    first = _summary(_ingest(target, "--alias", alias, vectors=cranfield_vectors))
    time.sleep(1.1)  # versioned names have one-second resolution
    second = _summary(_ingest(target, "--alias", alias, vectors=cranfield_vectors))
    assert first["index"] != second["index"] and first["index"].startswith(alias + "-")
    assert engine.alias_targets(alias) == [second["index"]]
    assert engine.count(alias) == CRANFIELD_DOCS
    engine.delete_index(first["index"])
    engine.delete_index(second["index"])


@pytest.mark.parametrize("target", ["opensearch", "elasticsearch"], indirect=True)
def test_429_and_503_answers_are_retried_until_everything_is_indexed(target, cranfield_vectors):
    faults = {1: 429, 2: 503, 4: 429, 5: 502, 7: 504, 9: 429}
    with FaultProxy(target["url"], faults=faults.get) as proxy:
        summary = _summary(_ingest(target, "--chunk-docs", "100", "--max-retries", "5", vectors=cranfield_vectors,
                                   url=proxy.url))
    assert proxy.injected == len(faults)
    assert summary["retries"] >= len(faults) and summary["indexed"] == CRANFIELD_DOCS
    assert target["engine"].count(target["index"]) == CRANFIELD_DOCS


def test_unreachable_engine_fails_fast_with_one_line():
    started = time.monotonic()
    result = CliRunner().invoke(main, ["ingest", "--index", "x", "--corpus", str(CRANFIELD), "--model", "m",
                                       "--url", "http://admin:hunter2@127.0.0.1:1", "--vectors", os.devnull])
    assert result.exit_code == 1 and time.monotonic() - started < 30
    assert "cannot reach the engine at http://127.0.0.1:1" in result.output
    assert "hunter2" not in result.output and "Traceback" not in result.output


def test_tls_is_verified_by_default(tmp_path):
    from splade_es.toolkit.engines.connect import connect
    from splade_es.toolkit.engines.credentials import Credentials

    assert Credentials().verify_certs and Credentials.from_env().verify_certs
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    server = subprocess.Popen(["openssl", "s_server", "-accept", "0", "-cert", str(cert), "-key", str(key), "-www"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = ""
        while not line.startswith("ACCEPT"):  # "ACCEPT 0.0.0.0:PORT" after any notices
            line = server.stdout.readline()
        port = line.strip().rsplit(":", 1)[-1]
        from splade_es.toolkit.engines.base import EngineUnavailable

        with pytest.raises(EngineUnavailable, match="TLS verification failed"):
            connect(f"https://127.0.0.1:{port}", credentials=Credentials())
    finally:
        server.kill()


def test_malformed_line_names_file_and_line_and_skip_bad_goes_on(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"_id": str(i), "text": f"wing number {i}"}) for i in range(5)]
    lines.insert(3, '{"_id": "bad", "text": ')
    corpus.write_text("\n".join(lines) + "\n")
    common = ["ingest", "--index", "bad-input", "--corpus", str(corpus), "--model", "m", "--vectors", "VECTORS",
              "--data-dir", str(tmp_path / "engine"), "--state-dir", str(tmp_path / "state"), "--no-progress"]
    vectors = tmp_path / "v.jsonl"
    vectors.write_text("".join(json.dumps({"id": i, "features": {"wing": 1.0}}) + "\n"
                               for i in ["0", "1", "2", "bad", "3", "4"]))
    common[common.index("VECTORS")] = str(vectors)
    failed = CliRunner().invoke(main, common)
    assert failed.exit_code == 1 and f"{corpus}:4: invalid JSON" in failed.output
    from splade_es.toolkit.engines.local import LocalEngine

    assert not LocalEngine(tmp_path / "engine").exists("bad-input"), "nothing is created or sent before the check"
    # Problems past the first records too: a vector line whose weight the engines refuse, and one id out of step.
    good = [json.dumps({"id": i, "features": {"wing": 1.0}}) for i in ["0", "1", "2", "bad", "3", "4"]]
    clean = tmp_path / "clean.jsonl"
    clean.write_text("".join(json.dumps({"_id": str(i), "text": f"wing number {i}"}) + "\n" for i in range(5)))
    for broken, message in ((json.dumps({"id": "4", "features": {"wing": 1e-39}}), f"{vectors}:5: feature 'wing'"),
                            (json.dumps({"id": "9", "features": {"wing": 1.0}}), f"{vectors}:5: id '9' does not match")):
        vectors.write_text("\n".join([*good[:3], *good[4:5], broken]) + "\n")
        bad_vector = CliRunner().invoke(main, [*common[:common.index("--corpus") + 1], str(clean),
                                               *common[common.index("--corpus") + 2:]])
        assert bad_vector.exit_code == 1 and message in bad_vector.output, bad_vector.output
        assert not LocalEngine(tmp_path / "engine").exists("bad-input")
    # --skip-bad still prechecks what it cannot skip: a vectors file that ends before the corpus.
    vectors.write_text("".join(line + "\n" for line in [*good[:3], *good[4:5]]))
    short = CliRunner().invoke(main, [*common[:common.index("--corpus") + 1], str(clean),
                                      *common[common.index("--corpus") + 2:], "--skip-bad"])
    assert short.exit_code == 1 and "ends before the corpus does" in short.output
    assert not LocalEngine(tmp_path / "engine").exists("bad-input")
    # --no-precheck: one pass; the bad last record stops the load part-way, after documents were sent.
    vectors.write_text("\n".join([*good[:3], *good[4:5], json.dumps({"id": "4", "features": {"wing": 1e-39}})]) + "\n")
    one_pass = CliRunner().invoke(main, [*common[:common.index("--corpus") + 1], str(clean),
                                         *common[common.index("--corpus") + 2:], "--no-precheck", "--batch-size", "2"])
    assert one_pass.exit_code == 1 and f"{vectors}:5: feature 'wing'" in one_pass.output
    assert LocalEngine(tmp_path / "engine").exists("bad-input")
    LocalEngine(tmp_path / "engine").delete_index("bad-input")
    vectors.write_text("".join(line + "\n" for line in good))
    skipped = CliRunner().invoke(main, [*common, "--skip-bad", "--failures", str(tmp_path / "failures.jsonl"), "--json"])
    assert skipped.exit_code == 1
    summary = json.loads(skipped.stdout.strip().splitlines()[-1])
    assert summary["indexed"] == 5 and summary["skipped"] == 1
    recorded = [json.loads(x) for x in (tmp_path / "failures.jsonl").read_text().splitlines()]
    assert recorded == [{"where": f"{corpus}:4", "reason": recorded[0]["reason"]}] and "invalid JSON" in recorded[0]["reason"]


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "splade_es.toolkit.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.parametrize("target", ["local", "opensearch"], indirect=True)
def test_a_killed_run_resumes_with_nothing_lost_or_doubled(target, cranfield_vectors, tmp_path):
    state = Path(target["args"][target["args"].index("--state-dir") + 1])
    base = ["ingest", "--index", target["index"], "--corpus", str(CRANFIELD), "--model", "tiny-model",
            "--vectors", str(cranfield_vectors), "--chunk-docs", "50", "--batch-size", "50", "--concurrency", "1",
            "--no-progress", "--json", *target["args"]]
    url = target["url"]
    with FaultProxy(url, delay=0.3) if url else NoProxy() as proxy:
        args = list(base)
        if url:
            args[args.index("--url") + 1] = proxy.url
        run = _cli(*args)
        deadline = time.monotonic() + 120
        done = 0
        while time.monotonic() < deadline and done < 300:
            time.sleep(0.05 if url else 0.001)
            for checkpoint in state.glob("ingest-*.json"):
                try:
                    done = json.loads(checkpoint.read_text())["done"]
                except (ValueError, OSError):
                    pass
        run.send_signal(signal.SIGKILL)
        run.wait()
        assert 300 <= done < CRANFIELD_DOCS, "the run was not killed part-way"
        if url:  # resumed through the node's own URL, not the proxy's: the checkpoint follows the cluster
            args[args.index("--url") + 1] = url
        resumed = _cli(*args, "--resume")
        out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["resumed"] >= 300 and summary["resumed"] + summary["indexed"] == CRANFIELD_DOCS
    target["engine"].refresh(target["index"])
    assert target["engine"].count(target["index"]) == CRANFIELD_DOCS


@pytest.mark.parametrize("target", ["local"], indirect=True)
def test_two_torchrun_ranks_each_load_their_shard_and_resume(target, cranfield_vectors, tmp_path):
    args = ["ingest", "--index", target["index"], "--corpus", str(CRANFIELD), "--model", "tiny-model",
            "--vectors", str(cranfield_vectors), "--no-progress", "--json", *target["args"]]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port,
               "-m", "splade_es.toolkit.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["indexed"] == CRANFIELD_DOCS and target["engine"].count(target["index"]) == CRANFIELD_DOCS
    # A document goes to the rank its id hashes to: both ranks get a share, and together all of it.
    from splade_es.io.corpus import read_corpus, resolve_corpus
    from splade_es.toolkit.ingest import shard_of

    records = list(read_corpus(resolve_corpus(CRANFIELD, None, None)))
    shares = [sum(shard_of(r, i, 2) == rank for i, r in enumerate(records)) for rank in (0, 1)]
    assert min(shares) > 500 and sum(shares) == CRANFIELD_DOCS
    checkpoints = [json.loads(p.read_text()) for p in Path(target["args"][-1]).glob("ingest-*.json")]
    assert sorted(c["done"] for c in checkpoints) == sorted(shares)
    assert all(c["failed"] == {} and c["skipped"] == {} for c in checkpoints)
    again = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads(again.stdout.strip().splitlines()[-1])
    assert resumed["resumed"] == CRANFIELD_DOCS and resumed["indexed"] == 0
