"""Tensors of the Open Inference Protocol: the datatypes, their binary layout, and the tensors
a contract's fields become.

A tabular request carries one tensor per feature column, shape `[N]` (or `[N, 1]`, as
MLServer's pandas codec sends them): BYTES for text, INT64, FP64 or BOOL for numbers. The
tensors are derived from the family's pydantic record and answer, the same contract the API's
JSON schemas and the MLflow signature come from. Values cross this module as flat Python lists;
the contract validates them, exactly as it validates JSON records.

Binary layout (the binary tensor data extension, and gRPC's raw contents): the flattened
elements, little-endian, no padding; BOOL one byte each; BYTES each a 4-byte little-endian
length and the bytes.
"""

from __future__ import annotations

import math
import struct
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Union, get_args, get_origin

import numpy as np
from pydantic import BaseModel
from pydantic_core import to_json

from serving.errors import ApiError, problem

#: Every datatype of the protocol, with its NumPy layout (None: BYTES, length-prefixed).
DATATYPES: dict[str, np.dtype[Any] | None] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": None,
}
_LENGTH = struct.Struct("<I")
#: `struct`'s code for each fixed-size datatype: its values as NumPy's `tolist` gives them.
_CODES = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
}
#: Up to this many elements `struct` is cheaper than NumPy's cost per call (single records
#: are most calls); larger tensors go through NumPy.
_SMALL = 64


