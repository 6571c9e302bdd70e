"""Running ``splade-es`` commands from the benchmark scripts (run as scripts: this directory is on
sys.path), in this interpreter, so the figures are of the checkout being measured."""

from __future__ import annotations

import subprocess
import sys

CLI = [sys.executable, "-m", "splade_es.toolkit.cli"]


def run(*args: str) -> str:
    """Standard output of ``splade-es ARGS``; a failure stops the benchmark with the command's last line."""
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"splade-es {' '.join(args[:2])} failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout
