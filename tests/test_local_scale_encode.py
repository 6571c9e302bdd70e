"""benchmarks/local_scale.py's encode step with its own corpus-word BERT: every text encoded, top-k kept."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_corpus_bert_encodes_every_text_with_at_most_top_k_features(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    words = [f"w{i}" for i in range(40)]
    with (corpus / "corpus.jsonl").open("w") as handle:
        for n in range(150):
            text = " ".join(words[(n * 7 + j) % len(words)] for j in range(12))
            handle.write(json.dumps({"_id": f"d{n}", "title": "", "text": text}) + "\n")
    out = tmp_path / "result.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "local_scale.py"), "--corpora", str(corpus),
               "--encode-model", "corpus-bert", "--encode-docs", "40,150", "--encode-words", "8",
               "--encode-top-k", "5", "--encode-only", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["encode"]
    assert [(row["docs"], row["vectors"]) for row in rows] == [(40, 40), (150, 150)]  # one line per text
    assert all(row["max_features"] == 5 for row in rows)  # a random model fills any cap: top-k is what holds it
    assert all(row["peak_rss_mb"] > 0 and row["seconds"] > 0 for row in rows)


def test_top_k_is_checked_before_any_work(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "local_scale.py"), "--corpora", str(tmp_path),
               "--encode-model", "corpus-bert", "--encode-top-k", "0", "--encode-only"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2 and "expected a whole number >= 1, got '0'" in done.stderr
    alone = subprocess.run([*command[:4], "--encode-top-k", "5"], capture_output=True, text=True, timeout=300,
                           check=False)
    assert alone.returncode == 2 and "need --encode-model" in alone.stderr
