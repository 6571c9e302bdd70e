"""Reading user files, with errors that name the file, the line and the field."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from splade_es.errors import InputError


@dataclass(frozen=True)
class TextRecord:
    id: str
    text: str


def read_text_records(path: str) -> Iterator[TextRecord]:
    """``{"id", "text"}`` per JSON line (``-`` is standard input); blank lines are skipped.

    ``id`` may be a string or an integer (kept as its decimal text); ``text`` must be a string.
    A record without ``id`` may name itself ``_id``, so BEIR's ``queries.jsonl`` reads as it is.
    """
    handle = sys.stdin if path == "-" else _open(path)
    name = "<stdin>" if path == "-" else path
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{name}:{number}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(record, dict):
                raise InputError(f"{name}:{number}: expected a JSON object with 'id' and 'text'")
            if "id" not in record and "_id" in record:
                record["id"] = record["_id"]
            for field, types in (("id", (str, int)), ("text", (str,))):
                if field not in record:
                    raise InputError(f"{name}:{number}: missing field '{field}'")
                if not isinstance(record[field], types) or isinstance(record[field], bool):
                    kind = "a string or integer" if field == "id" else "a string"
                    raise InputError(f"{name}:{number}: field '{field}' must be {kind}, got {type(record[field]).__name__}")
            yield TextRecord(str(record["id"]), record["text"])


def _open(path: str):
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{path}: no such file")
    return file.open(encoding="utf-8")
