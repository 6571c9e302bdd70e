"""Files appear whole or not at all: the one way splade-es writes checkpoints, aliases and outputs."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


def _read_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


_NEW_FILE_MODE = 0o666 & ~_read_umask()  # read once, at import, before any thread could race it


@contextmanager
def atomic_text_file(path: str | Path) -> Iterator[TextIO]:
    """Write to a uniquely named temporary file beside ``path``, fsync it and rename it into place.

    On any error (or a kill) the target is untouched: either the old file or the new one,
    never a mix. A new file gets the mode any new file gets (0666 less the umask), not the
    0600 of a temporary file; a replaced one keeps its own. The directory is synced too, so the rename survives a
    power cut.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else _NEW_FILE_MODE
            os.fchmod(handle.fileno(), mode)  # a replaced file keeps its mode
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_directory(target.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """``path`` holds exactly ``text``, or what it held before."""
    with atomic_text_file(path) as handle:
        handle.write(text)


def _sync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a directory; the rename itself is still atomic
        pass
    finally:
        os.close(fd)
