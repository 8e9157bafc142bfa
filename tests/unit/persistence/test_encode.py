"""Column-at-a-time JSON: the same text `json.dumps` gives for each row's dict (a short
block: the same JSON values, compact)."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import numpy as np
import pytest

from persistence.encode import SMALL, json_objects, json_values, random_uuids


@pytest.mark.parametrize("repeat", [1, 20])  # short blocks and long (distinct-value) blocks
def test_objects_equal_json_dumps_of_each_row(repeat: int) -> None:
    columns: dict[str, Any] = {
        "name": ["a", 'quote " and \\ back', "a", None, "ünïcode"],
        "n": np.array([1, 2, 1, 3, 4]),
        "p": np.array([0.1, 0.30000000000000004, 1e-7, 0.5, 2.0]),
        "flag": np.array([True, False, True, True, False]),
        "tags": [["x"], [], ["x", "y"], ["x"], []],
        "pairs": [["a", "b"]] * 5,  # equal-length lists: still one value per row
        "versions": [{"m": "1"}] * 5,
    }
    columns = {
        k: (np.tile(v, repeat) if isinstance(v, np.ndarray) else v * repeat)
        for k, v in columns.items()
    }
    n = 5 * repeat
    rows = [
        {k: (v[i].item() if isinstance(v[i], np.generic) else v[i]) for k, v in columns.items()}
        for i in range(n)
    ]
    encoded = json_objects(columns, n)
    assert [json.loads(text) for text in encoded] == rows
    assert [list(json.loads(text)) for text in encoded] == [list(columns)] * n  # key order
    if n >= SMALL:  # long blocks: the very text json.dumps gives
        assert encoded == [json.dumps(row) for row in rows]


@pytest.mark.parametrize("rows", [1, SMALL])
def test_nan_in_a_row_is_null_and_a_value_that_is_not_json_fails(rows: int) -> None:
    encoded = json_objects({"p": np.array([np.nan] * rows), "q": [math.inf] * rows}, rows)
    assert [json.loads(text) for text in encoded] == [{"p": None, "q": None}] * rows
    with pytest.raises((TypeError, ValueError), match="is not JSON"):
        json_objects({"when": [object()] * rows}, rows)


@pytest.mark.parametrize("repeat", [1, 20])
def test_nan_and_infinity_become_null(repeat: int) -> None:
    values = json_values([math.nan, math.inf, 1.5, None] * repeat)
    assert values == ["null", "null", "1.5", "null"] * repeat
    assert [json.loads(t) for t in json_values(np.array([np.nan, 2.0]))] == [None, 2.0]


def test_no_columns_is_an_empty_object_per_row() -> None:
    assert json_objects({}, 2) == ["{}", "{}"]


def test_random_uuids_are_distinct_version_4() -> None:
    ids = random_uuids(1000) + random_uuids(3)
    parsed = [uuid.UUID(i) for i in ids]
    assert len(set(ids)) == 1003
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 for u in parsed)
    assert [str(u) for u in parsed] == ids
