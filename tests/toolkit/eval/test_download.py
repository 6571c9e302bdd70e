"""beir:NAME against a loopback HTTP server: checksum verified, cached, nothing kept on failure."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile

import pytest

from splade_es.errors import ConfigError, InputError
from splade_es.toolkit.eval import download
from splade_es.toolkit.eval.beir import load_beir


def _archive(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, text in members.items():
            bundle.writestr(name, text)
    return buffer.getvalue()


SCIFACT = _archive({"scifact/corpus.jsonl": '{"_id": "d1", "title": "", "text": "cells"}\n',
                    "scifact/queries.jsonl": '{"_id": "q1", "text": "cells?"}\n',
                    "scifact/qrels/test.tsv": "query-id\tcorpus-id\tscore\nq1\td1\t1\n"})


@pytest.fixture
def server(monkeypatch):
    files: dict[str, bytes] = {}
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            requests.append(self.path)
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("SPLADE_ES_BEIR_URL", f"http://127.0.0.1:{httpd.server_address[1]}/datasets")
    yield files, requests
    httpd.shutdown()


def test_downloads_verifies_and_caches(server, tmp_path, monkeypatch):
    files, requests = server
    files["/datasets/scifact.zip"] = SCIFACT
    monkeypatch.setitem(download.ARCHIVE_MD5, "scifact", hashlib.md5(SCIFACT).hexdigest())
    path = download.dataset_dir("beir:scifact", tmp_path, show_progress=False)
    assert path == tmp_path / "scifact" and load_beir(path).queries == {"q1": "cells?"}
    assert download.dataset_dir("beir:scifact", tmp_path, show_progress=False) == path
    assert requests == ["/datasets/scifact.zip"]  # the second call read the cache


def test_a_checksum_mismatch_keeps_nothing(server, tmp_path):
    files, _ = server
    files["/datasets/scifact.zip"] = SCIFACT  # the real published MD5 cannot match this archive
    with pytest.raises(ConfigError, match=r"scifact.zip: MD5 [0-9a-f]{32} does not match the published "
                                          r"5f7d1de60b170fc8027bb7898e2efca1"):
        download.dataset_dir("beir:scifact", tmp_path, show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unsafe_archives_missing_files_and_unknown_names(server, tmp_path, monkeypatch):
    files, _ = server
    evil = _archive({"../escape.txt": "x"})
    files["/datasets/nfcorpus.zip"] = evil
    monkeypatch.setitem(download.ARCHIVE_MD5, "nfcorpus", hashlib.md5(evil).hexdigest())
    with pytest.raises(ConfigError, match="points outside the dataset"):
        download.dataset_dir("beir:nfcorpus", tmp_path, show_progress=False)
    assert not (tmp_path.parent / "escape.txt").exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match=r"cannot download .*fiqa.zip: HTTP 404"):
        download.dataset_dir("beir:fiqa", tmp_path, show_progress=False)
    with pytest.raises(InputError, match="unknown BEIR dataset 'nope'"):
        download.dataset_dir("beir:nope", tmp_path)
    assert download.dataset_dir(str(tmp_path / "local")) == tmp_path / "local"
