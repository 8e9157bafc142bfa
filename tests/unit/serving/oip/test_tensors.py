"""Tensors: the binary layout both ways, JSON data flat or nested, and the tensors a contract
becomes."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from models import churn, credit
from serving.errors import ApiError
from serving.oip.tensors import (
    DATATYPES,
    binary_reader,
    flatten,
    from_binary,
    specs,
    to_binary,
    wire_value,
)


@pytest.mark.parametrize(
    ("datatype", "values"),
    [
        ("BOOL", [True, False, True]),
        ("INT64", [1, -2, 2**40]),
        ("INT32", [7, -7]),
        ("FP64", [0.1, 2.5e300, -0.0]),
        ("FP32", [0.5, 1.25]),
        ("UINT8", [0, 255]),
        ("BYTES", ["Two year", "", "Électronique"]),
    ],
)
def test_binary_tensors_round_trip(datatype: str, values: list[object]) -> None:
    assert from_binary("t", datatype, len(values), to_binary(datatype, values)) == values


@pytest.mark.parametrize("datatype", [d for d, dtype in DATATYPES.items() if dtype is not None])
@pytest.mark.parametrize("count", [1, 3, 64, 65, 300])
def test_small_tensors_read_and_write_as_numpy_does(datatype: str, count: int) -> None:
    """Small tensors take `struct`, large ones NumPy: either way the same bytes and values."""
    dtype = DATATYPES[datatype]
    assert dtype is not None
    values = np.arange(count).astype(dtype)
    raw = values.tobytes()
    assert from_binary("t", datatype, count, raw) == values.tolist()
    assert to_binary(datatype, values.tolist()) == raw


@pytest.mark.parametrize(
    ("datatype", "values", "expected"),
    [
        ("FP64", [0.5, None], [0.5, float("nan")]),  # a missing answer
        ("INT64", [2.7], [2]),  # NumPy's conversion, as before the struct path
        ("BOOL", [0, 2], [False, True]),
    ],
)
def test_values_struct_refuses_are_converted_as_numpy_converts(
    datatype: str, values: list[object], expected: list[object]
) -> None:
    dtype = DATATYPES[datatype]
    assert to_binary(datatype, values) == np.asarray(expected, dtype=dtype).tobytes()


def _outcome(read: object, raw: bytes) -> object:
    try:
        return read(raw)  # type: ignore[operator]
    except ApiError as error:
        return ("refused", error.status, error.message)


@pytest.mark.parametrize("datatype", list(DATATYPES))
@pytest.mark.parametrize("count", [1, 2, 65])
def test_a_prepared_reader_reads_and_refuses_as_from_binary(datatype: str, count: int) -> None:
    """The gRPC layout cache's readers: the same values, the same refusals, for good data, a
    byte too few or too many, and BYTES with a wrong length or text that is not UTF-8."""
    dtype = DATATYPES[datatype]
    good = (
        to_binary(datatype, [f"v{i}" for i in range(count)])
        if dtype is None
        else np.arange(count).astype(dtype).tobytes()
    )
    cases = [good, good[:-1], good + b"\0", b"", struct.pack("<I", 9) + b"ab", b"\1\0\0\0\xff"]
    read = binary_reader("t", datatype, count)
    for raw in cases:
        assert _outcome(read, raw) == _outcome(lambda r: from_binary("t", datatype, count, r), raw)


def test_bytes_elements_are_length_prefixed_little_endian() -> None:
    assert to_binary("BYTES", ["ab", "c"]) == b"\x02\x00\x00\x00ab\x01\x00\x00\x00c"
    assert to_binary("INT64", [1]) == struct.pack("<q", 1)


@pytest.mark.parametrize(
    ("datatype", "raw", "words"),
    [
        ("INT64", np.array([1], dtype="<i8").tobytes(), "8 bytes of INT64 data"),
        ("BYTES", b"\x05\x00\x00\x00ab", "says 5 bytes but only 2 remain"),
        ("BYTES", b"\x01\x00", "ends inside an element's length"),
        ("BYTES", b"\x01\x00\x00\x00\xff", "not UTF-8"),
        ("BYTES", b"\x01\x00\x00\x00a", "1 BYTES elements, but its shape holds 2"),
    ],
)
def test_binary_data_that_does_not_fit_is_a_400_naming_the_tensor(
    datatype: str, raw: bytes, words: str
) -> None:
    with pytest.raises(ApiError) as refused:
        from_binary("tenure", datatype, 2, raw)
    assert refused.value.status == 400
    assert "input 'tenure'" in refused.value.message and words in refused.value.message


def test_json_data_may_be_flat_or_nested_as_the_shape() -> None:
    assert flatten("t", [[1], [2], [3]]) == [1, 2, 3]
    assert flatten("t", [1, 2]) == [1, 2]
    with pytest.raises(ApiError, match="must be a JSON array"):
        flatten("t", "abc")


def test_the_contract_says_each_tensors_datatype() -> None:
    inputs = {s.name: s for s in specs(churn.Customer)}
    assert inputs["tenure"].datatype == "INT64" and not inputs["tenure"].optional
    assert inputs["monthly_charges"].datatype == "FP64"
    assert inputs["senior_citizen"].datatype == "BOOL"
    assert inputs["contract"].datatype == "BYTES"
    assert inputs["customer_id"].optional and inputs["total_charges"].optional
    outputs = [s.name for s in specs(credit.SegmentAssignment, ("model_version",))]
    assert outputs[0] == "model_version" and "segment" in outputs
    assert {s.datatype for s in specs(credit.CreditEvaluation) if s.name == "reasons"} == {"BYTES"}


def test_structured_and_missing_answers_travel_as_text() -> None:
    assert wire_value("BYTES", ["a", "b"]) == '["a","b"]'
    assert wire_value("BYTES", None) == ""
    assert wire_value("FP64", 0.5) == 0.5
