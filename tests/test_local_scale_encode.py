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
    assert [row["docs"] for row in rows] == [40, 150]
    assert all(row["peak_rss_mb"] > 0 and row["seconds"] > 0 for row in rows)
    # 150 lines of {"id": ..., "features": {5 names}}: more bytes than 40 such lines, and bounded by top-k (~120 bytes a line).
    assert rows[1]["output_bytes"] > 3 * rows[0]["output_bytes"]
    assert rows[1]["output_bytes"] < 150 * 200  # without --top-k each line holds ~100 features, ~2 kB
