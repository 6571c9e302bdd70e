"""The BEIR loader: any split, .gz files, skipped and unknown judgments, one-line errors."""

from __future__ import annotations

import gzip
import json
import logging

import pytest

from splade_es.errors import InputError
from splade_es.toolkit.eval.beir import load_beir


def _dataset(root, gz=False, splits=("test",)):
    root.mkdir(parents=True, exist_ok=True)
    corpus = "".join(json.dumps({"_id": d, "title": "", "text": f"text {d}"}) + "\n" for d in ("d1", "d2", "d3"))
    queries = "".join(json.dumps({"_id": q, "text": f"query {q}"}) + "\n" for q in ("q1", "q2", "q3"))
    qrels = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\nq2\tgone\t1\n"
    (root / "qrels").mkdir(exist_ok=True)
    files = {"corpus.jsonl": corpus, "queries.jsonl": queries, **{f"qrels/{s}.tsv": qrels for s in splits}}
    for name, text in files.items():
        if gz:
            with gzip.open(root / f"{name}.gz", "wt", encoding="utf-8") as handle:
                handle.write(text)
        else:
            (root / name).write_text(text, encoding="utf-8")
    return root


@pytest.mark.parametrize("gz", [False, True])
def test_loads_judged_queries_and_counts_the_rest(tmp_path, gz, caplog):
    dataset = load_beir(_dataset(tmp_path / "ds", gz=gz))
    assert dataset.name == "ds" and dataset.split == "test"
    assert list(dataset.queries) == ["q1", "q2"] and dataset.skipped_queries == 1
    assert dataset.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2, "gone": 1}}
    with caplog.at_level(logging.WARNING, logger="splade_es"):
        unknown = dataset.unknown_documents()
    assert unknown == {"q2": ["gone"]}
    assert "1 judgments (1 queries) name documents that are not in the corpus" in caplog.text


def test_any_split(tmp_path):
    dataset = load_beir(_dataset(tmp_path / "ds", splits=("dev", "test")), split="dev")
    assert dataset.split == "dev" and set(dataset.qrels) == {"q1", "q2"}


def test_errors_name_the_problem(tmp_path):
    root = _dataset(tmp_path / "ds", splits=("test", "train"))
    with pytest.raises(InputError, match=r"no split 'dev' \(qrels/dev.tsv\); available: test, train"):
        load_beir(root, split="dev")
    (root / "queries.jsonl").unlink()
    with pytest.raises(InputError, match=r"ds: missing queries.jsonl"):
        load_beir(root)
    with pytest.raises(InputError, match="no such dataset directory"):
        load_beir(tmp_path / "nowhere")
    bad = _dataset(tmp_path / "bad")
    (bad / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\n")
    with pytest.raises(InputError, match=r"test.tsv:2: expected 3 tab-separated columns"):
        load_beir(bad)
    (bad / "qrels" / "test.tsv").write_text("q1\td1\tvery\n")
    with pytest.raises(InputError, match=r"test.tsv:1: score 'very' is not a number"):
        load_beir(bad)
    (bad / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    (bad / "queries.jsonl").write_text('{"_id": "q1", "text": "ok"}\n{"_id": "q2", "text": 5}\n')
    with pytest.raises(InputError, match=r"queries.jsonl:2: field 'text' must be a string"):
        load_beir(bad)


def test_judged_queries_missing_from_queries_jsonl_are_dropped_with_one_warning(tmp_path, caplog):
    root = _dataset(tmp_path / "ds")
    with (root / "qrels" / "test.tsv").open("a") as handle:
        handle.write("q9\td1\t1\nq8\td3\t2\n")
    with caplog.at_level(logging.WARNING, logger="splade_es"):
        dataset = load_beir(root)
    assert set(dataset.qrels) == set(dataset.queries) == {"q1", "q2"}
    assert "2 judged queries are missing from queries.jsonl (e.g. q8); they are not evaluated" in caplog.text
