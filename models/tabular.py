"""Tabular files in and out (CSV, Parquet, Arrow IPC) and turning their rows into contract records.

The format is told from the bytes (Parquet and Arrow files carry magic numbers), not from the
file name, and the answer goes back in the same format with the input columns untouched and in
order. CSV is read as text so identifiers such as `customerID` come back byte for byte.
"""

from __future__ import annotations

import functools
import io
import math
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.ipc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

M = TypeVar("M", bound=BaseModel)

TableFormat = Literal["csv", "parquet", "arrow"]

MEDIA_TYPES: dict[TableFormat, str] = {
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.file",
}

#: At most this many row problems are listed in one error answer.
MAX_LISTED_PROBLEMS = 20


@dataclass
class TableError(ValueError):
    """The upload cannot be scored; `problems` name the row (1-based) and column of each."""

    message: str
    problems: list[dict[str, Any]] = field(default_factory=list)
    status: int = 400

    def __str__(self) -> str:
        return self.message

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "detail": self.problems}


def sniff_format(data: bytes) -> TableFormat:
    """Parquet and Arrow IPC by their magic bytes; anything else must be UTF-8 CSV text."""
    if data[:4] == b"PAR1" and data[-4:] == b"PAR1":
        return "parquet"
    if data[:6] == b"ARROW1" or data[:4] == b"\xff\xff\xff\xff":
        return "arrow"
    try:
        data[:65536].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TableError(
            "file: not a CSV (UTF-8 text), Parquet or Arrow IPC file",
            [{"field": "file", "problem": f"undecodable byte at offset {exc.start}"}],
            status=415,
        ) from exc
    return "csv"


def read_table(data: bytes) -> tuple[pd.DataFrame, TableFormat]:
    """Parse an upload into a frame; CSV cells stay text (the contract does the typing)."""
    if not data:
        raise TableError("file: the upload is empty", [{"field": "file", "problem": "empty"}])
    fmt = sniff_format(data)
    try:
        if fmt == "parquet":
            frame = pq.read_table(io.BytesIO(data)).to_pandas()
        elif fmt == "arrow":
            reader: Any = (
                pa.ipc.open_file(io.BytesIO(data))
                if data[:6] == b"ARROW1"
                else pa.ipc.open_stream(io.BytesIO(data))
            )
            frame = reader.read_all().to_pandas()
        else:
            frame = pd.read_csv(
                io.BytesIO(data), dtype=str, keep_default_na=False, encoding="utf-8-sig"
            )
    except (pa.ArrowException, pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as exc:
        raise TableError(
            f"file: could not be read as {fmt}: {exc}",
            [{"field": "file", "problem": str(exc)}],
        ) from exc
    return frame, fmt


#: A CSV cell starting with one of these is a formula to a spreadsheet (OWASP "CSV injection")...
_FORMULA_START = tuple("=+-@\t\r")
#: ...unless it is just a signed number, which stays as it is.
_SIGNED_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def _formula(value: Any) -> bool:
    return (
        isinstance(value, str)
        and value.startswith(_FORMULA_START)
        and _SIGNED_NUMBER.fullmatch(value) is None
    )


def defuse_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """Text cells a spreadsheet would run as a formula (`=HYPERLINK(...)`, `@SUM(...)`, `+cmd`)
    get a leading `'`, which spreadsheets show as text; signed numbers are left alone. Applied
    to every CSV this service writes, since the text columns come from whoever made the file.
    Checked once per distinct value (a column repeats itself)."""
    out = frame
    for column in frame.columns:
        if not pd.api.types.is_string_dtype(frame[column].dtype):  # object or str columns
            continue
        codes, uniques = pd.factorize(frame[column], use_na_sentinel=False)
        risky_values = np.fromiter((_formula(v) for v in uniques), dtype=bool, count=len(uniques))
        if not risky_values.any():
            continue
        defused = np.array(
            ["'" + v if risky else v for v, risky in zip(uniques, risky_values, strict=True)],
            dtype=object,
        )
        if out is frame:
            out = frame.copy()
        out[column] = defused[codes]
    return out


def write_table(frame: pd.DataFrame, fmt: TableFormat) -> bytes:
    """Serialise a frame back into the upload's format (CSV with formulas defused)."""
    sink = io.BytesIO()
    if fmt == "csv":
        frame = defuse_formulas(frame)
        try:
            # Arrow's writer is ~10x pandas'; it quotes every text cell and writes true/false.
            pa_csv.write_csv(
                pa.Table.from_pandas(frame, preserve_index=False),
                sink,
                pa_csv.WriteOptions(quoting_style="needed"),
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            sink = io.BytesIO()  # a column Arrow cannot type (mixed objects): pandas writes it
            frame.to_csv(sink, index=False)
    elif fmt == "parquet":
        frame.to_parquet(sink, index=False)
    else:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    return sink.getvalue()


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
            status=413,
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


def _validate_column(schema: type[BaseModel], name: str, values: pd.Series) -> np.ndarray:
    """One column's values validated once per distinct value, then spread back to every row.

    A file column repeats itself (a few categories, a few hundred prices), so this costs
    a fraction of validating every cell; ValidationError if any distinct value is invalid.
    """
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    checked = _field_adapter(schema, name).validate_python([_clean(v) for v in uniques])
    spread: np.ndarray = np.empty(len(checked), dtype=object)
    spread[:] = checked
    return spread[codes]


def validate_columns(
    frame: pd.DataFrame, schema: type[M], aliases: dict[str, str], max_rows: int
) -> Columns:
    """The upload's values by field, validated with exactly the schema's rules.

    Each column is validated on its own, once per distinct value; if any value is invalid (or
    the schema has model-level validators), every row goes through the schema so the errors
    name the 1-based row and the field, as `validate_rows` does. Fields the file lacks take
    their defaults.
    """
    fields = _field_columns(frame, schema, aliases, max_rows)
    if _column_validatable(schema):
        try:
            columns: Columns = {}
            for name, info in schema.model_fields.items():
                if name in fields:
                    columns[name] = _validate_column(schema, name, frame[fields[name]])
                else:
                    default: np.ndarray = np.empty(len(frame), dtype=object)
                    default[:] = [info.get_default(call_default_factory=True)] * len(frame)
                    columns[name] = default
            return columns
        except ValidationError:
            pass  # the row-by-row pass below names each problem's row
    records = _rows(frame, schema, fields)
    return {
        name: np.array([getattr(r, name) for r in records], dtype=object)
        for name in schema.model_fields
    }


def records(columns: Columns, schema: type[M]) -> list[M]:
    """Validated columns back into records, without validating again."""
    names = list(columns)
    return [
        schema.model_construct(**dict(zip(names, row, strict=True)))
        for row in zip(*(columns[n] for n in names), strict=True)
    ]
