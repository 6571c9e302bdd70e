"""Memory figures shared by the benchmark scripts (run as scripts: this directory is on sys.path)."""

from __future__ import annotations

import re
from pathlib import Path

_STATUS = Path("/proc/self/status")


def _status_kib(field: str) -> int:
    """A ``/proc/self/status`` figure in KiB (Linux; 0 elsewhere)."""
    try:
        found = re.search(rf"^{field}:\s+(\d+)", _STATUS.read_text(encoding="ascii"), re.MULTILINE)
    except OSError:
        return 0
    return int(found.group(1)) if found else 0


def status_bytes(field: str) -> int:
    """One ``/proc/self/status`` size of this process now (``VmRSS``, ``RssAnon``, ``RssFile``...);
    0 where there is no such file (not Linux)."""
    return _status_kib(field) * 1024


def rss_bytes() -> int:
    """This process's resident set size now."""
    return status_bytes("VmRSS")


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux ``clear_refs``); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="ascii")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """The largest resident set size since the process started or since :func:`reset_peak_rss`."""
    return _status_kib("VmHWM") * 1024
