"""Uploaded tables in and out: CSV, Parquet and Arrow IPC, read within limits, written back in kind.

The format is told from the bytes (Parquet and Arrow files carry magic numbers), not from the
file name. Every limit is checked before the data is materialised, from what the format says
about itself: the Parquet footer (rows, columns, uncompressed size), each Arrow IPC message's
header (rows and the uncompressed size of its buffers, read without decompressing anything),
and a CSV's header line, whose rows are then counted as they stream in bounded blocks. So a
small file that expands to gigabytes is refused for what it would become, at the cost of
reading its metadata. CSV cells stay text (the contract does the typing), so identifiers such
as `customerID` come back byte for byte.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.ipc
import pyarrow.parquet as pq

from serving.errors import ApiError, problem

TableFormat = Literal["csv", "parquet", "arrow"]

MEDIA_TYPES: dict[TableFormat, str] = {
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.file",
}

_ARROW_FILE_MAGIC = b"ARROW1"
_ARROW_STREAM_START = b"\xff\xff\xff\xff"
#: Rows per block while a Parquet file is materialised (the size budget is checked per block).
_PARQUET_BATCH_ROWS = 16_384
#: Bytes per block while a CSV streams in.
_CSV_BLOCK_BYTES = 4 << 20


@dataclass(frozen=True)
class TableLimits:
    """How large an uploaded table may be, in each dimension it can grow in."""

    rows: int
    columns: int
    #: Decoded size of the table's data in memory (Parquet and Arrow are checked before
    #: decompressing; a CSV is no larger than the body that carried it).
    data_bytes: int
    #: The longest CSV header line.
    header_bytes: int = 1 << 20


def _too_large(what: str, count: int, limit: int, setting: str) -> ApiError:
    return ApiError(
        413,
        f"file: {count} {what} is over the limit of {limit} {what} per file ({setting})",
        code="file_too_large",
        detail=[problem("file", f"at most {limit} {what}")],
    )


def _unreadable(fmt: str, reason: str, status: int = 400) -> ApiError:
    reason = reason.strip().splitlines()[0][:300] if reason.strip() else "malformed"
    return ApiError(
        status,
        f"file: could not be read as {fmt}: {reason}",
        code="unreadable_file",
        detail=[problem("file", reason)],
    )


def sniff_format(data: bytes | memoryview) -> TableFormat:
    """Parquet and Arrow IPC by their magic bytes; anything else is read as UTF-8 CSV text."""
    head, tail = bytes(data[:6]), bytes(data[-4:])
    if head[:4] == b"PAR1" and tail == b"PAR1":
        return "parquet"
    if head == _ARROW_FILE_MAGIC or head[:4] == _ARROW_STREAM_START:
        return "arrow"
    return "csv"


def _check_columns(names: list[str], limits: TableLimits) -> None:
    """No more columns than the limit, and no name twice (which would hide one of them)."""
    if len(names) > limits.columns:
        raise _too_large("columns", len(names), limits.columns, "CLIENTINSIGHT_MAX_COLUMNS")
    doubled = sorted(name for name, count in Counter(names).items() if count > 1)
    if doubled:
        raise ApiError(
            400,
            f"file: column names appear more than once: {', '.join(map(repr, doubled))}",
            code="duplicate_columns",
            detail=[problem(name, "the column name appears more than once") for name in doubled],
        )


def _check_rows(rows: int, limits: TableLimits) -> None:
    if rows > limits.rows:
        raise _too_large("rows", rows, limits.rows, "CLIENTINSIGHT_MAX_ROWS_PER_FILE")


def _check_bytes(size: int, limits: TableLimits) -> None:
    if size > limits.data_bytes:
        raise ApiError(
            413,
            f"file: its data takes {size} bytes once decoded, over the limit of "
            f"{limits.data_bytes} bytes (CLIENTINSIGHT_MAX_TABLE_BYTES); split the file",
            code="file_too_large",
            detail=[problem("file", f"at most {limits.data_bytes} bytes decoded")],
        )


def read_table(data: bytes | memoryview, limits: TableLimits) -> tuple[pd.DataFrame, TableFormat]:
    """An upload as a frame, within `limits`; `ApiError` (400, 413, 415) naming the problem."""
    if not len(data):
        raise ApiError(400, "file: the upload is empty", detail=[problem("file", "empty")])
    fmt = sniff_format(data)
    try:
        if fmt == "parquet":
            table = _read_parquet(data, limits)
        elif fmt == "arrow":
            table = _read_arrow(data, limits)
        else:
            table = _read_csv(data, limits)
        frame = table.to_pandas()
    except (pa.ArrowException, OSError) as exc:  # a truncated file is an OSError to Arrow
        raise _unreadable(fmt, str(exc)) from exc
    return frame, fmt


# --- CSV ------------------------------------------------------------------------------------


def _csv_header(data: bytes | memoryview, limits: TableLimits) -> list[str]:
    """The header's column names, read from at most `limits.header_bytes` of the file by
    Python's csv module (Arrow takes seconds to even open a file of 100,000 columns)."""
    whole = len(data) <= limits.header_bytes
    try:
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(
            bytes(data[: limits.header_bytes]), final=whole
        )
    except UnicodeDecodeError as exc:
        raise _not_utf8(exc.start) from exc
    lines = list(io.StringIO(text, newline=""))
    used = 0

    def feed() -> Iterator[str]:
        nonlocal used
        for line in lines:
            used += 1
            yield line

    try:
        names = next(csv.reader(feed()), None)
    except csv.Error as exc:
        raise _unreadable("csv", f"header: {exc}") from exc
    if not whole and used == len(lines) and not lines[-1].endswith(("\n", "\r")):
        raise ApiError(
            413,
            f"file: the CSV header line is longer than {limits.header_bytes} bytes",
            code="file_too_large",
            detail=[problem("file", f"a header line of at most {limits.header_bytes} bytes")],
        )
    if not names:
        raise _unreadable("csv", "no header line")
    return names


