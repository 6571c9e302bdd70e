"""`splade-es encode` as users run it: help, JSON lines, files, and one-line errors."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from splade_es.model import SparseEncoder
from splade_es.toolkit.cli import main


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def test_every_command_has_help(runner):
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0 and "encode" in top.output and "Examples" in top.output
    paths = [[name] for name in main.commands]
    paths += [[name, sub] for name, group in main.commands.items() for sub in getattr(group, "commands", {})]
    for path in paths:
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, path
        assert "Examples" in result.output or "Example" in result.output, f"{' '.join(path)} --help has no example"


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("splade-es")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "splade-es" in result.stdout


def test_json_output_matches_the_python_api(runner, tiny_mistral_dir):
    texts = ["shock wave", "laminar boundary layer on a flat plate"]
    result = runner.invoke(main, ["encode", "--model", str(tiny_mistral_dir), "--query", "--top-k", "7", "--json", *texts])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["id"] for line in lines] == ["0", "1"]
    expected = SparseEncoder.from_pretrained(tiny_mistral_dir).encode_queries(texts)
    for line, vector in zip(lines, expected):
        assert list(line["features"]) == list(vector.to_features())[:7]
        assert line["features"] == pytest.approx(dict(vector.top(7)), rel=1e-6)


def test_table_output_is_readable(runner, tiny_mistral_dir):
    result = runner.invoke(main, ["encode", "--model", str(tiny_mistral_dir), "--mode", "causal", "lift", ""])
    assert result.exit_code == 0, result.output
    assert "[0] 'lift'  (512 features)" in result.output
    assert "... 492 more" in result.output and "[1] ''  (0 features)" in result.output


def test_input_file_to_output_file(runner, tiny_mistral_dir, tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text('{"id": "d1", "text": "heat transfer"}\n\n{"id": 2, "text": ""}\n', encoding="utf-8")
    out = tmp_path / "vectors.jsonl"
    result = runner.invoke(main, ["encode", "--model", str(tiny_mistral_dir), "--input", str(source), "--output", str(out), "--top-k", "3"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["d1", "2"]
    assert len(rows[0]["features"]) == 3 and rows[1]["features"] == {}
    assert "wrote 2 vectors" in result.stderr


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"id": "a", "text": "ok"}\n{"id": "b"}\n', "docs.jsonl:2: missing field 'text'"),
        ('{"id": "a", "text": "ok"}\nnot json\n', "docs.jsonl:2: invalid JSON"),
        ('{"id": "a", "text": 5}\n', "docs.jsonl:1: field 'text' must be a string, got int"),
        ('["a", "b"]\n', "docs.jsonl:1: expected a JSON object"),
        ("\n", "docs.jsonl: no records"),
    ],
)
def test_bad_input_lines_fail_with_file_and_line_and_write_nothing(runner, tiny_mistral_dir, tmp_path, content, message):
    source = tmp_path / "docs.jsonl"
    source.write_text(content, encoding="utf-8")
    out = tmp_path / "vectors.jsonl"
    result = runner.invoke(main, ["encode", "--model", str(tiny_mistral_dir), "--input", str(source), "--output", str(out)])
    assert result.exit_code == 1
    assert message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == ["docs.jsonl"], "no output, no temporary file left behind"


def test_usage_and_model_errors(runner, tmp_path):
    assert runner.invoke(main, ["encode", "--model", "x"]).exit_code == 2
    both = runner.invoke(main, ["encode", "--model", "x", "--input", "f.jsonl", "text"])
    assert both.exit_code == 2 and "exactly one" in both.stderr
    missing = runner.invoke(main, ["encode", "--model", str(tmp_path / "absent"), "hello"])
    assert missing.exit_code == 1
    assert missing.stderr.strip() == f"Error: model directory '{tmp_path / 'absent'}' does not exist (and it is not a hub id)"
    assert runner.invoke(main, ["encode", "--model", "m", "--top-k", "0", "x"]).exit_code == 2


def test_model_comes_from_the_environment(runner, tiny_mistral_dir):
    result = runner.invoke(main, ["encode", "--json", "--top-k", "2", "wing"], env={"SPLADE_ES_MODEL": str(tiny_mistral_dir)})
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["features"]) == 2


def test_unreachable_hub_id_is_one_line_error():
    """Hub ids stay supported; without the hub they fail fast with one clear line."""
    script = Path(sys.executable).with_name("splade-es")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([str(script), "encode", "--model", "some-org/some-model", "text"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: could not load model config from 'some-org/some-model'")


def test_long_documents_in_windows_through_encode_and_ingest(runner, tiny_mistral_dir, cranfield_texts, tmp_path):
    """--chunk-tokens gives the library's windowed vectors in `encode` and in the index `ingest`
    writes (which records the setting, so a resume with another one is refused)."""
    from splade_es.toolkit.engines.local import LocalEngine

    texts = [" ".join(cranfield_texts[:3]), "shock wave"]
    encoder = SparseEncoder.from_pretrained(tiny_mistral_dir)
    want = encoder.encode_documents(texts, chunk_tokens=24, chunk_overlap=6)
    assert want[0].to_features() != encoder.encode_documents(texts[0]).to_features()
    encoded = runner.invoke(main, ["encode", "--model", str(tiny_mistral_dir), "--json", "--chunk-tokens", "24",
                                   "--chunk-overlap", "6", *texts])
    assert encoded.exit_code == 0, encoded.output
    got = [json.loads(line)["features"] for line in encoded.stdout.splitlines()]
    for line, vector in zip(got, want):
        assert line.keys() == vector.to_features().keys()
        assert list(line.values()) == pytest.approx(list(vector.to_features().values()), rel=1e-6)

    corpus = tmp_path / "long.jsonl"
    corpus.write_text("".join(json.dumps({"_id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
    common = ["ingest", "--index", "long", "--corpus", str(corpus), "--model", str(tiny_mistral_dir),
              "--data-dir", str(tmp_path / "engine"), "--state-dir", str(tmp_path / "state"), "--no-progress"]
    loaded = runner.invoke(main, [*common, "--chunk-tokens", "24", "--chunk-overlap", "6"])
    assert loaded.exit_code == 0, loaded.output
    engine = LocalEngine(tmp_path / "engine")
    stored = engine.get("long", "0")["splade"]
    assert stored.keys() == want[0].to_features().keys()
    pruning = engine.mappings("long")["long"]["_meta"]["splade_es"]["pruning"]
    assert pruning["chunk_tokens"] == 24 and pruning["chunk_overlap"] == 6
    other = runner.invoke(main, [*common, "--chunk-tokens", "32", "--resume"])
    assert other.exit_code == 1 and "cannot resume: the layout changed" in other.output
    for args, change in (([], "chunk_tokens 24 -> None"), (["--chunk-tokens", "24", "--chunk-overlap", "6",
                                                            "--doc-top-k", "5"], "top_k ")):
        rewrite = runner.invoke(main, [*common, *args])  # a fresh run into the index: its record would lie
        assert rewrite.exit_code == 1 and "other encoder settings" in rewrite.output and change in rewrite.output
    assert engine.get("long", "0")["splade"] == stored
    again = runner.invoke(main, [*common, "--chunk-tokens", "24", "--chunk-overlap", "6"])
    assert again.exit_code == 0, again.output

    for args, message in ((["--chunk-overlap", "4"], "--chunk-overlap goes with --chunk-tokens"),
                          (["--chunk-tokens", "999"], "chunk_tokens must be 1..256"),
                          (["--chunk-tokens", "8", "--chunk-overlap", "8"],
                           "--chunk-overlap 8 must be less than --chunk-tokens 8")):
        bad = runner.invoke(main, ["encode", "--model", str(tiny_mistral_dir), *args, texts[0]])
        assert bad.exit_code != 0 and message in bad.output, bad.output
    for args in (["--chunk-tokens", "4", "--chunk-overlap", "4"], ["--chunk-tokens", "999"]):
        bad = runner.invoke(main, [*common[:2], "bad-chunks", *common[3:], *args])
        assert bad.exit_code != 0 and "chunk" in bad.output, bad.output
        assert not engine.exists("bad-chunks"), f"{args}: the index was created before the refusal"
    query = runner.invoke(main, ["encode", "--model", str(tiny_mistral_dir), "--query", "--chunk-tokens", "8", "x"])
    assert query.exit_code == 2 and "--chunk-tokens is for documents" in query.output


def test_input_is_read_a_block_ahead_of_the_encoder_not_whole(runner, tiny_mistral_dir, tmp_path, monkeypatch):
    """Streaming guard: while encoding, each encoder call finds at most one block read and not yet
    encoded (the check before the model loads reads the file once on its own), and the output
    keeps input order."""
    encode_cli = importlib.import_module("splade_es.toolkit.cli.encode")  # the module, not the command

    source, target = tmp_path / "docs.jsonl", tmp_path / "vectors.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": f"wing number {i}"}) + "\n" for i in range(10)))
    monkeypatch.setattr(encode_cli, "BLOCK", 3)
    real_reader, real_encode = encode_cli.read_text_records, SparseEncoder.encode_documents
    reads: list[list[str]] = []  # one list per pass over the file
    ahead: list[int] = []

    def counting_reader(path):
        reads.append([])
        for record in real_reader(path):
            reads[-1].append(record.id)
            yield record

    def watching_encode(self, texts, **kwargs):
        ahead.append(len(reads[-1]) - sum(ahead))  # read but not yet encoded: this call's block
        assert len(texts) == ahead[-1]
        return real_encode(self, texts, **kwargs)

    monkeypatch.setattr(encode_cli, "read_text_records", counting_reader)
    monkeypatch.setattr(SparseEncoder, "encode_documents", watching_encode)
    result = runner.invoke(main, ["encode", "--model", str(tiny_mistral_dir), "--input", str(source),
                                  "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert ahead == [3, 3, 3, 1] and len(reads) == 2 and len(reads[0]) == 10
    assert [json.loads(line)["id"] for line in target.read_text().splitlines()] == [str(i) for i in range(10)]
    assert "wrote 10 vectors" in result.output
