"""Field types shared by every model's contract."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import BeforeValidator, Field


def _id_as_text(value: Any) -> Any:
    # Parquet/Arrow files may carry numeric ids; an id is an opaque label, not a number.
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _blank_is_none(value: Any) -> Any:
    # Spreadsheets leave unknown numbers blank; Parquet/Arrow carry NaN for them.
    if isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _not_a_boolean(value: Any) -> Any:
    # JSON `true` and a Parquet boolean column would otherwise count as 1 and 0.
    if isinstance(value, bool | np.bool_):
        raise ValueError("a number is expected, not true or false")
    return value


#: In every numeric field: a boolean is a mistake in the request, never a number. Place it
#: after the field's constraints (`Annotated[int, Field(ge=0), NotABoolean]`): before them,
#: pydantic writes the bounds into the JSON schema as raw `ge`/`le` keys that clients ignore.
NotABoolean = BeforeValidator(_not_a_boolean)

#: A number that may be unknown: null, a blank cell and NaN all mean "missing" (the pipeline
#: imputes it). A validator in the type, not on the model, so a column validates on its own.
BlankIsNone = BeforeValidator(_blank_is_none)

#: An optional caller-supplied identifier (customer, applicant), echoed back and stored.
EntityId = Annotated[Annotated[str, Field(max_length=128)] | None, BeforeValidator(_id_as_text)]


def feature_columns(records: Sequence[Any], dtypes: Mapping[str, str]) -> dict[str, np.ndarray]:
    """One typed NumPy column per feature, read straight from validated records (no pandas on
    the request path); `None` in a float column becomes NaN."""
    return {
        name: np.array([getattr(record, name) for record in records], dtype=dtype)
        for name, dtype in dtypes.items()
    }
