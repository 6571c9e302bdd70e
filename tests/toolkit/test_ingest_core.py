"""The ingest library's pieces on their own: backoff, the watermark, the local store's torn tail."""

from __future__ import annotations

import json
import random
import statistics
import tracemalloc

import pytest

from splade_es.toolkit.engines.base import EngineError
from splade_es.toolkit.engines.local import LocalEngine
from splade_es.io.corpus import Document
from splade_es.toolkit.ingest import Ingester, IngestOptions, LastPositions, _Watermark, no_vectors
from splade_es.toolkit.layouts import TextLayout


def test_backoff_is_full_jitter_not_lock_step(tmp_path):
    options = IngestOptions("x", initial_backoff=0.5, max_backoff=30.0, state_dir=tmp_path, seed=7)
    ingester = Ingester(LocalEngine(tmp_path / "engine"), TextLayout(), options, {})
    for retries, cap in ((0, 0.5), (3, 4.0), (10, 30.0)):
        delays = [ingester._backoff(retries) for _ in range(400)]
        assert 0 <= min(delays) and max(delays) <= cap
        # Uniform on [0, cap]: the mean near cap/2, the spread wide (a lock-step backoff has none).
        assert statistics.mean(delays) == pytest.approx(cap / 2, rel=0.15)
        assert statistics.pstdev(delays) == pytest.approx(cap / 12 ** 0.5, rel=0.15)
    other = Ingester(LocalEngine(tmp_path / "engine"), TextLayout(),
                     IngestOptions("x", state_dir=tmp_path, seed=8), {})
    assert [other._backoff(2) for _ in range(5)] != [ingester._backoff(2) for _ in range(5)]


def test_the_watermark_moves_only_over_a_contiguous_settled_prefix():
    mark = _Watermark(10)
    assert not mark.settle([12, 13]) and mark.value == 10
    assert mark.settle([10]) and mark.value == 11
    assert mark.settle([11]) and mark.value == 14
    assert not mark.settle([3]) and mark.value == 14  # below the mark: already settled


def test_last_positions_agree_with_a_dict_across_merges(monkeypatch):
    monkeypatch.setattr(LastPositions, "FLUSH", 64)  # many merges of the recent dict into the arrays
    rng = random.Random(3)
    table, reference = LastPositions(), {}
    for position in range(5000):
        doc_id = f"id-{rng.randrange(3000)}"  # about a third of the records repeat an id
        assert table.get(doc_id) == reference.get(doc_id)
        table.set(doc_id, position)
        reference[doc_id] = position
    assert all(table.get(doc_id) == position for doc_id, position in reference.items())
    assert table.get("never-seen") is None and len(table) == len(reference)


def _peak_bytes_of_a_load(tmp_path, documents: int) -> int:
    """Peak Python allocations of one shard's load of ``documents`` tiny text documents."""
    engine = LocalEngine(tmp_path / f"engine-{documents}")
    options = IngestOptions("memory", state_dir=tmp_path / f"state-{documents}", show_progress=False)
    ingester = Ingester(engine, TextLayout(), options, {})
    ingester.prepare_index("memory")
    records = (Document(f"document-{i:08d}", {"text": "x"}, f"corpus:{i}") for i in range(documents))
    tracemalloc.start()
    try:
        summary, distinct = ingester.run("memory", records, no_vectors)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert summary.indexed == distinct == documents
    return peak


def test_a_load_keeps_tens_of_bytes_per_document_not_the_documents(tmp_path, monkeypatch):
    """Streaming guard: 20k more documents may cost their id table (16 bytes each, twice while a
    merge copies it), not a per-id dict or a list of the records (well over 100 bytes each)."""
    monkeypatch.setattr(LastPositions, "FLUSH", 1024)
    _peak_bytes_of_a_load(tmp_path, 100)  # lazy imports (tqdm's locks...) happen here, not in the measured runs
    small, large = _peak_bytes_of_a_load(tmp_path, 5_000), _peak_bytes_of_a_load(tmp_path, 25_000)
    assert (large - small) / 20_000 < 40, (small, large)


def _local_with_docs(tmp_path, n: int) -> tuple[LocalEngine, object]:
    engine = LocalEngine(tmp_path)
    engine.create_index("store", {"mappings": {"properties": {"text": {"type": "text"}}}})
    engine.bulk("store", [(str(i), {"text": f"doc {i}"}) for i in range(n)])
    return engine, tmp_path / "indices" / "store" / "docs.jsonl"


def test_local_store_survives_a_torn_last_line(tmp_path):
    engine, log = _local_with_docs(tmp_path, 3)
    with log.open("ab") as handle:
        handle.write(b'{"_id": "3", "_source": {"te')  # a writer killed half-way
    fresh = LocalEngine(tmp_path)
    assert fresh.count("store") == 3 and fresh.get("store", "2") == {"text": "doc 2"}
    assert fresh.bulk("store", [("3", {"text": "doc 3"})]) == []
    lines = log.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])
    assert LocalEngine(tmp_path).count("store") == 4


