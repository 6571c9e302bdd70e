"""Access to the JSON files of ``es_mappings/`` wherever splade-es is installed.

A wheel carries them as ``splade_es/es_mappings``; a source checkout keeps them at
the repository root.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import splade_es


def mappings_dir() -> Path:
    packaged = Path(splade_es.__file__).parent / "es_mappings"
    if packaged.is_dir():
        return packaged
    checkout = Path(splade_es.__file__).resolve().parents[1] / "es_mappings"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError("es_mappings not found: splade-es is installed without its mapping files")


def load_mapping(engine: str, name: str) -> dict[str, Any]:
    """The parsed ``es_mappings/<engine>/<name>.json``."""
    path = mappings_dir() / engine / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no mapping {engine}/{name} in {mappings_dir()}")
    return json.loads(path.read_text(encoding="utf-8"))
