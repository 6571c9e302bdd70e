"""Secrets never leave the process: not in output, failures files, reports, checkpoints or logs."""

from __future__ import annotations

import base64
import json
import logging
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import SHARED_DATA, engine_url
from splade_es.toolkit.cli import main
from splade_es.toolkit.engines.credentials import Credentials, redact, split_credentials
from toolkit.fault_proxy import FaultProxy

API_KEY = "S3CRET-API-KEY-0042"
PASSWORD = "pa55w0rd@x/y"  # in a URL as pa55w0rd%40x%2Fy
ENCODED_PASSWORD = "pa55w0rd%40x%2Fy"


@pytest.mark.parametrize(("url", "clean"), [
    ("http://admin:hunter2@[::1]:9200/", "http://[::1]:9200/"),
    ("https://admin:hunter2@[2001:db8::7]:9243/path?x=1", "https://[2001:db8::7]:9243/path?x=1"),
    ("https://user@search.example.com", "https://search.example.com"),
    ("https://u:p%40ss@host:9200", "https://host:9200"),
    ("https://host:9200", "https://host:9200"),
    ("http://admin:S3c/retPW@host:9200", "http://host:9200"),  # unencoded / and # in the password
    ("http://admin:S3c#retPW@host", "http://host"),
    ("admin:S3cretPW@127.0.0.1:9200", "127.0.0.1:9200"),  # no scheme
])
def test_redaction_keeps_the_address_and_drops_the_userinfo(url, clean):
    assert redact(url) == clean


def test_percent_encoded_userinfo_is_decoded():
    url, credentials = split_credentials(f"https://el%40stic:{ENCODED_PASSWORD}@[::1]:9200", Credentials())
    assert url == "https://[::1]:9200"
    assert (credentials.username, credentials.password) == ("el@stic", PASSWORD)
    assert PASSWORD not in repr(credentials) and credentials.secrets()


@pytest.mark.parametrize(("url", "message"), [
    ("admin:S3cretPW@127.0.0.1:9200", "must start with http:// or https://"),
    ("http://admin:S3cretPW@[::1:9200", "is not a valid URL (Invalid IPv6 URL)"),
])
def test_a_malformed_url_is_one_line_without_the_password(url, message):
    result = CliRunner().invoke(main, ["search", "--index", "x", "--url", url, "q"])
    assert result.exit_code == 1 and message in result.output
    assert "S3cretPW" not in result.output and "Traceback" not in result.output


def _scan(texts: list[str], directory: Path) -> list[str]:
    """Every place a secret shows up: in the given texts or in any file under ``directory``."""
    secrets = [API_KEY, PASSWORD, ENCODED_PASSWORD, base64.b64encode(f"admin:{PASSWORD}".encode()).decode()]
    found = [f"output {i}: {s}" for i, text in enumerate(texts) for s in secrets if s in text]
    for path in directory.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {s}" for s in secrets if s.encode() in data]
    return found


def test_no_command_prints_or_writes_a_secret(tmp_path, tiny_mistral_dir, cranfield_vectors, caplog):
    """ingest (with refused documents, so a failures file exists), search, eval and benchmark, with an API
    key and with basic auth in the URL and from standard input, through a proxy that checks they were sent."""
    upstream = engine_url("opensearch")
    index = f"test-secrets-{uuid.uuid4().hex[:8]}"
    work = tmp_path / "work"
    work.mkdir()
    caplog.set_level(logging.DEBUG)
    outputs: list[str] = []

    def invoke(*args: str, stdin: str | None = None, expect: int = 0):
        result = CliRunner().invoke(main, list(args), input=stdin)
        outputs.extend([result.stdout, result.stderr])
        assert result.exit_code == expect, result.output
        return result

    refused = {"3", "99"}
    with FaultProxy(upstream, items=lambda doc_id, attempt: 400 if doc_id in refused else None) as proxy:
        with_key = ("--url", proxy.url, "--api-key", API_KEY)
        with_user = ("--url", proxy.url.replace("//", f"//admin:{ENCODED_PASSWORD}@"))
        common = ("--state-dir", str(work / "state"), "--failures", str(work / "failures.jsonl"))
        ingest = ("ingest", "--index", index, "--corpus", str(SHARED_DATA / "cranfield"), "--model",
                  str(tiny_mistral_dir), "--vectors", str(cranfield_vectors), "--no-progress", *common)
        first = invoke(*ingest, *with_key, expect=1)
        assert "warning: --api-key on the command line is visible" in first.stderr
        assert (work / "failures.jsonl").is_file() and list((work / "state").glob("ingest-*.json"))
        invoke(*ingest, *with_user, "--resume", expect=1)
        refused.clear()
        invoke(*ingest, "--url", proxy.url, "--username", "admin", "--password", "-", stdin=PASSWORD + "\n")
        invoke("search", "--index", index, "--explain", "--k", "3", *with_key, "boundary layer")
        invoke("search", "--index", index, "--json", *with_user, "shock waves")
        invoke("eval", "--dataset", str(SHARED_DATA / "cranfield"), "--index", index, "--k", "10", "--no-progress",
               "--run-file", str(work / "run.trec"), *with_user)
        invoke("benchmark", "--datasets", str(SHARED_DATA / "cranfield"), "--methods", "bm25", "--out",
               str(work / "bench"), "--index-prefix", f"secrets-{uuid.uuid4().hex[:6]}-", "--no-progress", *with_key)
        sent = [h.get("authorization", "") for h in proxy.seen_headers]
    assert f"ApiKey {API_KEY}" in sent
    assert "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode() in sent
    assert (work / "bench" / "report.md").is_file() and (work / "run.trec").is_file()
    leaks = _scan([*outputs, caplog.text], work)
    assert leaks == []
    from splade_es.toolkit.engines.connect import connect

    engine = connect(upstream)
    for name in [index, *(n for n in engine.mappings("secrets-*") if n.startswith("secrets-"))]:
        engine.delete_index(name)
    engine.close()
