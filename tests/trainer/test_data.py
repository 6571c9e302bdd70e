"""Training data: the four sentence-transformers line shapes, BEIR splits, the mixture sampler."""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter

import pytest

from conftest import SHARED_DATA
from splade_es.errors import ConfigError, InputError
from splade_es.trainer.config import DatasetConfig
from splade_es.trainer.data import Dataset, Example, MixtureSampler, load_dataset, parse_line


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
    dataset = load_dataset(DatasetConfig(name="mixed", path=str(path)))
    assert len(dataset.examples) == 2 and dataset.bad_lines == 3
    assert dataset.bad_examples[0].startswith(f"{path}:2: ")
    with pytest.raises(InputError, match=r"mixed.jsonl.gz:2: "):
        load_dataset(DatasetConfig(name="mixed", path=str(path)), on_bad_line="fail")


def test_missing_or_empty_datasets_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_dataset(DatasetConfig(name="gone", path=str(tmp_path / "gone.jsonl")))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="has no usable examples"):
        load_dataset(DatasetConfig(name="empty", path=str(empty)))


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
    other_seed = MixtureSampler(datasets, [3.0, 1.0], batch_size=8, seed=8)
    assert [other_seed.batch(step) for step in range(10)] != [first.batch(step) for step in range(10, 20)]


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


def test_a_dataset_smaller_than_a_batch_is_refused():
    with pytest.raises(ConfigError, match="fewer examples than one batch"):
        MixtureSampler([_toy("tiny", 3)], [1.0], batch_size=8, seed=0)
