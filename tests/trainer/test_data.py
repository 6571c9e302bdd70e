"""Training data: the four sentence-transformers line shapes, BEIR splits, the mixture sampler."""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter

import numpy as np
import pytest

from conftest import SHARED_DATA
from splade_es.errors import ConfigError, InputError
from splade_es.trainer.config import DatasetConfig, TrainConfig
from splade_es.trainer import data as data_module
from splade_es.trainer.data import Dataset, Example, ExampleStore, MixtureSampler, load_dataset, parse_line


def test_all_four_line_shapes():
    rng = random.Random(0)
    assert parse_line(["a", "b"], rng) == Example("a", "b")
    assert parse_line(["a", "b", "n"], rng) == Example("a", "b", ("n",))
    pair = parse_line({"set": ["x", "y", "z"]}, rng)
    assert pair.query != pair.positive and {pair.query, pair.positive} <= {"x", "y", "z"}
    assert parse_line({"query": "q", "pos": ["p1", "p2"], "neg": ["n1"]}, rng) == Example("q", "p1", ("n1",))
    assert parse_line({"query": "q", "pos": "p", "neg": "n"}, rng) == Example("q", "p", ("n",))


def _write_gz(path, lines):
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def test_malformed_lines_are_counted_or_fail_fast(tmp_path):
    path = tmp_path / "mixed.jsonl.gz"
    _write_gz(path, ['["a", "b"]', '{"set": ["only one"]}', "not json", '["c", ""]', '{"query": "q", "pos": "p"}'])
    dataset = load_dataset(DatasetConfig(name="mixed", path=str(path)), cache_dir=tmp_path / "cache")
    assert len(dataset.examples) == 2 and dataset.bad_lines == 3
    assert dataset.bad_examples[0].startswith(f"{path}:2: ")
    for cache in ("cache", "fresh"):  # from the cache built under "count", and parsing anew
        with pytest.raises(InputError, match=r"mixed.jsonl.gz:2: "):
            load_dataset(DatasetConfig(name="mixed", path=str(path)), on_bad_line="fail", cache_dir=tmp_path / cache)


def test_missing_or_empty_datasets_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_dataset(DatasetConfig(name="gone", path=str(tmp_path / "gone.jsonl")))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="has no usable examples"):
        load_dataset(DatasetConfig(name="empty", path=str(empty)), cache_dir=tmp_path / "cache")


