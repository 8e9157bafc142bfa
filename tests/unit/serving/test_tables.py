"""Uploaded tables: formats told by content, limits checked before anything is materialised,
and answers written back byte for byte."""

from __future__ import annotations

import io

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serving import tables
from serving.errors import ApiError
from tests.support.records import IBM

LIMITS = tables.TableLimits(rows=20_000, columns=50, data_bytes=64 * 2**20, header_bytes=4096)


def _frame(rows: int = 3) -> pd.DataFrame:
    return pd.DataFrame([IBM] * rows)


def _refusal(data: bytes, limits: tables.TableLimits = LIMITS) -> ApiError:
    with pytest.raises(ApiError) as info:
        tables.read_table(data, limits)
    return info.value


def _arrow(table: pa.Table, *, stream: bool = False, compression: str | None = None) -> bytes:
    sink = io.BytesIO()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    writer = pa.ipc.new_stream if stream else pa.ipc.new_file
    with writer(sink, table.schema, options=options) as out:
        out.write_table(table)
    return sink.getvalue()


@pytest.mark.parametrize("fmt", ["csv", "parquet", "arrow"])
def test_round_trip_keeps_columns_and_values(fmt: tables.TableFormat) -> None:
    frame = _frame()
    back, detected = tables.read_table(tables.write_table(frame, fmt), LIMITS)
    assert detected == fmt
    assert list(back.columns) == list(frame.columns)
    assert back["customerID"].tolist() == frame["customerID"].tolist()


def test_format_comes_from_content_not_name() -> None:
    assert tables.sniff_format(tables.write_table(_frame(), "parquet")) == "parquet"
    assert tables.sniff_format(tables.write_table(_frame(), "arrow")) == "arrow"
    assert tables.sniff_format(b"a,b\n1,2\n") == "csv"


def test_csv_cells_stay_text_and_blanks_stay_blank() -> None:
    frame, _ = tables.read_table(b"id,n,t\n007,1.50,\n,2, x \n", LIMITS)
    assert frame.to_dict("list") == {"id": ["007", ""], "n": ["1.50", "2"], "t": ["", " x "]}


def test_utf8_bom_csv_is_read() -> None:
    data = "\ufeff" + _frame().to_csv(index=False)
    frame, _ = tables.read_table(data.encode("utf-8"), LIMITS)
    assert frame.columns[0] == "customerID" and len(frame) == 3


def test_binary_garbage_is_415() -> None:
    refusal = _refusal(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x80")
    assert refusal.status == 415 and "not a CSV" in refusal.message


def test_empty_upload_is_400() -> None:
    refusal = _refusal(b"")
    assert refusal.status == 400 and "empty" in refusal.message


def test_a_latin1_byte_after_64_kib_of_utf8_is_415() -> None:
    data = ("a,b\n" + "x,é\n" * 20_000).encode() + b"y,\xe9\n"
    assert len(data) > 65_536
    refusal = _refusal(data)
    assert refusal.status == 415 and "UTF-8" in refusal.detail[0]["problem"]


def test_a_character_across_byte_65536_is_read() -> None:
    """Nothing is decoded in fixed-size pieces, so no character is cut in half."""
    data = bytearray(b"a,b\n")
    while len(data) < 65_535 - 4:
        data += b"x,y\n"
    data += b"z" * (65_535 - len(data) - 1) + b","
    data += "é\n".encode()
    assert data[65_535:65_537] == "é".encode()
    frame, _ = tables.read_table(bytes(data), LIMITS)
    assert frame["b"].iloc[-1] == "é"


def test_too_many_columns_is_413_before_the_rows_are_read() -> None:
    header = ",".join(f"c{i}" for i in range(100_000))
    wide = tables.TableLimits(rows=1000, columns=50, data_bytes=2**20)
    refusal = _refusal(f"{header}\n{','.join('1' * 100_000)}\n".encode(), wide)
    assert refusal.status == 413 and "100000 columns" in refusal.message


def test_a_header_longer_than_its_limit_is_413() -> None:
    refusal = _refusal(b"a" * 10_000 + b",b\n1,2\n")
    assert refusal.status == 413 and "header line is longer than 4096 bytes" in refusal.message


def test_a_quoted_newline_in_the_header_is_one_name() -> None:
    frame, _ = tables.read_table(b'"a\nb",c\n1,2\n', LIMITS)
    assert list(frame.columns) == ["a\nb", "c"]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "arrow"])
def test_a_column_name_twice_is_400_naming_it(fmt: tables.TableFormat) -> None:
    if fmt == "csv":
        data = b"tenure,gender,tenure\n1,Male,2\n"
    else:
        table = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["tenure", "tenure"])
        sink = io.BytesIO()
        if fmt == "parquet":
            pq.write_table(table, sink)
            data = sink.getvalue()
        else:
            data = _arrow(table)
    refusal = _refusal(data)
    assert refusal.status == 400 and "'tenure'" in refusal.message
    assert refusal.detail == [
        {"field": "tenure", "problem": "the column name appears more than once"}
    ]


def test_csv_rows_are_counted_as_they_stream() -> None:
    refusal = _refusal(b"a\n" + b"1\n" * 20_001)
    assert refusal.status == 413 and "20001 rows" in refusal.message


