"""The ingest library's pieces on their own: backoff, the watermark, the local store's torn tail."""

from __future__ import annotations

import json
import statistics

import pytest

from splade_es.toolkit.engines.base import EngineError
from splade_es.toolkit.engines.local import LocalEngine
from splade_es.toolkit.ingest import Ingester, IngestOptions, _Watermark
from splade_es.toolkit.layouts import TextLayout


def test_backoff_is_full_jitter_not_lock_step(tmp_path):
    options = IngestOptions("x", initial_backoff=0.5, max_backoff=30.0, state_dir=tmp_path, seed=7)
    ingester = Ingester(LocalEngine(tmp_path / "engine"), TextLayout(), options, {})
    for retries, cap in ((0, 0.5), (3, 4.0), (10, 30.0)):
        delays = [ingester._backoff(retries) for _ in range(400)]
        assert 0 <= min(delays) and max(delays) <= cap
        # Uniform on [0, cap]: the mean near cap/2, the spread wide (a lock-step backoff has none).
        assert statistics.mean(delays) == pytest.approx(cap / 2, rel=0.15)
        assert statistics.pstdev(delays) == pytest.approx(cap / 12 ** 0.5, rel=0.15)
    other = Ingester(LocalEngine(tmp_path / "engine"), TextLayout(),
                     IngestOptions("x", state_dir=tmp_path, seed=8), {})
    assert [other._backoff(2) for _ in range(5)] != [ingester._backoff(2) for _ in range(5)]


def test_the_watermark_moves_only_over_a_contiguous_settled_prefix():
    mark = _Watermark(10)
    assert not mark.settle([12, 13]) and mark.value == 10
    assert mark.settle([10]) and mark.value == 11
    assert mark.settle([11]) and mark.value == 14
    assert not mark.settle([3]) and mark.value == 14  # below the mark: already settled


def _local_with_docs(tmp_path, n: int) -> tuple[LocalEngine, object]:
    engine = LocalEngine(tmp_path)
    engine.create_index("store", {"mappings": {"properties": {"text": {"type": "text"}}}})
    engine.bulk("store", [(str(i), {"text": f"doc {i}"}) for i in range(n)])
    return engine, tmp_path / "indices" / "store" / "docs.jsonl"


def test_local_store_survives_a_torn_last_line(tmp_path):
    engine, log = _local_with_docs(tmp_path, 3)
    with log.open("ab") as handle:
        handle.write(b'{"_id": "3", "_source": {"te')  # a writer killed half-way
    fresh = LocalEngine(tmp_path)
    assert fresh.count("store") == 3 and fresh.get("store", "2") == {"text": "doc 2"}
    assert fresh.bulk("store", [("3", {"text": "doc 3"})]) == []
    lines = log.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])
    assert LocalEngine(tmp_path).count("store") == 4


def test_local_store_names_file_and_line_of_damage_elsewhere(tmp_path):
    _, log = _local_with_docs(tmp_path, 3)
    lines = log.read_text().splitlines()
    lines[1] = lines[1][:10]
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(EngineError, match=rf"^{log}:2: not a stored document"):
        LocalEngine(tmp_path).count("store")