def test_local_store_names_file_and_line_of_damage_elsewhere(tmp_path):
    _, log = _local_with_docs(tmp_path, 3)
    lines = log.read_text().splitlines()
    lines[1] = lines[1][:10]
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(EngineError, match=rf"^{log}:2: not a stored document"):
        LocalEngine(tmp_path).count("store")


# ---------------------------------------------------------------- encoder output under --skip-bad
class _Vector:
    def __init__(self, features: dict) -> None:
        self.features = features

    def to_features(self) -> dict:
        return dict(self.features)


class _Encoder:
    """Stands in for a SparseEncoder whose output for one text the engines would refuse."""

    def encode_documents(self, texts, pruning=None, show_progress=False):
        return [_Vector({"ok": 1.0, "tiny": 1e-40} if "poison" in text else {"ok": 1.0}) for text in texts]


def _documents(n: int, poisoned: int):
    from splade_es.io.corpus import Document

    return [Document(str(i), {"text": "poison" if i == poisoned else f"text {i}"}, f"corpus.jsonl:{i + 1}")
            for i in range(n)]


def _splade_layout():
    from splade_es.toolkit.layouts import SpladeLayout
    from splade_es.toolkit.mappings import VectorIndexSpec

    return SpladeLayout(VectorIndexSpec("fake-model", None, None, "splade", "rank_features"))


def test_a_bad_encoder_output_stops_the_run_or_is_skipped_and_reported(tmp_path):
    from splade_es.errors import InputError
    from splade_es.toolkit.ingest import encoded_vectors, ingest_corpus

    engine = LocalEngine(tmp_path / "engine")
    options = IngestOptions("docs", state_dir=tmp_path / "state", failures_path=tmp_path / "failures.jsonl",
                            show_progress=False, encode_batch=4)
    with pytest.raises(InputError, match=r"^corpus\.jsonl:8 \(encoder output\): feature 'tiny': the weight 1e-40"):
        ingest_corpus(engine, _splade_layout(), _documents(10, poisoned=7), encoded_vectors(_Encoder(), None),
                      options, {})
    options.skip_bad = True
    summary = ingest_corpus(engine, _splade_layout(), _documents(10, poisoned=7), encoded_vectors(_Encoder(), None),
                            options, {})
    assert summary.skipped == 1 and summary.failed == 0 and not summary.complete
    assert "1 records were malformed and skipped" in summary.problem and engine.count("docs") == 9
    (entry,) = [json.loads(line) for line in (tmp_path / "failures.jsonl").read_text().splitlines()]
    assert entry["where"] == "corpus.jsonl:8 (encoder output)" and "below the smallest value" in entry["reason"]
    options.resume = True  # a resume neither re-sends nor forgets it
    again = ingest_corpus(engine, _splade_layout(), _documents(10, poisoned=7), encoded_vectors(_Encoder(), None),
                          options, {})
    assert again.skipped == 1 and again.resumed == 9 and again.indexed == 0 and not again.complete


# ---------------------------------------------------------------- several ranks, one fails
class _ThreadGroup:
    """The ranks' collectives between threads (what gloo does between torchrun processes)."""

    def __init__(self, rank: int, shared: dict) -> None:
        from splade_es.io.ranks import Ranks

        self.ranks, self._shared = Ranks(rank, 2, rank), shared

    def _exchange(self, value):
        import threading

        shared = self._shared
        with shared["lock"]:
            round_ = shared.setdefault("round", {}).get(self.ranks.rank, 0)
            shared["round"][self.ranks.rank] = round_ + 1
            shared.setdefault(round_, {})[self.ranks.rank] = value
        barrier: threading.Barrier = shared["barrier"]
        barrier.wait(timeout=5)  # a rank that never comes: torchrun would stop this one
        return [shared[round_][r] for r in range(2)]

    def broadcast(self, value):
        return self._exchange(value)[0]

    def gather(self, value):
        return self._exchange(value)


class _RefreshWatch(LocalEngine):
    def __init__(self, path, calls: list) -> None:
        super().__init__(path)
        self.calls = calls

    def set_refresh_interval(self, index, value) -> None:
        self.calls.append(value)


