"""The one value check: what Lucene refuses is refused here first, with a message naming it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from splade_es.errors import InputError
from splade_es.io.corpus import BadRecord, read_vectors
from splade_es.io.weights import FLOAT32_TINY, MAX_TERM_BYTES, check_features

BAD = [
    ({"wing": float("nan")}, "the weight nan is not finite"),
    ({"wing": float("inf")}, "the weight inf is not finite"),
    ({"wing": 1e39}, "overflows float32"),
    ({"wing": 1e-40}, "below the smallest value the engines accept"),
    ({"wing": FLOAT32_TINY / 2}, "below the smallest value the engines accept"),
    ({"wing": 0.0}, "below the smallest value"),
    ({"wing": -1.0}, "below the smallest value"),
    ({"wing": True}, "the weight must be a number, got bool"),
    ({"wing": "1.0"}, "the weight must be a number, got str"),
    ({"": 1.0}, "the name is empty"),
    ({"a.b": 1.0}, "contains '.'"),
    ({"é" * (MAX_TERM_BYTES // 2 + 1): 1.0}, "UTF-8 bytes long, over Lucene's term limit of 32766"),
]


@pytest.mark.parametrize(("features", "problem"), BAD)
def test_each_bad_value_is_refused_with_its_reason(features, problem):
    with pytest.raises(InputError) as error:
        check_features(features, "v.jsonl:7")
    message = str(error.value)
    assert message.startswith("v.jsonl:7: feature ") and problem in message and "\n" not in message
    assert len(message) < 400


def test_values_the_engines_accept_pass_unchanged():
    ok = {"wing": 1.0, "lift": 2, "tiny": FLOAT32_TINY, "big": float(np.finfo(np.float32).max),
          "x" * (MAX_TERM_BYTES // 4 + 10): 0.5, "é" * (MAX_TERM_BYTES // 2): 3.0}
    checked = check_features(ok, "here")
    assert checked == ok and all(type(v) is float for v in checked.values())
    assert check_features({}, "here") == {}
    with pytest.raises(InputError, match="features must be an object"):
        check_features([1.0], "here")


def test_the_check_is_after_the_float32_cast():
    """1.5e-38 is a normal float64 and a normal float32; 1.1e-38 is a normal float64 but not float32."""
    assert check_features({"a": 1.5e-38}, "w") == {"a": 1.5e-38}
    with pytest.raises(InputError, match=r"as float32"):
        check_features({"a": 1.1e-38}, "w")


def test_vectors_file_reports_file_and_line_or_skips(tmp_path):
    path = tmp_path / "v.jsonl"
    lines = [{"id": "1", "features": {"wing": 1.0}}, {"id": "2", "features": {"wing": 1e-45}},
             {"id": "3", "features": {"lift": 2.0}}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(InputError, match=rf"^{path}:2: feature 'wing': the weight 1e-45"):
        list(read_vectors(path))
    rows = list(read_vectors(path, skip_bad=True))
    assert rows[0] == (f"{path}:1", "1", {"wing": 1.0}) and rows[2][1] == "3"
    assert isinstance(rows[1], BadRecord) and rows[1].where == f"{path}:2" and "1e-45" in rows[1].reason