def _not_utf8(offset: int | None = None) -> ApiError:
    where = f"at byte offset {offset}" if offset is not None else "in a cell"
    return ApiError(
        415,
        "file: not a CSV (UTF-8 text), Parquet or Arrow IPC file",
        code="unsupported_file",
        detail=[problem("file", f"not UTF-8 text: an undecodable byte {where} (save as UTF-8)")],
    )


def _read_csv(data: bytes | memoryview, limits: TableLimits) -> pa.Table:
    names = _csv_header(data, limits)
    _check_columns(names, limits)
    try:
        reader = pa_csv.open_csv(
            pa.BufferReader(data),
            read_options=pa_csv.ReadOptions(block_size=_CSV_BLOCK_BYTES, use_threads=False),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        if reader.schema.names != names:
            raise _unreadable("csv", "the header line could not be read consistently")
        batches, rows = [], 0
        for batch in reader:
            rows += batch.num_rows
            _check_rows(rows, limits)
            batches.append(batch)
    except pa.ArrowInvalid as exc:
        if "invalid UTF8" in str(exc):
            raise _not_utf8() from exc
        raise
    return pa.Table.from_batches(batches, schema=reader.schema)


# --- Parquet --------------------------------------------------------------------------------


def _read_parquet(data: bytes | memoryview, limits: TableLimits) -> pa.Table:
    """Rows, columns and uncompressed size from the footer first; then materialised block by
    block, each block counted against the size limit (dictionary-encoded pages can expand far
    beyond their uncompressed size)."""
    parquet = pq.ParquetFile(pa.BufferReader(data))
    meta = parquet.metadata
    schema = parquet.schema_arrow
    _check_rows(meta.num_rows, limits)
    _check_columns(schema.names, limits)
    groups = range(meta.num_row_groups)
    _check_bytes(sum(meta.row_group(i).total_byte_size for i in groups), limits)
    batches, size = [], 0
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, use_threads=False):
        size += batch.nbytes
        _check_bytes(size, limits)
        batches.append(batch)
    return pa.Table.from_batches(batches, schema=schema)


# --- Arrow IPC ------------------------------------------------------------------------------


