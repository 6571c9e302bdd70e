"""The local engine node's directories (no JVM is started here; .ci/run starts real nodes)."""

from __future__ import annotations

from pathlib import Path

from splade_es.toolkit.engines.node import LocalNode


def _fake_home(tmp_path: Path) -> Path:
    home = tmp_path / "dist"
    (home / "config").mkdir(parents=True)
    (home / "config" / "jvm.options").write_text("-XX:HeapDumpPath=data\n-Xlog:gc*:file=logs/gc.log\n")
    return home


def test_each_version_keeps_its_own_data_and_fresh_clears_only_its_own(tmp_path):
    home = _fake_home(tmp_path)
    old = LocalNode("opensearch", "2.19.6", root=tmp_path / "engines")
    new = LocalNode("opensearch", "3.3.2", root=tmp_path / "engines")
    _, old_data, _ = old._prepare_node_dir(home, "512m", fresh=False)
    (old_data / "written-by-2.19.6").write_text("x")
    _, new_data, _ = new._prepare_node_dir(home, "512m", fresh=False)
    assert new_data != old_data and not (new_data / "written-by-2.19.6").exists()
    (new_data / "written-by-3.3.2").write_text("x")
    new._prepare_node_dir(home, "512m", fresh=True)
    assert not (new_data / "written-by-3.3.2").exists()
    assert (old_data / "written-by-2.19.6").is_file()
