"""Column-at-a-time encoding of prediction rows: JSON documents and row ids for bulk writes.

A scored file of 10,000 rows is 10,000 `inputs` and 10,000 `outputs` documents. Encoding each
row's dict with `json.dumps` costs more than scoring the file; a file's columns repeat
themselves (a few categories, a few hundred prices), so each distinct value is encoded once and
the rows are assembled from the pieces. The text is exactly what `json.dumps` gives for the
row's dict (NaN and infinities become null, which JSONB requires). A short block (a single
record's request) is written row by row by pydantic's serializer instead: the same JSON values,
without the spaces.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pydantic_core import to_json


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


_LITERALS = {None: "null", True: "true", False: "false"}
_encode_str = json.encoder.encode_basestring_ascii  # what json.dumps uses for str


def _scalar(value: Any) -> str:
    """`json.dumps(value)` for one value, without its per-call overhead for the common types."""
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if kind is float:
        return repr(value) if math.isfinite(value) else "null"
    if kind is bool or value is None:
        return _LITERALS[value]
    if kind is int:
        return repr(value)
    return json.dumps(_finite(value), allow_nan=False)


#: Below this many rows, encoding value by value is cheaper than finding distinct values.
SMALL = 64


def _distinct(values: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, list[Any]] | None:
    """Row codes into the distinct values, or None if the values cannot be hashed."""
    try:
        # A Series, not np.asarray: equal-length lists must stay one value per row.
        codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=False)
    except TypeError:  # unhashable values (lists, dicts)
        return None
    return codes, [plain(u) for u in uniques]


def json_values(values: Sequence[Any] | np.ndarray, prefix: str = "") -> list[str]:
    """Each value as JSON text after `prefix`; in a long column, distinct values are encoded
    once."""
    distinct = None if len(values) < SMALL else _distinct(values)
    if distinct is None:
        return [prefix + _scalar(plain(v)) for v in values]
    codes, uniques = distinct
    texts = np.array([prefix + _scalar(u) for u in uniques], dtype=object)
    result: list[str] = texts[codes].tolist()
    return result


def plain(value: Any) -> Any:
    """NumPy scalars as the Python values `json` knows."""
    return value.item() if isinstance(value, np.generic) else value


def _native(value: Any) -> Any:
    """What `to_json` is handed for a type it does not know (NumPy's ints and bools)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")


def json_objects(columns: Mapping[str, Sequence[Any] | np.ndarray], rows: int) -> list[str]:
    """Row i of every column as one JSON object (keys in column order): as `json.dumps` writes
    the row's dict, or (under `SMALL` rows) its compact form."""
    if not columns:
        return ["{}"] * rows
    if rows < SMALL:
        names = list(columns)
        return [
            to_json(
                dict(zip(names, row, strict=True)), fallback=_native, inf_nan_mode="null"
            ).decode()
            for row in zip(*columns.values(), strict=True)
        ]
    parts = [
        json_values(values, prefix=f"{json.dumps(name)}: ") for name, values in columns.items()
    ]
    return ["{" + ", ".join(row) + "}" for row in zip(*parts, strict=True)]


def random_uuids(count: int) -> list[str]:
    """`count` random (version 4) UUIDs as text, made in one go (uuid4() is ~2 us each)."""
    if count < SMALL:
        return [str(uuid.uuid4()) for _ in range(count)]
    raw = np.frombuffer(os.urandom(16 * count), dtype=np.uint8).reshape(count, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    hexed = raw.tobytes().hex()
    return [
        f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        for h in (hexed[i : i + 32] for i in range(0, 32 * count, 32))
    ]