def test_a_failing_rank_restores_the_index_refresh_before_it_stops(tmp_path):
    """Rank 1's shard hits an error: it puts back the refresh setting rank 0 switched off (rank 0
    is still loading; torchrun stops it once rank 1 exits) and fails with its own error."""
    import threading

    from splade_es.errors import SpladeError
    from splade_es.io.corpus import Document
    from splade_es.toolkit.ingest import ingest_corpus, shard_of

    documents = [Document(str(i), {"text": f"text {i}"}, f"c:{i}") for i in range(40)]
    doomed = next(d.id for d in documents if shard_of(d, 0, 2) == 1)

    def vectors(batch):
        if any(d.id == doomed for d in batch):
            raise SpladeError("the encoder ran out of memory")
        return [{"x": 1.0} for _ in batch]

    shared = {"lock": threading.Lock(), "barrier": threading.Barrier(2)}
    calls: list = []
    outcomes: dict[int, BaseException | None] = {}

    def rank(number: int) -> None:
        engine = _RefreshWatch(tmp_path / "engine", calls)
        options = IngestOptions("docs", state_dir=tmp_path / f"state{number}", show_progress=False,
                                failures_path=tmp_path / f"f{number}.jsonl", rank=number, world_size=2)
        try:
            ingest_corpus(engine, _splade_layout(), documents, vectors, options, {}, _ThreadGroup(number, shared))
            outcomes[number] = None
        except BaseException as exc:  # noqa: BLE001
            outcomes[number] = exc

    threads = [threading.Thread(target=rank, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert str(outcomes[1]) == "the encoder ran out of memory"
    assert isinstance(outcomes[0], threading.BrokenBarrierError), "rank 0 waits in the gather until stopped"
    assert calls == ["-1", None], "refresh switched off by rank 0 for the load, restored by the failing rank 1"


def test_checkpoints_of_earlier_versions_still_match_what_they_recorded():
    """Earlier splade-es recorded files without a content digest and hub models not at all: a
    resume must not call that a change, while any real difference still is one."""
    from splade_es.toolkit.ingest import same_identity

    old = {"corpus": {"path": "/c.jsonl", "size": 10, "mtime_ns": 5}, "model_files": None}
    new = {"corpus": {"path": "/c.jsonl", "size": 10, "mtime_ns": 5, "blake2b": "ab"},
           "model_files": [{"hub": "acme/sparse", "revision": "c0ffee"}]}
    assert same_identity(old, new)
    assert not same_identity({**old, "corpus": {**old["corpus"], "size": 11}}, new)
    assert not same_identity({**old, "corpus": {**new["corpus"], "blake2b": "cd"}}, new)
    assert not same_identity(old, {**new, "model_files": [{"path": "/m/model.safetensors", "size": 1, "mtime_ns": 1}]})
    assert not same_identity({**old, "model_files": [{"hub": "acme/sparse", "revision": "0ld"}]}, new)


class _ShardedLocal(LocalEngine):
    """The local store, reporting the shard layout a real index would have."""

    def shard_layout(self, index: str) -> tuple[int, int]:
        return (3, 1)


@pytest.mark.parametrize(("shards", "replicas", "refused"), [
    (None, None, False), (3, None, False), (None, 1, False), (3, 1, False), (2, None, True), (3, 0, True)])
def test_shards_and_replicas_that_differ_from_an_existing_index_are_refused(tmp_path, shards, replicas, refused):
    from splade_es.errors import ConfigError

    engine = _ShardedLocal(tmp_path / "engine")
    layout = TextLayout()
    engine.create_index("docs", layout.create_body(engine.info))
    ingester = Ingester(engine, layout, IngestOptions("docs", state_dir=tmp_path, shards=shards, replicas=replicas), {})
    if refused:
        with pytest.raises(ConfigError, match=r"docs exists with 3 shard\(s\) and 1 replica\(s\), not the"):
            ingester.prepare_index("docs")
    else:
        ingester.prepare_index("docs")


def test_a_checkpoint_an_earlier_version_keyed_by_url_is_carried_over_to_the_cluster_key(tmp_path):
    """Earlier versions keyed a checkpoint by the engine's URL: a load they left unfinished is
    found by the cluster's key, resumed, and its old file is gone; another URL's is not taken, nor
    one whose index this cluster does not hold with that load's epoch (the URL now serves another)."""
    from splade_es.toolkit.ingest import Checkpoint

    url, cluster = "http://node-1:9200", "cluster u-1"
    key = {"engine": url, "target": "cran", "rank": 0, "world_size": 1}
    identity = {"corpus": "c.jsonl", "engine": url, "target": "cran"}
    earlier = Checkpoint(Checkpoint._path(tmp_path, key), identity, index="cran", done=700, epoch=42)
    earlier.save()
    now, at_cluster = {**identity, "engine": cluster}, {**key, "engine": cluster}
    asked: list[tuple[str, int]] = []

    def here_with(epoch):
        return lambda saved: asked.append((saved["index"], saved["epoch"])) or saved["epoch"] == epoch

    other = Checkpoint.open(tmp_path, at_cluster, now, resume=True, earlier_engine="http://node-2:9200",
                            wrote_here=here_with(42))
    assert other.done == 0 and earlier.path.is_file() and asked == [], "another URL's checkpoint was taken"
    elsewhere = Checkpoint.open(tmp_path, at_cluster, now, resume=True, earlier_engine=url, wrote_here=here_with(7))
    assert elsewhere.done == 0 and earlier.path.is_file() and asked == [("cran", 42)], "another cluster's was taken"
    resumed = Checkpoint.open(tmp_path, at_cluster, now, resume=True, earlier_engine=url, wrote_here=here_with(42))
    assert resumed.done == 700 and resumed.index == "cran" and resumed.identity["engine"] == cluster
    assert not earlier.path.is_file() and resumed.path.is_file()
