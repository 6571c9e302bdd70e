"""Reading precomputed vectors: valid lines come back as floats, every bad line names itself."""

from __future__ import annotations

import pytest

from splade_es.errors import InputError
from splade_es.io.corpus import read_vectors


def _write(tmp_path, *lines: str):
    path = tmp_path / "vectors.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_valid_lines_give_float_weights_in_order(tmp_path):
    path = _write(tmp_path, '{"id": 7, "features": {"a": 1, "b": 0.25}}', "",
                  '{"id": "x", "features": {}}', '{"id": "y", "features": {"é": 2.5e-30}}')
    rows = list(read_vectors(path))
    assert [(where.rsplit(":", 1)[1], doc_id) for where, doc_id, _ in rows] == [("1", "7"), ("3", "x"), ("4", "y")]
    assert rows[0][2] == {"a": 1.0, "b": 0.25} and all(type(w) is float for w in rows[0][2].values())
    assert rows[1][2] == {} and rows[2][2] == {"é": 2.5e-30}


@pytest.mark.parametrize("features, problem", [
    ('{"a": 0.5, "": 1.0}', "feature '': the name is empty"),
    ('{"a.b": 1.0}', "feature 'a.b': the name contains '.'"),
    ('{"a": 0.5, "b": 0}', "feature 'b': the weight 0 is 0.0 as float32, below the smallest value"),
    ('{"a": -1.5}', "feature 'a': the weight -1.5 is -1.5 as float32, below the smallest value"),
    ('{"a": true}', "feature 'a': the weight must be a number, got bool True"),
    ('{"a": "1.0"}', "feature 'a': the weight must be a number, got str '1.0'"),
    ('{"a": NaN}', "invalid JSON"),
    ('[1, 2]', "expected"),
])
def test_a_bad_line_names_file_line_and_problem(tmp_path, features, problem):
    path = _write(tmp_path, '{"id": "ok", "features": {"a": 1.0}}', f'{{"id": "bad", "features": {features}}}')
    rows = read_vectors(path)
    assert next(rows)[1] == "ok"
    with pytest.raises(InputError) as raised:
        next(rows)
    message = str(raised.value)
    assert message.startswith(f"{path}:2: ") and problem in message and "\n" not in message

