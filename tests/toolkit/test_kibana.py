"""Kibana / Dashboards saved objects: the NDJSON imports cleanly (types, ids, references, fields)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from splade_es.toolkit.cli import main

NESTED_JSON = ("visState", "uiStateJSON", "panelsJSON", "optionsJSON", "searchSourceJSON")


@pytest.fixture
def small_index(target, cranfield_vectors, tmp_path) -> dict:
    """Twenty Cranfield vectors (no corpus: vectors only) in a fresh index of each engine."""
    vectors = tmp_path / "twenty.jsonl"
    vectors.write_text("".join(cranfield_vectors.read_text().splitlines(keepends=True)[:20]))
    result = CliRunner().invoke(main, ["ingest", "--index", target["index"], "--vectors", str(vectors), "--model",
                                       "tiny-model", "--field", "vec", "--no-progress", *target["args"]])
    assert result.exit_code == 0, result.output
    return target


def _export(target, *extra) -> list[dict]:
    args = target["args"][:target["args"].index("--state-dir")]  # export keeps no checkpoints
    result = CliRunner().invoke(main, ["kibana", "export", "--index", target["index"], *args, *extra])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def _nested(node: dict) -> dict:
    """Every JSON-encoded attribute, decoded (each must be a JSON string)."""
    found = {}
    for key, value in node.items():
        if key in NESTED_JSON:
            assert isinstance(value, str), f"{key} must be JSON text"
            found[key] = json.loads(value)
        elif isinstance(value, dict):
            found.update(_nested(value))
    return found


@pytest.mark.parametrize("flavor", ["kibana", "dashboards"])
def test_saved_objects_reference_each_other_and_the_index_fields(small_index, flavor):
    objects = _export(small_index, "--flavor", flavor)
    index = small_index["index"]
    by_id = {item["id"]: item for item in objects}
    assert len(by_id) == len(objects) == 5, "ids must be unique"
    assert sorted(item["type"] for item in objects) == ["dashboard", "index-pattern", "search", "visualization",
                                                        "visualization"]
    for item in objects:
        assert set(item) >= {"type", "id", "attributes", "references", "migrationVersion"}
        assert ("coreMigrationVersion" in item) == (flavor == "kibana")
        names = [ref["name"] for ref in item["references"]]
        assert len(names) == len(set(names))
        for ref in item["references"]:
            assert by_id[ref["id"]]["type"] == ref["type"], f"{item['type']} -> {ref}"
        nested = _nested(item["attributes"])
        source = nested.get("searchSourceJSON", {})
        if "indexRefName" in source:
            assert source["indexRefName"] in names
        if "panelsJSON" in nested:
            assert {panel["panelRefName"] for panel in nested["panelsJSON"]} == set(names)
        if "visState" in nested:
            terms = [agg for agg in nested["visState"]["aggs"] if agg["type"] == "terms"]
            assert [agg["params"]["field"] for agg in terms] == ["vec_terms"]
    data_view = next(item for item in objects if item["type"] == "index-pattern")
    assert data_view["attributes"]["title"] == index
    search = next(item for item in objects if item["type"] == "search")
    assert search["attributes"]["columns"] == ["title", "vec_terms"]
    assert all("{{" not in json.dumps(item) for item in objects)


def test_ids_are_stable_per_index_and_differ_between_indices(small_index, tmp_path):
    first, second = _export(small_index), _export(small_index)
    assert [item["id"] for item in first] == [item["id"] for item in second]
    out = tmp_path / "objects.ndjson"
    _export(small_index, "--output", str(out))
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [item["id"] for item in first]
    from splade_es.toolkit.inspection.kibana import object_id

    assert object_id("a", "search") != object_id("b", "search") != object_id("a", "dashboard")


@pytest.mark.parametrize("target", ["opensearch", "local"], indirect=True)
def test_the_flavor_defaults_to_the_engines_own_ui(small_index):
    objects = _export(small_index)
    assert all(("coreMigrationVersion" in item) == (small_index["kind"] != "opensearch") for item in objects)


def test_an_unknown_index_is_one_clear_line(tmp_path):
    result = CliRunner().invoke(main, ["kibana", "export", "--index", "nope", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "no index or alias named 'nope'" in result.output
