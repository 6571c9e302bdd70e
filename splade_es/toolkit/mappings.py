"""Access to the JSON files of ``es_mappings/`` wherever splade-es is installed.

A wheel carries them as ``splade_es/es_mappings``; a source checkout keeps them at
the repository root.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import splade_es
from splade_es.errors import ConfigError
from splade_es.toolkit.engines.base import Capabilities, EngineInfo


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


FIELD_TYPES = ("rank_features", "sparse_vector")
_TEMPLATE_ENGINE = {"opensearch": "opensearch", "elasticsearch": "elasticsearch", "local": "elasticsearch"}


@dataclass(frozen=True)
class VectorIndexSpec:
    """Which model wrote an index's vectors, and how: recorded in ``_meta.splade_es``."""

    model: str
    config_hash: str | None
    pruning: dict[str, Any]
    field: str = "splade"
    field_type: str = "rank_features"
    feature_naming: str = "readable-v1"

    @property
    def terms_field(self) -> str:
        return f"{self.field}_terms"

    def meta(self) -> dict[str, Any]:
        return {"model": self.model, "config_hash": self.config_hash, "pruning": self.pruning,
                "field": self.field, "field_type": self.field_type, "feature_naming": self.feature_naming,
                "splade_es_version": splade_es.__version__}


def choose_field_type(capabilities: Capabilities, requested: str | None, where: str) -> str:
    """``rank_features`` where the node has it (mapper-extras), else ``sparse_vector``."""
    supported = capabilities.field_types()
    if requested is not None:
        if requested not in supported:
            raise ConfigError(f"{where} cannot store {requested} fields (it supports: {', '.join(supported) or 'none'})")
        return requested
    if not supported:
        raise ConfigError(f"{where} supports neither rank_features nor sparse_vector fields")
    return supported[0]


def index_body(engine: EngineInfo, spec: VectorIndexSpec) -> dict[str, Any]:
    """The create-index body: the shipped mapping, with the vector field renamed and ``_meta`` filled.

    A node without the ``english`` analyzer (analysis-common) gets ``standard`` instead.
    """
    body = load_mapping(_TEMPLATE_ENGINE[engine.kind], spec.field_type)
    properties = body["mappings"]["properties"]
    if not engine.capabilities.english_analyzer:
        for spec_of_field in properties.values():
            if spec_of_field.get("analyzer") == "english":
                spec_of_field["analyzer"] = "standard"
    properties[spec.field] = properties.pop("splade")
    properties[spec.terms_field] = properties.pop("splade_terms")
    body["mappings"]["_meta"] = {"splade_es": spec.meta()}
    return body


def check_compatible(mappings: dict[str, dict[str, Any]], spec: VectorIndexSpec, index: str) -> None:
    """Refuse to mix vectors of different models (or encoder settings) in one index."""
    for name, mapping in mappings.items():
        recorded = mapping.get("_meta", {}).get("splade_es")
        if not recorded:
            raise ConfigError(f"index {name!r} was not created by splade-es (no _meta.splade_es): pick a new index")
        if recorded.get("model") != spec.model or (
            recorded.get("config_hash") and spec.config_hash and recorded["config_hash"] != spec.config_hash
        ):
            raise ConfigError(
                f"index {index!r} holds vectors from model {recorded.get('model')!r} (config "
                f"{recorded.get('config_hash')}); this run uses {spec.model!r} (config {spec.config_hash}): "
                "write to a new index, or use --alias for a versioned reindex"
            )
        if recorded.get("field") != spec.field:
            raise ConfigError(f"index {index!r} stores vectors in {recorded.get('field')!r}, not {spec.field!r}")
