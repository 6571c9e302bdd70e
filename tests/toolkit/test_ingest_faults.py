"""The data path under faults, bad input and changed inputs: nothing lost, nothing served incomplete.

Faults come from :class:`FaultProxy` in front of the real OpenSearch / Elasticsearch nodes
(refused items really are kept from the engine), or from a recording engine for the local one.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import SHARED_DATA
from splade_es.toolkit.cli import main
from toolkit.fault_proxy import FaultProxy

CRANFIELD = SHARED_DATA / "cranfield"
CRANFIELD_DOCS = 1400


def _run(target: dict, *extra: str, vectors: Path, url: str | None = None, corpus: Path = CRANFIELD,
         index: str | None = None):
    args = ["ingest", "--index", index or target["index"], "--corpus", str(corpus), "--model", "tiny-model",
            "--vectors", str(vectors), "--no-progress", "--json", *target["args"], *extra]
    if url is not None:
        args[args.index("--url") + 1] = url
    result = CliRunner().invoke(main, args)
    lines = [line for line in result.stdout.strip().splitlines() if line.startswith("{")]
    return result, (json.loads(lines[-1]) if lines else None)


def _checkpoints(target: dict) -> list[dict]:
    state = Path(target["args"][target["args"].index("--state-dir") + 1])
    return [json.loads(p.read_text()) for p in sorted(state.glob("ingest-*.json"))]


@pytest.mark.parametrize("target", ["opensearch", "elasticsearch"], indirect=True)
def test_refused_documents_keep_resume_from_completing_and_the_alias_from_moving(target, cranfield_vectors, tmp_path):
    """A permanent 400 on two documents and 429s that outlast the retries on three others: the run exits 1,
    the checkpoint and failures file name all five, the alias stays; --resume re-sends the three
    retryable ones (now accepted) and still reports the two refused; only when those pass too does the
    alias move, onto an index holding exactly the corpus."""
    engine, alias = target["engine"], target["index"]
    permanent, transient = {"5", "777"}, {"12", "640", "1399"}
    healed: set[str] = set()

    def refuse(doc_id: str, attempt: int) -> int | None:
        if doc_id in permanent - healed:
            return 400
        if doc_id in transient and not healed:
            return 429
        return None

    failures = tmp_path / "failures.jsonl"
    common = ("--alias", alias, "--max-retries", "1", "--failures", str(failures), "--chunk-docs", "200")
    with FaultProxy(target["url"], items=refuse) as proxy:
        first, summary = _run(target, *common, vectors=cranfield_vectors, url=proxy.url)
        assert first.exit_code == 1, first.output
        assert summary["failed"] == 5 and summary["complete"] is False and not summary["alias_moved"]
        assert summary["missing"] == 5 and summary["index_docs"] == CRANFIELD_DOCS - 5
        assert "5 documents were refused" in first.stderr and str(failures) in first.stderr
        assert engine.alias_targets(alias) == []
        recorded = {entry["id"]: entry for entry in map(json.loads, failures.read_text().splitlines())}
        assert set(recorded) == permanent | transient
        assert {recorded[i]["status"] for i in permanent} == {400} and all(recorded[i]["retryable"] for i in transient)
        assert all(recorded[i]["where"].startswith(str(CRANFIELD / "corpus.jsonl") + ":") for i in recorded)
        (checkpoint,) = _checkpoints(target)
        assert set(checkpoint["failed"]) == permanent | transient and checkpoint["done"] == CRANFIELD_DOCS

        healed.add("transient")  # the cluster recovers from its overload; the two bad documents stay bad
        again, resumed = _run(target, *common, "--resume", vectors=cranfield_vectors, url=proxy.url)
        assert again.exit_code == 1 and resumed["failed"] == 2 and resumed["retried"] == 3
        assert resumed["resumed"] == CRANFIELD_DOCS - 5 and resumed["missing"] == 2, resumed
        assert engine.alias_targets(alias) == []
        assert {e["id"] for e in map(json.loads, failures.read_text().splitlines())} == permanent

        healed |= permanent  # say the mapping was fixed: a permanent failure is re-sent only by a fresh run
        third, still = _run(target, *common, "--resume", vectors=cranfield_vectors, url=proxy.url)
        assert third.exit_code == 1 and still["failed"] == 2
        fresh, done = _run(target, *common, vectors=cranfield_vectors, url=proxy.url)
    assert fresh.exit_code == 0, fresh.output
    assert done["index"] == summary["index"], "the incomplete index is reused, not orphaned"
    assert done["complete"] and done["alias_moved"] and done["index_docs"] == CRANFIELD_DOCS
    assert engine.alias_targets(alias) == [done["index"]] and engine.count(alias) == CRANFIELD_DOCS
    assert not failures.exists()


@pytest.mark.parametrize("target", ["opensearch"], indirect=True)
def test_413_splits_requests_and_item_429s_are_retried(target, cranfield_vectors):
    """Bodies over 150 kB get 413 (the request is halved until it fits); the first two attempts of
    every tenth document get a per-item 429 inside a 200 reply (retried); two requests lose their
    connection without a reply (retried like a 503)."""
    def refuse(doc_id: str, attempt: int) -> int | None:
        return 429 if int(doc_id) % 10 == 0 and attempt <= 2 else None

    drops = {2: "drop", 5: "drop"}
    with FaultProxy(target["url"], faults=drops.get, items=refuse, max_bytes=150_000) as proxy:
        result, summary = _run(target, "--chunk-docs", "400", "--max-retries", "4", vectors=cranfield_vectors,
                               url=proxy.url)
    assert result.exit_code == 0, result.output
    assert proxy.too_large > 0 and proxy.injected == proxy.too_large + 2 and proxy.refused_items == 2 * (CRANFIELD_DOCS // 10), (
        proxy.too_large, proxy.injected, proxy.refused_items, summary)
    assert summary["indexed"] == CRANFIELD_DOCS and summary["complete"] and summary["failed"] == 0
    target["engine"].refresh(target["index"])
    assert target["engine"].count(target["index"]) == CRANFIELD_DOCS


@pytest.mark.parametrize("target", ["local", "opensearch"], indirect=True)
def test_duplicate_ids_keep_the_later_record_with_requests_in_flight_and_retries(target, tmp_path):
    """Ids repeat across requests sent four at a time, one document per request; every first copy
    is refused twice with 429 (so its retry would land after the later copy if nothing ordered them)."""
    corpus, vectors = tmp_path / "dups.jsonl", tmp_path / "dups.vectors.jsonl"
    records = []
    for i in range(60):
        doc_id = str(i % 20)  # ids 0-19, three copies each; the last copy must win
        records.append({"_id": doc_id, "text": f"copy {i // 20} of {doc_id}", "v": {f"copy{i // 20}": 1.0 + i}})
    corpus.write_text("".join(json.dumps({"_id": r["_id"], "text": r["text"]}) + "\n" for r in records))
    vectors.write_text("".join(json.dumps({"id": r["_id"], "features": r["v"]}) + "\n" for r in records))
    seen: dict[str, int] = {}

    def first_copy_slow(doc_id: str, attempt: int) -> int | None:
        seen[doc_id] = seen.get(doc_id, 0) + 1
        return 429 if seen[doc_id] <= 2 else None

    # Locally copies often share an encoded block (the earlier is dropped); through the proxy they do not.
    batch = "25" if target["kind"] == "local" else "7"
    args = ("--chunk-docs", "1", "--batch-size", batch, "--concurrency", "4", "--max-retries", "5")
    if target["url"]:
        with FaultProxy(target["url"], items=first_copy_slow) as proxy:
            result, summary = _run(target, *args, vectors=vectors, corpus=corpus, url=proxy.url)
        assert proxy.refused_items > 0
    else:
        result, summary = _run(target, *args, vectors=vectors, corpus=corpus)
    assert result.exit_code == 0, result.output
    assert summary["duplicate_ids"] == 40 and summary["expected"] == 20 and summary["index_docs"] == 20
    engine, index = target["engine"], target["index"]
    for doc_id in range(20):
        stored = engine.get(index, str(doc_id))
        assert stored["text"] == f"copy 2 of {doc_id}" and set(stored["splade"]) == {"copy2"}


@pytest.mark.parametrize("target", ["local"], indirect=True)
def test_resume_refuses_a_changed_run_and_a_corrupt_checkpoint(target, cranfield_vectors, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text((CRANFIELD / "corpus.jsonl").read_text())
    vectors = tmp_path / "vectors.jsonl"
    vectors.write_text(cranfield_vectors.read_text())
    first, _ = _run(target, vectors=vectors, corpus=corpus)
    assert first.exit_code == 0, first.output
    state = Path(target["args"][target["args"].index("--state-dir") + 1])
    (path,) = state.glob("ingest-*.json")
    plain = tmp_path / "plain"
    plain.write_text("")
    assert path.stat().st_mode == plain.stat().st_mode, "a checkpoint gets a new file's mode, not 0600"
    assert stat.S_IMODE(path.stat().st_mode) != 0o600
    assert not list(state.glob(".*.tmp")), "no temporary file is left behind"

    changed, _ = _run(target, "--resume", "--doc-min-weight", "0.5", vectors=vectors, corpus=corpus)
    assert changed.exit_code == 1 and "cannot resume: the layout changed" in changed.output
    with corpus.open("a") as handle:
        handle.write(json.dumps({"_id": "extra", "text": "one more"}) + "\n")
    grown, _ = _run(target, "--resume", vectors=vectors, corpus=corpus)  # the pre-pass sees the vectors fall short
    assert grown.exit_code == 1 and "vectors.jsonl: ends before the corpus does" in grown.output
    grown, _ = _run(target, "--resume", "--no-precheck", vectors=vectors, corpus=corpus)
    assert grown.exit_code == 1 and "cannot resume: the corpus changed" in grown.output
    vectors.write_text(vectors.read_text() + json.dumps({"id": "extra", "features": {"one": 1.0}}) + "\n")
    both, _ = _run(target, "--resume", vectors=vectors, corpus=corpus)
    assert "the corpus, vectors changed" in both.output
    # Rewritten in place with the same size and modification time: still another corpus.
    fresh_start, _ = _run(target, vectors=vectors, corpus=corpus)
    assert fresh_start.exit_code == 0, fresh_start.output
    before = corpus.stat()
    text = corpus.read_text()
    corpus.write_text(text.replace("experimental", "Experimental", 1))
    os.utime(corpus, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert corpus.stat().st_size == before.st_size and corpus.stat().st_mtime_ns == before.st_mtime_ns
    same_stat, _ = _run(target, "--resume", vectors=vectors, corpus=corpus)
    assert same_stat.exit_code == 1 and "cannot resume: the corpus changed" in same_stat.output

    path.write_text('{"version": 2, "identity": ')
    corrupt, _ = _run(target, "--resume", vectors=vectors, corpus=corpus)
    assert corrupt.exit_code == 1 and "Traceback" not in corrupt.output
    (line,) = [x for x in corrupt.output.splitlines() if x.startswith("Error")]
    assert f"{path}: not a readable ingest checkpoint" in line and "delete it to start over" in line
    fresh, summary = _run(target, vectors=vectors, corpus=corpus)  # without --resume: starts over
    assert fresh.exit_code == 0, fresh.output
    assert summary["expected"] == summary["index_docs"] == CRANFIELD_DOCS + 1 and summary["resumed"] == 0


@pytest.mark.parametrize("target", ["opensearch"], indirect=True)
def test_layout_options_and_refresh_restored_after_the_load(target, cranfield_vectors):
    """--shards / --replicas set the new index's layout; refresh is off during the load (seen through
    the proxy) and back to the index's own setting afterwards, also when the load fails."""
    engine, index = target["engine"], target["index"]
    settings_seen = []

    def watch(number: int) -> None:
        if number == 2:
            settings_seen.append(engine._send("GET", f"/{index}/_settings")[index]["settings"]["index"])

    with FaultProxy(target["url"], on_bulk=watch) as proxy:
        result, summary = _run(target, "--shards", "2", "--replicas", "0", "--chunk-docs", "300",
                               vectors=cranfield_vectors, url=proxy.url)
    assert result.exit_code == 0, result.output
    assert settings_seen and settings_seen[0]["refresh_interval"] == "-1"
    after = engine._send("GET", f"/{index}/_settings")[index]["settings"]["index"]
    assert after["number_of_shards"] == "2" and after["number_of_replicas"] == "0"
    assert "refresh_interval" not in after, "restored to the cluster's default"
    # A failed load (every bulk request refused with a permanent 400) still restores it.
    engine._send("PUT", f"/{index}/_settings", {"index": {"refresh_interval": "7s"}})
    with FaultProxy(target["url"], faults=lambda n: 400) as proxy:
        failed, _ = _run(target, vectors=cranfield_vectors, url=proxy.url)
    assert failed.exit_code == 1 and "HTTP 400" in failed.output
    assert engine._send("GET", f"/{index}/_settings")[index]["settings"]["index"]["refresh_interval"] == "7s"


