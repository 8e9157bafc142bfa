"""The REST reader: the JSON header as strictly as the JSON API reads bodies, by either reader."""

from __future__ import annotations

import json
from typing import Any

import pytest

from serving.errors import ApiError
from serving.oip.rest import _header, parse
from serving.routes import loads


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
    request = parse(header + (40).to_bytes(8, "little"), str(len(header)))
    assert [(t.name, t.data) for t in request.inputs] == [("tenure", [40])]
