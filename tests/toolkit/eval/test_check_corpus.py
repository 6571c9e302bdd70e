"""`eval` reads only queries and judgments unless --check-corpus asks it to parse the corpus."""

from __future__ import annotations

import json

from click.testing import CliRunner

from splade_es.toolkit.cli import main


def test_eval_parses_the_corpus_only_when_asked(tmp_path):
    data = tmp_path / "mini"
    (data / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": "", "text": text} for i, text in
            enumerate(["wing lift at low speed", "heat transfer in a pipe", "shock wave on a cone"])]
    (data / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (data / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "shock wave"}) + "\n")
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\nq1\tgone\t1\n")
    where = ["--data-dir", str(tmp_path / "engine")]
    loaded = CliRunner().invoke(main, ["ingest", "--index", "mini", "--corpus", str(data), "--encoder", "text",
                                       "--state-dir", str(tmp_path / "state"), "--no-progress", *where])
    assert loaded.exit_code == 0, loaded.output
    # The corpus file is broken after indexing: only a run that reads it can notice.
    with (data / "corpus.jsonl").open("a") as handle:
        handle.write('{"_id": "d3", "text": \n')
    args = ["eval", "--dataset", str(data), "--index", "mini", "--method", "bm25", "--json", "--no-progress", *where]
    quick = CliRunner().invoke(main, args)
    assert quick.exit_code == 0, quick.output
    assert json.loads(quick.stdout.strip().splitlines()[-1])["metrics"]["ndcg@10"] > 0.6
    checked = CliRunner().invoke(main, [*args, "--check-corpus"])
    assert checked.exit_code == 1 and f"{data / 'corpus.jsonl'}:4: invalid JSON" in checked.output
