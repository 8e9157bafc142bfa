"""The REST reader: the JSON header as strictly as the JSON API reads bodies, by either reader;
binary requests whose header repeats are read from their layout, with the same answers and
refusals as the full path."""

from __future__ import annotations

import json
from typing import Any

import pytest
import tritonclient.http as triton_http

from models.catalog import FAMILIES
from serving.errors import ApiError
from serving.oip.dataplane import DataPlane, records
from serving.oip.layouts import Layouts
from serving.oip.rest import _header, parse, read
from serving.routes import loads
from tests.support.oip import ROWS, family_of, http_inputs, typed_columns

PLANE = DataPlane(FAMILIES)


def _body(**extra: Any) -> dict[str, Any]:
    return {
        "id": "r-1",
        "inputs": [
            {"name": "tenure", "datatype": "INT64", "shape": [2], "data": [1, 40]},
            {"name": "contract", "datatype": "BYTES", "shape": [2], "data": ["A", "B"]},
        ],
        **extra,
    }


@pytest.mark.parametrize(
    "document",
    [
        _body(),
        _body(id="a:b"),  # a colon in a string: read again, same result
        _body(parameters={"content_type": "pd", "deep": {"x": 1}}),  # nested deeper
        _body(outputs=[{"name": "churn", "parameters": {"binary_data": True}}]),
    ],
    ids=["plain", "colon-in-string", "nested", "outputs"],
)
def test_the_header_reads_as_the_strict_reader_does(document: dict[str, Any]) -> None:
    raw = json.dumps(document).encode()
    assert _header(raw) == loads(raw) == document


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"id": "x", "inputs": [{"name": "a", "name": "b"}]}', "the key 'name' appears twice"),
        (b'{"inputs": [], "inputs": [{"name": "a"}]}', "the key 'inputs' appears twice"),
        (b'{"inputs": [{"name": "a", "data": [NaN]}]}', "NaN is not a JSON number"),
        (b'{"inputs": [', "not valid JSON"),
        (b'{"id": "\xff"}', "UTF-8"),
    ],
)
def test_what_the_strict_reader_refuses_the_header_refuses(raw: bytes, words: str) -> None:
    with pytest.raises(ApiError) as refused:
        _header(raw)
    assert refused.value.status == 400 and words in refused.value.message


def test_binary_tensors_follow_the_header() -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "tenure",
                    "datatype": "INT64",
                    "shape": [1],
                    "parameters": {"binary_data_size": 8},
                }
            ]
        }
    ).encode()
    request, spans = parse(header + (40).to_bytes(8, "little"), str(len(header)))
    assert [(t.name, t.data) for t in request.inputs] == [("tenure", [40])]
    assert spans == ((0, 8),)


@pytest.mark.parametrize("length", ["²", "-1", "1e3", "", "99999"])
def test_a_header_length_that_is_no_byte_count_is_a_400(length: str) -> None:
    """'²' is a digit to `str.isdigit` but not to `int`: it was a 500."""
    with pytest.raises(ApiError) as refused:
        parse(b'{"inputs": []}', length)
    assert refused.value.status == 400
    assert "Inference-Header-Content-Length" in refused.value.message


def binary_body(
    model: str, rows: list[dict[str, Any]], binary: bool = True, **changed: list[Any]
) -> tuple[bytes, str]:
    """The body tritonclient.http sends for `rows` (with `changed` columns), and its
    Inference-Header-Content-Length."""
    columns = {**typed_columns(family_of(model), rows), **changed}
    inputs = http_inputs(PLANE.model(model).metadata([]), columns, binary)
    body, size = triton_http.InferenceServerClient.generate_request_body(inputs)
    return body, str(size if size is not None else len(body))


def _full(model: str, body: bytes, length: str) -> list[Any]:
    return records(PLANE.model(model), parse(body, length)[0])


def _refusal(call: Any) -> str:
    with pytest.raises(ApiError) as refused:
        call()
    assert refused.value.status == 400
    return refused.value.message


@pytest.mark.parametrize(
    ("model", "rows_of"),
    [
        ("churn", "churn"),
        ("credit-evaluation", "credit"),
        ("credit-segment", "credit"),
        ("card-balance", "balance"),
    ],
)
def test_a_repeated_header_reads_as_the_first(model: str, rows_of: str) -> None:
    """Every family's model: the same records as the full path, from one layout per header."""
    rows = ROWS[rows_of]
    layouts = Layouts()
    headers = set()
    for chosen in (rows[:1], rows[:1], rows[1:2], rows[:2]):
        body, length = binary_body(model, chosen)
        header = body[: int(length)]
        request, validated = read(layouts, PLANE, model, body, length)
        assert validated == _full(model, body, length)
        assert (request.inputs == []) is (header in headers)  # a known header: values only
        headers.add(header)
    assert len(layouts._known) == len(headers)


def test_values_in_a_known_layout_are_checked_as_on_the_full_path() -> None:
    layouts = Layouts()
    good, length = binary_body("churn", [ROWS["churn"][0]])
    read(layouts, PLANE, "churn", good, length)
    header = int(length)
    # A value the contract refuses, with the same header (same byte size): tenure -1.
    bad, bad_length = binary_body("churn", [ROWS["churn"][0]], tenure=[-1])
    assert bad[:header] == good[:header]
    warm = _refusal(lambda: read(layouts, PLANE, "churn", bad, bad_length))
    assert warm == _refusal(lambda: _full("churn", bad, bad_length)) and "tenure" in warm
    # Text that is not UTF-8 in a BYTES tensor of the known layout.
    name, start, end = _first_bytes_input(layouts, good, header)
    broken = good[: header + start + 4] + b"\xff" * (end - start - 4) + good[header + end :]
    message = _refusal(lambda: read(layouts, PLANE, "churn", broken, length))
    assert f"input '{name}'" in message and "UTF-8" in message
    # A binary part of another length is read in full, and refused in its words.
    message = _refusal(lambda: read(layouts, PLANE, "churn", good + b"\0", length))
    assert "belong to no input" in message


def _first_bytes_input(layouts: Layouts, body: bytes, header: int) -> tuple[str, int, int]:
    layout = next(iter(layouts._known.values()))
    request, _ = parse(body, str(header))
    for tensor, span in zip(request.inputs, layout.spans, strict=True):
        if tensor.datatype == "BYTES":
            return tensor.name, *span
    raise AssertionError("no BYTES input")


def test_only_binary_headers_of_known_models_are_kept_and_the_cache_is_bounded() -> None:
    layouts = Layouts(size=1)
    json_body, json_length = binary_body("churn", ROWS["churn"][:1], binary=False)
    request, validated = read(layouts, PLANE, "churn", json_body, json_length)
    assert validated is None and not layouts._known  # values in the header: never a key
    with pytest.raises(ApiError) as unknown:
        read(layouts, PLANE, "nope", *binary_body("churn", ROWS["churn"][:1]))
    assert unknown.value.status == 404 and not layouts._known
    read(layouts, PLANE, "churn", *binary_body("churn", ROWS["churn"][:1]))
    two_rows, two_length = binary_body("churn", ROWS["churn"][:2])
    request, validated = read(layouts, PLANE, "churn", two_rows, two_length)
    assert validated is None and len(layouts._known) == 1  # full: read, not kept
    assert records(PLANE.model("churn"), request) == _full("churn", two_rows, two_length)
