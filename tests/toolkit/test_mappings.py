"""The mapping files ship with the package and are valid engine mappings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import splade_es
from splade_es.toolkit.mappings import load_mapping, mappings_dir


def test_mappings_are_inside_the_installed_package_under_ci():
    directory = mappings_dir()
    assert (directory / "opensearch" / "rank_features.json").is_file()
    if os.environ.get("CI") == "true":
        # .ci/run installs the built wheel, so the files must come from inside the package.
        assert directory == Path(splade_es.__file__).parent / "es_mappings"


def test_opensearch_rank_features_mapping_shape():
    mapping = load_mapping("opensearch", "rank_features")["mappings"]
    fields = mapping["properties"]
    assert fields["splade"] == {"type": "rank_features"}
    assert fields["splade_terms"]["type"] == "keyword"
    assert fields["title"]["analyzer"] == fields["text"]["analyzer"] == "english"
    assert "splade_es" in mapping["_meta"]


def test_unknown_mapping_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="no mapping opensearch/nope"):
        load_mapping("opensearch", "nope")