def _read_arrow(data: bytes | memoryview, limits: TableLimits) -> pa.Table:
    """Every message's header is read before any batch is decoded: the rows it holds and the
    uncompressed size of its buffers. The batches are then read in the same order from the
    same messages (never through the file footer, which could point elsewhere)."""
    stream = memoryview(data)[8:] if bytes(data[:6]) == _ARROW_FILE_MAGIC else memoryview(data)
    rows = size = 0
    messages = pa.ipc.MessageReader.open_stream(pa.BufferReader(stream))
    while True:
        try:
            message = messages.read_next_message()
        except StopIteration:
            break
        if message is None:
            break
        if message.type == "schema":
            _check_columns(pa.ipc.read_schema(message).names, limits)
            continue
        batch_rows, batch_bytes = _batch_size(message)
        rows += batch_rows
        size += batch_bytes
        _check_rows(rows, limits)
        _check_bytes(size, limits)
    return pa.ipc.open_stream(pa.BufferReader(stream)).read_all()


def _table_fields(buf: Any, position: int) -> Any:
    """A flatbuffers table at `position`: a function from field index to its position."""
    vtable = position - struct.unpack_from("<i", buf, position)[0]
    vtable_size = struct.unpack_from("<H", buf, vtable)[0]

    def at(index: int) -> int | None:
        slot = 4 + 2 * index
        if slot >= vtable_size:
            return None
        offset = struct.unpack_from("<H", buf, vtable + slot)[0]
        return position + offset if offset else None

    return at


def _follow(buf: Any, position: int) -> int:
    return position + int(struct.unpack_from("<I", buf, position)[0])


#: `MessageHeader` union members of Arrow's `Message.fbs`.
_DICTIONARY_BATCH, _RECORD_BATCH = 2, 3


def _batch_size(message: Any) -> tuple[int, int]:
    """(rows, uncompressed bytes) of a record or dictionary batch message, from its
    flatbuffers header (`Message.fbs`: Message.header -> RecordBatch {length, nodes, buffers,
    compression}) and the 8-byte uncompressed length that starts each compressed buffer."""
    meta = message.metadata
    body = message.body
    body_size = body.size if body is not None else 0
    try:
        msg = _table_fields(meta, struct.unpack_from("<I", meta, 0)[0])
        kind_at, header_at = msg(1), msg(2)
        kind = meta[kind_at] if kind_at is not None else 0
        if header_at is None or kind not in (_DICTIONARY_BATCH, _RECORD_BATCH):
            return 0, body_size
        header = _follow(meta, header_at)
        if kind == _DICTIONARY_BATCH:
            data_at = _table_fields(meta, header)(1)
            if data_at is None:
                return 0, body_size
            header = _follow(meta, data_at)
        batch = _table_fields(meta, header)
        length_at, buffers_at, compression_at = batch(0), batch(2), batch(3)
        length = struct.unpack_from("<q", meta, length_at)[0] if length_at is not None else 0
        if compression_at is None or buffers_at is None:
            return (length if kind == _RECORD_BATCH else 0), body_size
        vector = _follow(meta, buffers_at)
        count = struct.unpack_from("<I", meta, vector)[0]
        size = 0
        for i in range(count):
            offset, span = struct.unpack_from("<qq", meta, vector + 4 + 16 * i)
            if span < 8:
                continue
            if not 0 <= offset <= body_size - 8:
                raise ValueError("a buffer lies outside the message body")
            decoded = struct.unpack_from("<q", body, offset)[0]
            size += decoded if decoded >= 0 else span - 8  # -1: stored uncompressed
        return (length if kind == _RECORD_BATCH else 0), size
    except (struct.error, IndexError, ValueError) as exc:
        raise pa.ArrowInvalid(f"malformed IPC message header: {exc}") from exc


# --- writing --------------------------------------------------------------------------------

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
        try:
            codes, uniques = pd.factorize(frame[column], use_na_sentinel=False)
        except TypeError:  # unhashable values (lists, dicts): not text a spreadsheet runs
            continue
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
