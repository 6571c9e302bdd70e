"""The local engine node's directories, state and lifecycle (no JVM is started here: .ci/run starts real
nodes, tests/toolkit/test_ingest_cluster.py a real cluster)."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from splade_es.toolkit.cli import main
from splade_es.toolkit.engines.node import LocalNode, Member, NodeError, NodeState, _alive, _port_free


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


def _sleepers(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen(["sleep", "60"]) for _ in range(count)]


def _cluster_state(root: Path, processes: list[subprocess.Popen]) -> NodeState:
    node = LocalNode("opensearch", root=root)
    members = [Member(f"node-{i}", p.pid, 9300 + i, 9400 + i, str(root / f"logs-{i}")) for i, p in enumerate(processes)]
    state = NodeState("opensearch", "2.19.6", 9300, processes[0].pid, members[0].url, "home", members[0].logs, members)
    node.node_dir.mkdir(parents=True)
    state.save(node.state_file)
    return state


def test_status_json_lists_every_node_and_stop_stops_them_all(tmp_path, monkeypatch):
    monkeypatch.setenv("SPLADE_ES_ENGINE_DIR", str(tmp_path))
    processes = _sleepers(3)
    _cluster_state(tmp_path, processes)
    processes[1].kill()
    processes[1].wait()
    status = CliRunner().invoke(main, ["engine", "status", "--kind", "opensearch", "--json"])
    assert status.exit_code == 0, status.output
    report = json.loads(status.output)
    assert report["running"] is True and report["url"] == "http://127.0.0.1:9300"
    assert [{k: n[k] for k in ("name", "pid", "http_port", "transport_port", "alive")} for n in report["nodes"]] == [
        {"name": f"node-{i}", "pid": p.pid, "http_port": 9300 + i, "transport_port": 9400 + i, "alive": i != 1}
        for i, p in enumerate(processes)]
    stopped = CliRunner().invoke(main, ["engine", "stop", "--kind", "opensearch"])
    assert stopped.exit_code == 0 and "stopped" in stopped.output
    for process in processes:
        assert process.wait(timeout=10) is not None  # every node got its SIGTERM
    status = CliRunner().invoke(main, ["engine", "status", "--kind", "opensearch", "--json"])
    assert status.exit_code == 3 and json.loads(status.output) == {"running": False, "kind": "opensearch", "nodes": []}


def test_a_single_node_state_file_from_before_clusters_still_loads_and_stops(tmp_path):
    node = LocalNode("opensearch", root=tmp_path)
    (process,) = _sleepers(1)
    node.node_dir.mkdir(parents=True)
    node.state_file.write_text(json.dumps({"kind": "opensearch", "version": "2.19.6", "port": 9200, "pid": process.pid,
                                           "url": "http://127.0.0.1:9200", "home": "h", "logs": "l"}))
    state = node.status()
    assert state is not None and [(m.pid, m.http_port, m.transport_port) for m in state.members()] == [
        (process.pid, 9200, None)]
    node.stop()
    assert process.wait(timeout=10) is not None and node.status() is None


def test_cluster_ports_follow_the_given_port_or_are_free_and_distinct(tmp_path):
    from splade_es.toolkit.engines.node import _http_ports

    assert _http_ports("opensearch", None, 1) == [9200]
    free = _http_ports("opensearch", None, 3)
    assert len(set(free)) == 3 and all(_port_free(p) for p in free)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(NodeError, match=f"port {port} on 127.0.0.1 is taken"):
            _http_ports("opensearch", port - 1, 3)


def test_a_cluster_gets_one_directory_per_node_and_a_single_node_keeps_its_own(tmp_path):
    node = LocalNode("opensearch", root=tmp_path)
    assert node.member_dirs(1) == [node.node_dir]
    assert node.member_dirs(3) == [node.node_dir / f"node-{i}" for i in range(3)]
    other = LocalNode("opensearch", root=tmp_path, node_dir=tmp_path / "elsewhere")
    assert other.cluster_name != node.cluster_name


_FAKE_LAUNCHER = """#!/bin/sh
# Stands in for bin/opensearch: node-1 fails to start, the others "daemonize" a sleep.
pidfile=""; name=""
while [ $# -gt 0 ]; do
  case "$1" in -p) pidfile="$2"; shift ;; -Enode.name=*) name="${1#-Enode.name=}" ;; esac; shift
done
[ "$name" = node-1 ] && { echo "node-1: bad setting" >&2; exit 78; }
sleep 300 >/dev/null 2>&1 &
echo $! > "$pidfile"
"""


def test_one_node_failing_to_start_stops_the_others_and_names_its_logs(tmp_path, monkeypatch):
    node = LocalNode("opensearch", root=tmp_path)
    home = _fake_home(tmp_path)
    (home / "bin").mkdir()
    launcher = home / "bin" / "opensearch"
    launcher.write_text(_FAKE_LAUNCHER)
    launcher.chmod(0o755)
    monkeypatch.setattr(LocalNode, "assemble", lambda self: home)
    monkeypatch.setattr("splade_es.toolkit.engines.node.find_java_home", lambda minimum: Path("/usr"))
    monkeypatch.setattr("splade_es.toolkit.engines.node._drop_root", lambda: {})
    with pytest.raises(NodeError) as failure:
        node.start(port=0, nodes=3, timeout=20)
    assert "node-1 failed to start (exit 78)" in str(failure.value)
    assert str(node.node_dir / "node-1" / "logs") in str(failure.value)
    assert "bad setting" in (node.node_dir / "node-1" / "logs" / "startup.log").read_text()
    pids = [int((node.node_dir / f"node-{i}" / "node.pid").read_text()) for i in (0, 2)]
    assert not any(_alive(pid) for pid in pids), "the nodes that started were not stopped"
    assert node.status() is None
