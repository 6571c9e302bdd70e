"""Kibana 8.x / OpenSearch Dashboards 2.x saved objects for one index: a data view, a saved
search of titles and expansion terms, two charts of the most frequent expansion terms and a
dashboard holding them, as importable NDJSON.

Kibana cannot show or aggregate ``rank_features``; the ``<field>_terms`` keyword array that
ingest writes next to the vector is what these objects chart and filter.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from splade_es.errors import ConfigError
from splade_es.toolkit.mappings import mappings_dir
from splade_es.toolkit.query.searcher import IndexMeta

FLAVORS = ("kibana", "dashboards")
TEMPLATE = "saved_objects/inspection.json"

# Versions the objects are written in; both products migrate older objects up on import, and
# OpenSearch Dashboards (forked from Kibana 7.10) refuses anything newer than 7.10.
_TYPE_VERSIONS = {"index-pattern": "7.6.0", "search": "7.9.3", "visualization": "7.10.0", "dashboard": "7.9.3"}
_KIBANA_CORE_VERSION = "7.17.0"
_PLACEHOLDER = re.compile(r"\{\{([a-z_:]+)\}\}")


def object_id(index: str, role: str) -> str:
    """Stable per index and role, so a re-import overwrites instead of duplicating."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"splade-es/{index}/{role}"))


def saved_objects(meta: IndexMeta, flavor: str) -> list[dict[str, Any]]:
    """The saved objects for ``meta.index``, ready to import into ``flavor``."""
    if flavor not in FLAVORS:
        raise ConfigError(f"unknown flavor {flavor!r}: choose {', '.join(FLAVORS)}")
    template = json.loads((mappings_dir() / TEMPLATE).read_text(encoding="utf-8"))
    title_field = "title" if "title" in meta.text_fields else (meta.text_fields or [meta.field])[0]
    values = {"index": meta.index, "terms_field": meta.terms_field, "title_field": title_field}

    def fill(text: str) -> str:
        def one(match: re.Match) -> str:
            key = match.group(1)
            if key.startswith("id:"):
                return object_id(meta.index, key[3:])
            if key not in values:
                raise ConfigError(f"{TEMPLATE}: unknown placeholder {{{{{key}}}}}")
            return values[key]

        return _PLACEHOLDER.sub(one, text)

    objects = []
    for item in _substitute(template["objects"], fill):
        _encode_attributes(item["attributes"], set(template["_json_attributes"]))
        item["migrationVersion"] = {item["type"]: _TYPE_VERSIONS[item["type"]]}
        if flavor == "kibana":
            item["coreMigrationVersion"] = _KIBANA_CORE_VERSION
        objects.append(item)
    return objects


def to_ndjson(objects: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(item, ensure_ascii=False, separators=(",", ":")) + "\n" for item in objects)


def _substitute(value: Any, fill) -> Any:
    if isinstance(value, str):
        return fill(value)
    if isinstance(value, list):
        return [_substitute(v, fill) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, fill) for k, v in value.items()}
    return value


def _encode_attributes(node: dict[str, Any], names: set[str]) -> None:
    """Both products store these attributes as JSON text, not as nested objects."""
    for key, value in node.items():
        if key in names and not isinstance(value, str):
            node[key] = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        elif isinstance(value, dict):
            _encode_attributes(value, names)
