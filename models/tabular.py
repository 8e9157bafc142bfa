"""Rows of an uploaded table as contract records: which column feeds each field, and every value
checked with exactly the field's pydantic rules.

Reading and writing the files themselves (formats, limits, media types) is the server's
business (`serving/tables.py`); this module knows only frames and schemas.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

M = TypeVar("M", bound=BaseModel)

#: At most this many row problems are listed in one error.
MAX_LISTED_PROBLEMS = 20


@dataclass
class TableError(ValueError):
    """The table cannot be scored; `problems` name the row (1-based) and column of each.
    `too_large`: refused for its size (more rows than allowed), not for its content."""

    message: str
    problems: list[dict[str, Any]] = field(default_factory=list)
    too_large: bool = False

    def __str__(self) -> str:
        return self.message


def _clean(value: Any) -> Any:
    # Parquet/Arrow nulls arrive as NaN/None/NA; the contract decides whether null is allowed.
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


@functools.cache
def list_adapter(schema: type[M]) -> TypeAdapter[list[M]]:
    """One validator per schema, built once (building it costs more than small uploads)."""
    return TypeAdapter(list[schema])  # type: ignore[valid-type]


def _field_columns(
    frame: pd.DataFrame, schema: type[BaseModel], aliases: dict[str, str], max_rows: int
) -> dict[str, str]:
    """Which upload column feeds each field; the whole-file problems (no rows, too many rows,
    a field under two names, required fields missing) as a TableError."""
    if len(frame) == 0:
        raise TableError("file: has a header but no rows", [{"field": "file", "problem": "empty"}])
    if len(frame) > max_rows:
        raise TableError(
            f"file: {len(frame)} rows is over the limit of {max_rows} rows per file",
            [{"field": "file", "problem": f"at most {max_rows} rows"}],
            too_large=True,
        )
    by_field: dict[str, list[str]] = {}
    for column in frame.columns:
        if column in aliases:
            by_field.setdefault(aliases[column], []).append(str(column))
    doubled = {f: cols for f, cols in by_field.items() if len(cols) > 1}
    if doubled:
        raise TableError(
            "file: the same field appears under more than one column name",
            [
                {"field": f, "problem": f"columns {cols} all map to it"}
                for f, cols in doubled.items()
            ],
        )
    missing = [
        name
        for name, info in schema.model_fields.items()
        if info.is_required() and name not in by_field
    ]
    if missing:
        raise TableError(
            f"file: missing required columns: {', '.join(missing)}",
            [{"field": name, "problem": "column missing"} for name in missing],
        )
    return {name: cols[0] for name, cols in by_field.items()}


def _rows(frame: pd.DataFrame, schema: type[M], fields: dict[str, str]) -> list[M]:
    """Every row through the schema; errors name the 1-based data row and the field."""
    columns = list(fields.values())
    records = [
        {k: _clean(v) for k, v in zip(columns, row, strict=True)}
        for row in frame[columns].itertuples(index=False, name=None)
    ]
    try:
        return list_adapter(schema).validate_python(records)
    except ValidationError as exc:
        problems = [
            {
                "row": int(err["loc"][0]) + 1,
                "field": str(err["loc"][1]) if len(err["loc"]) > 1 else "row",
                "problem": err["msg"],
            }
            for err in exc.errors(include_url=False)[:MAX_LISTED_PROBLEMS]
        ]
        raise TableError(
            f"file: {exc.error_count()} invalid values (first {len(problems)} listed)", problems
        ) from exc


def validate_rows(
    frame: pd.DataFrame, schema: type[M], aliases: dict[str, str], max_rows: int
) -> list[M]:
    """Rows of `frame` as `schema` records; unknown columns are ignored (and kept by the caller).

    Errors name the 1-based data row and the column as the file spells it.
    """
    return _rows(frame, schema, _field_columns(frame, schema, aliases, max_rows))


#: Validated values of one upload: one array per schema field, row i of each is record i.
Columns = dict[str, np.ndarray]


def _column_validatable(schema: type[BaseModel]) -> bool:
    """Whether each field validates on its own: no validators on the model itself, which a
    column-at-a-time check could not run (they belong in the field's type instead)."""
    decorators = schema.__pydantic_decorators__
    return not any(
        getattr(decorators, kind)
        for kind in ("validators", "field_validators", "root_validators", "model_validators")
    )


@functools.cache
def _field_adapter(schema: type[BaseModel], name: str) -> TypeAdapter[list[Any]]:
    """A validator for a list of one field's values, with the field's type, constraints and
    the model's string settings: the same checks the model runs on that field."""
    info = schema.model_fields[name]
    config = schema.model_config
    item: Any = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
    return TypeAdapter(
        list[item],
        config=ConfigDict(
            str_strip_whitespace=config.get("str_strip_whitespace", False),
            str_to_lower=config.get("str_to_lower", False),
            str_to_upper=config.get("str_to_upper", False),
            strict=config.get("strict", False),
        ),
    )


def _distinct(values: pd.Series, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(codes, distinct values) of one column; a column of lists or structs has no field's
    value in it (one value per row), so it is refused by name."""
    try:
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
    except TypeError as exc:  # unhashable cells: nested values
        raise TableError(
            f"file: column '{column}' holds nested values (lists or structs); "
            "a field takes one value per row",
            [{"field": column, "problem": "nested values (lists or structs)"}],
        ) from exc
    return codes, np.asarray(uniques, dtype=object)


def validate_columns(
    frame: pd.DataFrame, schema: type[M], aliases: dict[str, str], max_rows: int
) -> Columns:
    """The upload's values by field, validated with exactly the schema's rules.

    Each column is validated on its own, once per distinct value (a file column repeats
    itself: a few categories, a few hundred prices), then spread back to every row. An invalid
    distinct value is reported at the rows that hold it, so the errors name the 1-based row
    and the column as the file spells it, in row order, without a second pass over every row.
    A schema with model-level validators goes row by row instead (`validate_rows`). Fields the
    file lacks take their defaults.
    """
    fields = _field_columns(frame, schema, aliases, max_rows)
    if not _column_validatable(schema):
        records = _rows(frame, schema, fields)
        return {
            name: np.array([getattr(r, name) for r in records], dtype=object)
            for name in schema.model_fields
        }
    columns: Columns = {}
    problems: list[tuple[int, int, str, str]] = []  # (row, field position, column, message)
    invalid = 0
    for position, (name, info) in enumerate(schema.model_fields.items()):
        if name not in fields:
            default: np.ndarray = np.empty(len(frame), dtype=object)
            default[:] = [info.get_default(call_default_factory=True)] * len(frame)
            columns[name] = default
            continue
        column = fields[name]
        codes, uniques = _distinct(frame[column], column)
        try:
            checked = _field_adapter(schema, name).validate_python([_clean(v) for v in uniques])
        except ValidationError as exc:
            messages: dict[int, str] = {}
            for err in exc.errors(include_url=False, include_input=False):
                messages.setdefault(int(err["loc"][0]), err["msg"])
            rows = np.flatnonzero(np.isin(codes, list(messages)))
            invalid += len(rows)
            problems += [
                (int(row), position, column, messages[int(codes[row])])
                for row in rows[:MAX_LISTED_PROBLEMS]
            ]
            continue
        spread: np.ndarray = np.empty(len(checked), dtype=object)
        spread[:] = checked
        columns[name] = spread[codes]
    if problems:
        listed = sorted(problems)[:MAX_LISTED_PROBLEMS]
        raise TableError(
            f"file: {invalid} invalid values (first {len(listed)} listed)",
            [{"row": row + 1, "field": column, "problem": text} for row, _, column, text in listed],
        )
    return columns


def records(columns: Columns, schema: type[M]) -> list[M]:
    """Validated columns back into records, without validating again."""
    names = list(columns)
    return [
        schema.model_construct(**dict(zip(names, row, strict=True)))
        for row in zip(*(columns[n] for n in names), strict=True)
    ]