def invalid(message: str, tensor: str = "", code: str = "invalid_tensor") -> ApiError:
    """A 400 naming the tensor (INVALID_ARGUMENT over gRPC)."""
    return ApiError(400, message, code=code, detail=[problem(tensor or "request", message)])


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as metadata lists it."""

    name: str
    datatype: str
    optional: bool = False
    shape: tuple[int, ...] = (-1,)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(slots=True)
class Tensor:
    """A tensor on the wire: `data` holds the flattened elements as Python values (BYTES as
    text where it decodes as UTF-8)."""

    name: str
    datatype: str
    shape: list[int]
    data: list[Any]
    parameters: dict[str, Any] = field(default_factory=dict)


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """The annotation without `Annotated` and `None`, and whether None was allowed."""
    optional = False
    while True:
        origin = get_origin(annotation)
        if origin is typing.Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            optional = optional or len(args) < len(get_args(annotation))
            if len(args) != 1:
                return annotation, optional
            annotation = args[0]
        else:
            return annotation, optional


def datatype_of(annotation: Any) -> str:
    """The tensor datatype of a contract field: BOOL, INT64, FP64, or BYTES for text and for
    anything structured (sent as JSON text)."""
    inner, _ = _unwrap(annotation)
    if get_origin(inner) is Literal:
        kinds = {type(value) for value in get_args(inner)}
        inner = kinds.pop() if len(kinds) == 1 else str
    if inner is bool:
        return "BOOL"
    if inner is int:
        return "INT64"
    if inner is float:
        return "FP64"
    return "BYTES"


def specs(model: type[BaseModel], first: Sequence[str] = ()) -> tuple[TensorSpec, ...]:
    """One tensor per field of `model` (after the `first` names, which are fields too)."""
    fields = model.model_fields
    out = []
    for name in [*first, *(n for n in fields if n not in first)]:
        info = fields[name]
        _, optional = _unwrap(info.annotation)
        out.append(
            TensorSpec(name, datatype_of(info.annotation), optional or not info.is_required())
        )
    return tuple(out)


def element_count(tensor: str, shape: Sequence[Any]) -> int:
    if len(shape) == 1 and type(first := shape[0]) is int and first >= 0:  # the usual [N]
        return first
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise invalid(
            f"input '{tensor}': shape {list(shape)} must be whole numbers of at least 0", tensor
        )
    return math.prod(shape)


def check_datatype(tensor: str, datatype: Any) -> str:
    if datatype not in DATATYPES:
        raise invalid(
            f"input '{tensor}': datatype {datatype!r} is not one of {', '.join(DATATYPES)}",
            tensor,
        )
    return str(datatype)


def from_binary(tensor: str, datatype: str, count: int, raw: bytes) -> list[Any]:
    """The elements of a binary tensor; a size that does not fit the shape is a 400."""
    dtype = DATATYPES[datatype]
    if dtype is not None:
        if len(raw) != count * dtype.itemsize:
            raise invalid(
                f"input '{tensor}': {len(raw)} bytes of {datatype} data, but its shape holds "
                f"{count} elements of {dtype.itemsize} bytes ({count * dtype.itemsize} bytes)",
                tensor,
            )
        if count <= _SMALL:
            return list(struct.unpack(f"<{count}{_CODES[datatype]}", raw))
        values: list[Any] = np.frombuffer(raw, dtype=dtype).tolist()
        return values
    out: list[Any] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise invalid(f"input '{tensor}': BYTES data ends inside an element's length", tensor)
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise invalid(
                f"input '{tensor}': BYTES element {len(out)} says {length} bytes but only "
                f"{len(raw) - offset} remain",
                tensor,
            )
        out.append(text(tensor, raw[offset : offset + length], len(out)))
        offset += length
    if len(out) != count:
        raise invalid(
            f"input '{tensor}': {len(out)} BYTES elements, but its shape holds {count}", tensor
        )
    return out


def binary_reader(tensor: str, datatype: str, count: int) -> Callable[[bytes], list[Any]]:
    """`from_binary` for one tensor's layout, prepared once: what a request that repeats its
    layout pays per call. Anything that does not fit goes to `from_binary`, which words the
    refusal."""
    dtype = DATATYPES[datatype]
    if dtype is not None and count <= _SMALL:
        unpack = struct.Struct(f"<{count}{_CODES[datatype]}").unpack
        size = count * dtype.itemsize

        def fixed(raw: bytes) -> list[Any]:
            if len(raw) != size:
                return from_binary(tensor, datatype, count, raw)
            return list(unpack(raw))

        return fixed
    if dtype is None and count == 1:

        def one_text(raw: bytes) -> list[Any]:
            if len(raw) >= 4 and _LENGTH.unpack_from(raw)[0] == len(raw) - 4:
                try:
                    return [raw[4:].decode("utf-8")]
                except UnicodeDecodeError:
                    pass
            return from_binary(tensor, datatype, count, raw)

        return one_text
    return partial(from_binary, tensor, datatype, count)


def text(tensor: str, value: bytes, index: int) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid(f"input '{tensor}': element {index} is not UTF-8 text", tensor) from None


def to_binary(datatype: str, values: Sequence[Any]) -> bytes:
    """Elements in the binary layout (BYTES elements are `str` or `bytes`)."""
    dtype = DATATYPES[datatype]
    if dtype is not None:
        if len(values) <= _SMALL:
            try:
                return struct.pack(f"<{len(values)}{_CODES[datatype]}", *values)
            except struct.error:  # None, or a value NumPy converts (truncates, wraps)
                pass
        return np.asarray(values, dtype=dtype).tobytes()
    parts = []
    for value in values:
        raw = value if isinstance(value, bytes) else str(value).encode()
        parts += [_LENGTH.pack(len(raw)), raw]
    return b"".join(parts)


def flatten(tensor: str, data: Any) -> list[Any]:
    """JSON `data`, flat or nested as the shape (the REST form allows both)."""
    if not isinstance(data, list):
        raise invalid(f"input '{tensor}': data must be a JSON array", tensor)
    if not any(isinstance(item, list) for item in data):
        return data
    flat: list[Any] = []
    stack: list[Iterable[Any]] = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def wire_value(datatype: str, value: Any) -> Any:
    """A JSON-ready answer value as an element of its output tensor: structured values and
    None travel as JSON text in BYTES tensors (None as empty text)."""
    if datatype != "BYTES":
        return value
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return to_json(value, inf_nan_mode="null").decode()  # compact; NaN is no JSON


def output_tensors(
    outputs: Sequence[TensorSpec], columns: Mapping[str, Sequence[Any]], rows: int
) -> list[Tensor]:
    """The answer's columns as output tensors, in `outputs` order, shape `[rows]`."""
    return [
        Tensor(
            spec.name,
            spec.datatype,
            [rows],
            [wire_value(spec.datatype, v) for v in columns[spec.name]],
        )
        for spec in outputs
    ]