def test_beir_training_split_pairs_queries_with_judged_documents(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": "T", "text": "body"}\n{"_id": "d2", "text": "two"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "first"}\n{"_id": "q2", "text": "second"}\n')
    (tmp_path / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t0\nq2\tdx\t1\n")
    dataset = load_dataset(DatasetConfig(name="b", path=str(tmp_path)))
    assert dataset.examples == [Example("first", "T\nbody")] and dataset.bad_lines == 1
    cranfield = load_dataset(DatasetConfig(name="c", path=str(SHARED_DATA / "cranfield"), split="test"))
    assert len(cranfield.examples) > 1000


def _toy(name, n):
    return Dataset(name, [Example(f"{name}-q{i}", f"{name}-d{i}") for i in range(n)])


def test_the_mixture_is_reproducible_one_dataset_per_batch_and_follows_the_weights():
    datasets = [_toy("big", 50), _toy("small", 20)]
    sampler = MixtureSampler(datasets, [3.0, 1.0], batch_size=8, seed=7)
    names = []
    for step in range(400):
        name, batch = sampler.batch(step)
        assert {e.query.split("-")[0] for e in batch} == {name} and len(batch) == 8
        names.append(name)
    assert 0.68 < Counter(names)["big"] / 400 < 0.82
    first, second = (MixtureSampler(datasets, [3.0, 1.0], batch_size=8, seed=7) for _ in range(2))
    assert [first.batch(step) for step in range(10)] == [second.batch(step) for step in range(10)]
    again, other_seed = (MixtureSampler(datasets, [3.0, 1.0], batch_size=8, seed=s) for s in (7, 8))
    assert [other_seed.batch(step) for step in range(10)] != [again.batch(step) for step in range(10)]


def test_every_rank_gets_its_slice_of_the_same_batch_and_resume_continues():
    datasets = [_toy("a", 30), _toy("b", 30)]
    whole = MixtureSampler(datasets, [1, 1], 8, seed=3)
    ranks = [MixtureSampler(datasets, [1, 1], 8, seed=3) for _ in range(2)]
    for step in range(12):
        name, batch = whole.batch(step)
        parts = [sampler.batch(step, rank, 2) for rank, sampler in enumerate(ranks)]
        assert {p[0] for p in parts} == {name}
        assert parts[0][1] + parts[1][1] == batch
    resumed = MixtureSampler(datasets, [1, 1], 8, seed=3)
    resumed.load_state_dict(json.loads(json.dumps(whole.state_dict())))
    follow = MixtureSampler(datasets, [1, 1], 8, seed=3)
    for step in range(12):
        follow.batch(step)
    assert [resumed.batch(s) for s in range(12, 20)] == [follow.batch(s) for s in range(12, 20)]


def test_a_sampler_state_of_another_order_resumes_with_a_warning(caplog):
    datasets = [_toy("a", 30)]
    state = MixtureSampler(datasets, [1], 8, seed=3).state_dict()
    with caplog.at_level("WARNING", logger="splade_es.trainer.data"):
        MixtureSampler(datasets, [1], 8, seed=3).load_state_dict(state)
        assert not caplog.text
        old = {"cursors": state["cursors"]}  # written before the order was named
        MixtureSampler(datasets, [1], 8, seed=3).load_state_dict(old)
    assert "another order (an older splade-es)" in caplog.text


def test_a_dataset_smaller_than_a_batch_is_refused():
    with pytest.raises(ConfigError, match="fewer examples than one batch"):
        MixtureSampler([_toy("tiny", 3)], [1.0], batch_size=8, seed=0)


def _mixed_negatives(path, n: int = 10):
    """Every third example without a negative (``splade-es pairs`` writes "neg": [] like this)."""
    path.write_text("".join(json.dumps({"query": f"q{i}", "pos": [f"d{i}"], "neg": [] if i % 3 == 0 else [f"n{i}"]}) + "\n"
                            for i in range(n)))
    return path


def test_negatives_are_decided_per_dataset_when_it_is_loaded(tmp_path, caplog):
    path = _mixed_negatives(tmp_path / "mixed.jsonl")
    cache = tmp_path / "cache"

    def load(policy: str) -> Dataset:
        return load_dataset(DatasetConfig(name="mixed", path=str(path), negatives=policy), cache_dir=cache)

    with caplog.at_level("WARNING", logger="splade_es.trainer.data"):
        auto = load("auto")
    assert not auto.uses_negatives and len(auto.examples) == 10 and "only 6 of 10 examples" in caplog.text
    dropped = load("drop")
    assert dropped.uses_negatives and dropped.dropped == 4 and len(dropped.examples) == 6
    assert [e.query for e in dropped.examples] == [f"q{i}" for i in range(10) if i % 3]
    assert all(e.negatives == (f"n{e.query[1:]}",) for e in dropped.examples)
    assert "dropped 4 of 10 examples" in caplog.text
    assert not load("ignore").uses_negatives
    with pytest.raises(ConfigError, match=r"negatives = \"use\" but 4 of 10 examples have none \(first: .*mixed.jsonl:1\)"):
        load("use")
    full = tmp_path / "full.jsonl"
    full.write_text('["a", "b", "c"]\n["d", "e", "f"]\n')
    assert load_dataset(DatasetConfig(name="full", path=str(full)), cache_dir=cache).uses_negatives
    with pytest.raises(ConfigError, match=r"data.datasets\[0\].negatives = 'some': choose auto, use, drop, ignore"):
        TrainConfig.from_dict({"data": {"datasets": [{"path": str(full), "negatives": "some"}]}})


def test_the_parsed_cache_is_memory_mapped_reused_and_rebuilt_when_the_file_changes(tmp_path, monkeypatch):
    path = tmp_path / "pairs.jsonl.gz"
    _write_gz(path, [json.dumps([f"q{i}", f"d{i}", f"n{i}"]) for i in range(50)])
    cache = tmp_path / "cache"
    builds = []
    real_build = data_module._build_store
    monkeypatch.setattr(data_module, "_build_store", lambda *a: builds.append(a[0]) or real_build(*a))
    first = load_dataset(DatasetConfig(name="p", path=str(path)), cache_dir=cache)
    assert isinstance(first.examples, ExampleStore) and len(builds) == 1
    assert [first.examples[i] for i in (0, 49)] == [Example("q0", "d0", ("n0",)), Example("q49", "d49", ("n49",))]
    assert isinstance(first.examples.offsets, np.memmap)
    load_dataset(DatasetConfig(name="p", path=str(path)), cache_dir=cache)
    assert len(builds) == 1  # reused
    _write_gz(path, [json.dumps([f"q{i}", f"other{i}"]) for i in range(60)])
    changed = load_dataset(DatasetConfig(name="p", path=str(path)), cache_dir=cache)
    assert len(builds) == 2 and len(changed.examples) == 60 and changed.examples[3] == Example("q3", "other3")


class _Counting(list):
    reads = 0

    def __getitem__(self, index):
        type(self).reads += 1
        return super().__getitem__(index)


def test_a_step_reads_only_its_slice_and_permutes_each_dataset_once_per_epoch(monkeypatch):
    examples = _Counting(Example(f"q{i}", f"d{i}") for i in range(40))
    permutations = []
    real_rng = np.random.default_rng
    monkeypatch.setattr(data_module.np.random, "default_rng", lambda seed: permutations.append(seed) or real_rng(seed))
    sampler = MixtureSampler([Dataset("a", examples)], [1.0], batch_size=8, seed=0)
    seen = []
    for step in range(15):  # three epochs of 5 batches
        _Counting.reads = 0
        seen += [e.query for e in sampler.batch(step, rank=1, world_size=2)[1]]
        assert _Counting.reads == 4  # this rank's half of the batch, nothing else
    assert len(permutations) == 3
    whole = MixtureSampler([Dataset("a", examples)], [1.0], batch_size=8, seed=0)
    epoch = [e.query for step in range(5) for e in whole.batch(step)[1]]
    assert sorted(epoch) == sorted(e.query for e in examples)  # an epoch is a permutation
