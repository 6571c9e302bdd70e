"""Access to the JSON files of ``es_mappings/`` wherever splade-es is installed.

A wheel carries them as ``splade_es/es_mappings``; a source checkout keeps them at
the repository root.
"""

from __future__ import annotations

import hashlib
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
        return terms_field_of(self.field)

    def meta(self) -> dict[str, Any]:
        return {"model": self.model, "config_hash": self.config_hash, "pruning": self.pruning,
                "field": self.field, "field_type": self.field_type, "feature_naming": self.feature_naming,
                "splade_es_version": splade_es.__version__}


def terms_field_of(vector_field: str) -> str:
    """The keyword array of a document's top expansion terms, next to its vector field."""
    return f"{vector_field}_terms"


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
    """The create-index body: the shipped mapping, with the vector field renamed and ``_meta`` filled."""
    body = _template(engine, spec.field_type)
    properties = body["mappings"]["properties"]
    properties[spec.field] = properties.pop("splade")
    properties[spec.terms_field] = properties.pop("splade_terms")
    body["mappings"]["_meta"] = {"splade_es": spec.meta()}
    return body


def text_index_body(engine: EngineInfo, meta: dict[str, Any]) -> dict[str, Any]:
    """The shipped mapping without the vector fields: BEIR's analysed title and text (BM25, ELSER)."""
    body = _template(engine, "rank_features")
    for name in ("splade", "splade_terms"):
        body["mappings"]["properties"].pop(name)
    body["mappings"]["_meta"] = {"splade_es": meta}
    return body


def with_shards(body: dict[str, Any], shards: int | None, replicas: int | None) -> dict[str, Any]:
    """``body`` with the index layout asked for; unset, the cluster's defaults apply (a shipped
    mapping never forces ``number_of_replicas: 0``, which would leave a real cluster without copies)."""
    settings = body.setdefault("settings", {}).setdefault("index", {})
    if shards is not None:
        settings["number_of_shards"] = shards
    if replicas is not None:
        settings["number_of_replicas"] = replicas
    if not settings:
        body["settings"].pop("index")
    if not body["settings"]:
        body.pop("settings")
    return body


def _template(engine: EngineInfo, field_type: str) -> dict[str, Any]:
    """A shipped mapping; a node without the ``english`` analyzer (analysis-common) gets ``standard``."""
    body = load_mapping(_TEMPLATE_ENGINE[engine.kind], field_type)
    if not engine.capabilities.english_analyzer:
        for spec_of_field in body["mappings"]["properties"].values():
            if spec_of_field.get("analyzer") == "english":
                spec_of_field["analyzer"] = "standard"
    return body


def analysed_text_fields(mappings: dict[str, dict[str, Any]]) -> list[str]:
    """The ``text`` fields of an index's mapping, in mapping order (BEIR's title and text)."""
    properties = next(iter(mappings.values()), {}).get("properties", {})
    return [name for name, spec in properties.items() if spec.get("type") == "text"]


def recorded_meta(mappings: dict[str, dict[str, Any]], index: str) -> dict[str, Any]:
    """The ``_meta.splade_es`` shared by every index behind ``index``, with its ``encoder``."""
    metas = {name: mapping.get("_meta", {}).get("splade_es") for name, mapping in mappings.items()}
    missing = sorted(name for name, meta in metas.items() if not meta)
    if missing:
        raise ConfigError(f"index {missing[0]!r} was not created by splade-es (its mapping has no _meta.splade_es)")
    encoders = {meta.get("encoder", "splade") for meta in metas.values()}
    if len(encoders) > 1:
        raise ConfigError(f"{index!r} spans indices built by different encoders ({', '.join(sorted(encoders))})")
    meta = dict(next(iter(metas.values())))
    meta["encoder"] = encoders.pop()
    return meta


def model_id(model: str, adapter: str | None = None) -> str:
    """How an index records its model: a local bundle by absolute path, a hub id as given,
    and an adapter applied to it after a ``+``."""

    def one(name: str) -> str:
        path = Path(name).expanduser()
        return str(path.resolve()) if path.is_dir() else name

    return one(model) + (f" + {one(adapter)}" if adapter else "")


def config_hash(config: dict[str, Any]) -> str:
    """A short fingerprint of an encoder's ``splade_config.json`` settings. Where queries come
    from (``query_encoder``) is left out: it changes no document vector, so an index built with
    a bundle still answers that bundle once its queries become static (``splade-es idf``)."""
    documents_side = {key: value for key, value in config.items() if key != "query_encoder"}
    return hashlib.sha256(json.dumps(documents_side, sort_keys=True).encode()).hexdigest()[:16]


def same_model(recorded: str | None, recorded_hash: str | None, model: str, model_hash: str | None) -> bool:
    """Whether ``model`` (an id from :func:`model_id`, with its config hash when known) is the
    one an index recorded."""
    if recorded != model:
        return False
    return not (recorded_hash and model_hash and recorded_hash != model_hash)


def check_compatible(mappings: dict[str, dict[str, Any]], spec: VectorIndexSpec, index: str) -> None:
    """Refuse to mix vectors of different models (or encoder settings) in one index."""
    for name, mapping in mappings.items():
        recorded = mapping.get("_meta", {}).get("splade_es")
        if not recorded:
            raise ConfigError(f"index {name!r} was not created by splade-es (no _meta.splade_es): pick a new index")
        if recorded.get("encoder", "splade") != "splade":
            raise ConfigError(f"index {index!r} holds {recorded['encoder']} documents, not splade vectors: "
                              "write to a new index")
        if not same_model(recorded.get("model"), recorded.get("config_hash"), spec.model, spec.config_hash):
            raise ConfigError(
                f"index {index!r} holds vectors from model {recorded.get('model')!r} (config "
                f"{recorded.get('config_hash')}); this run uses {spec.model!r} (config {spec.config_hash}): "
                "write to a new index, or use --alias for a versioned reindex"
            )
        if recorded.get("field") != spec.field:
            raise ConfigError(f"index {index!r} stores vectors in {recorded.get('field')!r}, not {spec.field!r}")
        changed = _changed_encoding(recorded.get("pruning") or {}, spec.pruning or {})
        if changed:
            raise ConfigError(f"index {index!r} holds vectors written with other encoder settings ({changed}): "
                              "its documents and its record would disagree; write to a new index, or use --alias "
                              "for a versioned reindex")


ENCODING_KEYS = ("top_k", "min_weight", "max_ratio", "chunk_tokens", "chunk_overlap")


def _changed_encoding(recorded: dict[str, Any], wanted: dict[str, Any]) -> str:
    """How two model runs' document pruning and chunking differ ('' when alike). Precomputed
    vectors (``--vectors``) carry no such promise, so they are not compared."""
    if "precomputed" in recorded or "precomputed" in wanted:
        return ""
    return ", ".join(f"{key} {recorded.get(key)} -> {wanted.get(key)}" for key in ENCODING_KEYS
                     if recorded.get(key) != wanted.get(key))
