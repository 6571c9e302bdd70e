"""Title -> body pairs from a corpus alone: title stripping, BM25 hard negatives, atomic output."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import SHARED_DATA

from splade_es.errors import InputError
from splade_es.toolkit.cli import main
from splade_es.io.corpus import resolve_corpus
from splade_es.trainer.config import DatasetConfig
from splade_es.trainer.data import load_dataset
from splade_es.trainer.pairs import PairStats, strip_title, title_pairs, write_title_pairs


@pytest.mark.parametrize(("title", "text", "body"), [
    ("Lift of a wing .", "lift of a wing . the lift was measured", "the lift was measured"),
    ("Lift  of a\nwing", "LIFT of a wing   then more words", "then more words"),
    ("lift of a wing", "lift of a wings then more", "lift of a wings then more"),  # not the same words
    ("lift of a wing", "a study of lift", "a study of lift"),
    ("a very long title indeed", "a very", "a very"),
    ("twice .", "twice . twice . then the body", "then the body"),
    ("", "body text", "body text"),
])
def test_strip_title_removes_only_a_leading_copy(title, text, body):
    assert strip_title(title, text) == body


def _corpus(tmp_path, records):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return resolve_corpus(path, None, None)


RECORDS = [
    {"_id": "1", "title": "shock wave boundary layer", "text": "shock wave boundary layer interaction on a flat plate"},
    {"_id": "2", "title": "heat transfer in a nozzle", "text": "heat transfer measured in a rocket nozzle throat"},
    {"_id": "3", "title": "buckling of cylinders", "text": "thin cylinders under axial load buckle early"},
    {"_id": "4", "title": "", "text": "a document without a title"},
    {"_id": "5", "title": "only a title", "text": "only a title"},
    {"_id": "6", "title": "turbulent boundary layer", "text": "a turbulent boundary layer with shock wave impingement"},
]


def test_pairs_have_bm25_negatives_and_count_what_was_left_out(tmp_path):
    stats = PairStats()
    pairs = list(title_pairs(_corpus(tmp_path, RECORDS), negatives_depth=20, seed=3, stats=stats))
    assert (stats.pairs, stats.no_title, stats.no_body, stats.stripped) == (4, 1, 1, 1)
    by_title = {p.title: p for p in pairs}
    assert by_title["shock wave boundary layer"].body == "interaction on a flat plate"
    # The only other body sharing a term with the title is document 6's: BM25 must pick it.
    assert by_title["shock wave boundary layer"].negative == "a turbulent boundary layer with shock wave impingement"
    # Document 1's body lost "boundary layer" with its title, so nothing else matches: no negative
    # rather than a random one.
    assert by_title["turbulent boundary layer"].negative is None
    assert by_title["buckling of cylinders"].negative is None
    again = list(title_pairs(_corpus(tmp_path, RECORDS), negatives_depth=20, seed=3))
    assert again == pairs
    default = list(title_pairs(_corpus(tmp_path, RECORDS)))  # in-batch negatives only, unless asked
    assert [(p.title, p.body) for p in default] == [(p.title, p.body) for p in pairs]
    assert all(p.negative is None for p in default)


def test_written_pairs_train_and_cranfield_yields_one_pair_per_titled_document(tmp_path):
    out = tmp_path / "pairs.jsonl"
    stats = write_title_pairs(resolve_corpus(SHARED_DATA / "cranfield", None, None), out, negatives_depth=20)
    titled = sum(1 for line in (SHARED_DATA / "cranfield" / "corpus.jsonl").open() if json.loads(line).get("title", "").strip())
    assert stats.pairs == titled and stats.stripped > 0.95 * titled
    dataset = load_dataset(DatasetConfig(name="cran", path=str(out)), cache_dir=tmp_path / "cache")
    assert len(dataset.examples) == stats.pairs and dataset.bad_lines == 0
    with_negatives = [e for e in dataset.examples if e.negatives]
    assert len(with_negatives) > 0.95 * stats.pairs
    assert all(e.negatives[0] != e.positive for e in with_negatives)
    # A title is not left at the start of its own body.
    assert sum(e.positive.lower().startswith(e.query.lower()) for e in dataset.examples) == 0


def test_a_corpus_without_titles_is_an_error_and_writes_nothing(tmp_path):
    out = tmp_path / "pairs.jsonl"
    with pytest.raises(InputError, match="no document has both a title and a body"):
        write_title_pairs(_corpus(tmp_path, [{"_id": "1", "text": "untitled"}]), out)
    assert not out.exists() and not list(tmp_path.glob(".pairs.jsonl.*"))


def test_pairs_command(tmp_path):
    out = tmp_path / "p.jsonl"
    source = _corpus(tmp_path, RECORDS).path
    result = CliRunner().invoke(main, ["pairs", "--corpus", str(source), "--output", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"pairs": 4, "title_stripped": 1, "no_title": 1, "no_body": 1, "output": str(out)}
    assert [json.loads(line)["neg"] for line in out.read_text().splitlines()] == [[]] * 4
    hard = tmp_path / "hard.jsonl"
    result = CliRunner().invoke(main, ["pairs", "--corpus", str(source), "--output", str(hard), "--negatives-depth", "20"])
    assert result.exit_code == 0, result.output
    assert sum(bool(json.loads(line)["neg"]) for line in hard.read_text().splitlines()) == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "1", "title": "t", "text": "x"}\nnot json\n')
    result = CliRunner().invoke(main, ["pairs", "--corpus", str(bad), "--output", str(tmp_path / "q.jsonl")])
    assert result.exit_code != 0 and "bad.jsonl:2: invalid JSON" in result.output
    assert not (tmp_path / "q.jsonl").exists()


def test_the_trainer_does_not_import_the_toolkit():
    """The trainer sits beside the toolkit, not on it: importing every trainer module (BM25
    negatives included) must load no splade_es.toolkit module."""
    import subprocess
    import sys

    code = ("import sys, pkgutil, importlib, splade_es.trainer as t\n"
            "for m in pkgutil.iter_modules(t.__path__): importlib.import_module('splade_es.trainer.' + m.name)\n"
            "from splade_es.trainer.pairs import _BM25\n_BM25(['shock wave', 'boundary layer']).scores('shock')\n"
            "print(sorted(n for n in sys.modules if n.startswith('splade_es.toolkit')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
