"""Named places where a test can make the process die on purpose, to prove a kill loses nothing.

``SPLADE_ES_FAILPOINTS="acknowledged=3,encoded=1"`` kills the process with SIGKILL (no
cleanup, no ``finally``, as the kernel's OOM killer or a power cut would) the 3rd time
execution passes ``failpoint("acknowledged")``. Unset, a failpoint costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
import threading

_VARIABLE = "SPLADE_ES_FAILPOINTS"
_counts: dict[str, int] = {}
_lock = threading.Lock()


def _armed() -> dict[str, int]:
    spec = os.environ.get(_VARIABLE, "")
    armed = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, count = item.partition("=")
        armed[name.strip()] = int(count or 1)
    return armed


_ARMED = _armed()


def failpoint(name: str) -> None:
    """Die here if the environment armed ``name`` and this is its n-th pass."""
    if name not in _ARMED:
        return
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        if _counts[name] == _ARMED[name]:
            os.kill(os.getpid(), signal.SIGKILL)