def test_shipped_mappings_leave_replicas_to_the_cluster():
    from splade_es.toolkit.mappings import load_mapping

    for engine, name in (("opensearch", "rank_features"), ("elasticsearch", "rank_features"),
                         ("elasticsearch", "sparse_vector")):
        assert "number_of_replicas" not in json.dumps(load_mapping(engine, name))


@pytest.mark.parametrize("target", ["opensearch"], indirect=True)
def test_a_fresh_run_after_a_killed_one_restores_the_index_refresh(target, tmp_path):
    """A load killed with refresh off leaves ``-1`` on the index; the next run, even without --resume,
    must put back the index's own setting, not the ``-1`` it finds."""
    import subprocess
    import sys

    engine, index = target["engine"], target["index"]
    command = [sys.executable, "-m", "splade_es.toolkit.cli", "ingest", "--index", index, "--corpus", str(CRANFIELD),
               "--encoder", "text", "--chunk-docs", "100", "--no-progress", *target["args"]]
    killed = subprocess.run(command, env={**os.environ, "SPLADE_ES_FAILPOINTS": "acknowledged=3"}, capture_output=True)
    assert killed.returncode == -9
    settings = engine._send("GET", f"/{index}/_settings")[index]["settings"]["index"]
    assert settings["refresh_interval"] == "-1"
    fresh = subprocess.run(command, capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr
    assert "refresh_interval" not in engine._send("GET", f"/{index}/_settings")[index]["settings"]["index"]
    assert engine.count(index) == CRANFIELD_DOCS


def _dup_corpus(tmp_path: Path, order: list[tuple[str, str]], name: str) -> tuple[Path, Path]:
    corpus, vectors = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.vectors.jsonl"
    corpus.write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in order))
    vectors.write_text("".join(json.dumps({"id": i, "features": {t.replace(" ", "_"): 1.0}}) + "\n" for i, t in order))
    return corpus, vectors


