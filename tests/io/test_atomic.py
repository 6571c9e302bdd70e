"""Atomic writes: whole or nothing, a new file's mode, no temporary left behind."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from splade_es.io.atomic import atomic_text_file, atomic_write_text


def test_whole_or_nothing_and_the_mode_of_a_new_file(tmp_path):
    target = tmp_path / "sub" / "out.json"
    atomic_write_text(target, "first")
    plain = tmp_path / "plain"
    plain.write_text("")
    assert target.read_text() == "first" and target.stat().st_mode == plain.stat().st_mode
    with pytest.raises(RuntimeError), atomic_text_file(target) as handle:
        handle.write("half")
        raise RuntimeError("boom")
    assert target.read_text() == "first" and sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_a_killed_writer_leaves_the_old_file(tmp_path):
    """SIGKILL half-way through a write: the target still holds the old content whole."""
    target = tmp_path / "state.json"
    atomic_write_text(target, "old")
    code = ("import os, signal; from splade_es.io.atomic import atomic_text_file\n"
            f"with atomic_text_file({str(target)!r}) as h:\n"
            "    h.write('x' * 100000); h.flush(); os.kill(os.getpid(), signal.SIGKILL)\n")
    result = subprocess.run([sys.executable, "-c", code])
    assert result.returncode == -9
    assert target.read_text() == "old"


def test_two_writers_use_unique_temporary_names_and_a_replaced_file_keeps_its_mode(tmp_path):
    target = tmp_path / "shared.json"
    target.write_text("private")
    target.chmod(0o600)
    with atomic_text_file(target) as first, atomic_text_file(target) as second:
        assert len([p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]) == 2
        first.write("one")
        second.write("two")
    assert target.read_text() == "one"  # the outer block renames last
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and sorted(p.name for p in tmp_path.iterdir()) == ["shared.json"]