def test_a_ragged_csv_is_400() -> None:
    refusal = _refusal(b"a,b\n1,2\n3\n")
    assert refusal.status == 400 and refusal.message.startswith("file: could not be read as csv")


def _bomb_parquet(rows: int) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table({"customerID": pa.array(["x"] * rows)}), sink, compression="zstd")
    return sink.getvalue()


def test_parquet_rows_come_from_the_footer_before_any_page_is_read() -> None:
    data = _bomb_parquet(2_000_000)
    assert len(data) < 100_000
    before = pa.total_allocated_bytes()
    refusal = _refusal(data)
    assert refusal.status == 413 and "2000000 rows is over the limit of 20000" in refusal.message
    assert pa.total_allocated_bytes() - before < 1_000_000


def test_parquet_that_decodes_past_the_size_limit_is_413() -> None:
    """Dictionary pages hide how large repeated text becomes; the blocks are counted."""
    sink = io.BytesIO()
    pq.write_table(pa.table({"note": ["y" * 10_000] * 1000}), sink)
    small = tables.TableLimits(rows=1000, columns=50, data_bytes=2 * 2**20)
    refusal = _refusal(sink.getvalue(), small)
    assert refusal.status == 413 and "CLIENTINSIGHT_MAX_TABLE_BYTES" in refusal.message


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("compression", [None, "zstd", "lz4"])
def test_arrow_ipc_reads_every_layout(stream: bool, compression: str | None) -> None:
    table = pa.table({"a": list(range(500)), "s": ["abc"] * 500})
    frame, fmt = tables.read_table(_arrow(table, stream=stream, compression=compression), LIMITS)
    assert fmt == "arrow" and frame["a"].tolist() == list(range(500))


@pytest.mark.parametrize("stream", [False, True])
def test_arrow_rows_and_size_come_from_message_headers(stream: bool) -> None:
    """One compressed batch of 10 million rows: refused from its header, not decompressed."""
    table = pa.table({"a": pa.array([0] * 10_000_000, pa.int64())})
    data = _arrow(table, stream=stream, compression="zstd")
    assert len(data) < 2_000_000
    before = pa.total_allocated_bytes()
    refusal = _refusal(data, tables.TableLimits(rows=20_000_000, columns=5, data_bytes=2**24))
    assert refusal.status == 413 and "bytes once decoded" in refusal.message
    refusal = _refusal(data)
    assert refusal.status == 413 and "10000000 rows" in refusal.message
    assert pa.total_allocated_bytes() - before < 1_000_000


def test_a_truncated_arrow_file_is_400() -> None:
    data = _arrow(pa.table({"a": list(range(500))}))
    refusal = _refusal(data[: len(data) // 2])
    assert refusal.status == 400 and refusal.message.startswith("file: could not be read as arrow")


def test_nested_columns_are_read_for_the_contract_to_judge() -> None:
    sink = io.BytesIO()
    pq.write_table(pa.table({"tenure": [[1, 2], [3]], "s": [{"a": 1}, {"a": 2}]}), sink)
    frame, _ = tables.read_table(sink.getvalue(), LIMITS)
    assert len(frame) == 2


def test_csv_out_keeps_text_cells_byte_for_byte() -> None:
    frame = pd.DataFrame({"id": ["007", " a,b ", 'say "hi"', ""], "n": [1, 2, 3, 4]})
    frame["flag"] = [True, False, True, False]
    back = pd.read_csv(
        io.BytesIO(tables.write_table(frame, "csv")), dtype=str, keep_default_na=False
    )
    assert back["id"].tolist() == frame["id"].tolist()
    assert back["flag"].str.lower().tolist() == ["true", "false", "true", "false"]


def test_csv_out_defuses_spreadsheet_formulas_but_not_numbers() -> None:
    frame = pd.DataFrame(
        {
            "note": ['=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "@SUM(A1)", "-2+3", "ok"],
            "amount": ["-12.5", "+3", "-1e5", "-.5", "7"],
            "flag": [True, False, True, False, True],
        }
    )
    back = pd.read_csv(
        io.BytesIO(tables.write_table(frame, "csv")), dtype=str, keep_default_na=False
    )
    assert back["note"].tolist() == [
        '\'=HYPERLINK("http://x","y")',
        "'+cmd|' /C calc'!A0",
        "'@SUM(A1)",
        "'-2+3",
        "ok",
    ]
    assert back["amount"].tolist() == frame["amount"].tolist()
    # Typed formats carry types, not formulas: untouched.
    parquet, _ = tables.read_table(tables.write_table(frame, "parquet"), LIMITS)
    assert parquet["note"].tolist() == frame["note"].tolist()


def test_csv_out_keeps_every_digit_of_a_float() -> None:
    frame = pd.DataFrame(
        {"p": [0.7250247023501228, 0.1 + 0.2, float("nan"), 1e-17], "k": list("abcd")}
    )
    back = pd.read_csv(io.BytesIO(tables.write_table(frame, "csv")))
    assert back["p"].tolist()[:2] == [0.7250247023501228, 0.30000000000000004]
    assert pd.isna(back["p"][2]) and back["p"][3] == 1e-17