@pytest.mark.parametrize("target", ["opensearch", "elasticsearch"], indirect=True)
def test_a_request_applied_late_cannot_overwrite_a_later_copy(target, tmp_path):
    """Writes carry external versions (the load's epoch, then the corpus position): a request the
    engine applies after the client gave up on it (replayed here by hand) loses to the later copy;
    a new load, whose epoch is higher, replaces every record even where its copy sits earlier in the
    corpus; the interrupted first load may then not be resumed (its records would lose); and a
    write refused for its version is reported, not counted as indexed."""
    from splade_es.toolkit.engines.rest import bulk_line
    from splade_es.toolkit.ingest import document_version, splade_meta

    engine, index = target["engine"], target["index"]
    corpus, vectors = _dup_corpus(tmp_path, [("x", "old x"), ("y", "only y"), ("x", "new x")], "a")
    first, summary = _run(target, vectors=vectors, corpus=corpus)
    assert first.exit_code == 0, first.output
    assert engine.get(index, "x")["text"] == "new x"
    epoch = splade_meta(engine, index)["epoch"]
    (checkpoint,) = _checkpoints(target)
    assert checkpoint["epoch"] == epoch

    # The first copy's request, applied late: refused for its version, the later copy stays.
    stale = bulk_line(index, "x", {"text": "old x", "splade": {"old_x": 1.0}}, document_version(epoch, 0))
    (conflict,) = engine.bulk_raw(stale)
    assert conflict.status == 409 and "version_conflict" in conflict.reason and not conflict.retryable
    engine.refresh(index)
    assert engine.get(index, "x")["text"] == "new x"

    # Interrupted before anything settled (as a kill leaves it), then a new load of another corpus.
    state = Path(target["args"][target["args"].index("--state-dir") + 1])
    (path,) = state.glob("ingest-*.json")
    interrupted = json.dumps({**json.loads(path.read_text()), "done": 0, "complete": False})
    corpus_b, vectors_b = _dup_corpus(tmp_path, [("x", "newest x"), ("y", "newest y")], "b")
    again, summary = _run(target, vectors=vectors_b, corpus=corpus_b)
    assert again.exit_code == 0, again.output
    assert splade_meta(engine, index)["epoch"] > epoch
    assert engine.get(index, "x")["text"] == "newest x" and engine.get(index, "y")["text"] == "newest y"
    path.write_text(interrupted)
    stale_resume, _ = _run(target, "--resume", vectors=vectors, corpus=corpus)
    assert stale_resume.exit_code == 1 and "cannot resume: a newer load (epoch" in stale_resume.output
    assert engine.get(index, "x")["text"] == "newest x"

    # Another writer put a higher version on y: the next load says so instead of counting y as indexed.
    higher = document_version(splade_meta(engine, index)["epoch"] + 5, 0)
    assert engine.bulk_raw(bulk_line(index, "y", {"text": "elsewhere", "splade": {"e": 1.0}}, higher)) == []
    third, summary = _run(target, vectors=vectors_b, corpus=corpus_b)
    assert third.exit_code == 1 and summary["failed"] == 1 and summary["indexed"] == 1, third.output
    assert "1 documents were refused" in third.stderr
