"""Memory figures shared by the benchmark scripts (run as scripts: this directory is on sys.path)."""

from __future__ import annotations


def status_bytes(field: str) -> int:
    """One ``/proc/self/status`` size of this process now (``VmRSS``, ``RssAnon``, ``RssFile``...);
    0 where there is no such file (not Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss_bytes() -> int:
    """This process's resident set size now."""
    return status_bytes("VmRSS")
