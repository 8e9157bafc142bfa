"""Checks of the gRPC server's layout cache, run in a child process by test_grpc.py (this
module imports `serving.oip.grpc`, whose protobuf messages clash with tritonclient.grpc's)."""

from __future__ import annotations

from typing import Any

from models import churn
from models.catalog import FAMILIES
from serving.errors import ApiError
from serving.oip import open_inference_grpc_pb2 as pb
from serving.oip.dataplane import DataPlane, records
from serving.oip.grpc import decode, read
from serving.oip.layouts import Layouts
from serving.oip.tensors import datatype_of, to_binary
from tests.support.records import SNAKE

PLANE = DataPlane(FAMILIES)


def churn_request(rows: list[dict[str, Any]], request_id: str = "") -> pb.ModelInferRequest:
    """A ModelInferRequest with raw contents, as tritonclient.grpc sends one."""
    request = pb.ModelInferRequest(model_name="churn", id=request_id)
    for name in rows[0]:
        datatype = datatype_of(churn.Customer.model_fields[name].annotation)
        request.inputs.add(name=name, datatype=datatype, shape=[len(rows)])
        request.raw_input_contents.append(to_binary(datatype, [row[name] for row in rows]))
    return request


def customer(**changes: Any) -> dict[str, Any]:
    record = churn.Customer.model_validate(SNAKE).model_dump()
    return {k: v for k, v in {**record, **changes}.items() if v is not None}


def _uncached(request: pb.ModelInferRequest) -> list[Any]:
    return records(PLANE.model("churn"), decode(request))


def _refusal(call: Any) -> str:
    try:
        call()
    except ApiError as error:
        assert error.status == 400, error.status
        return error.message
    raise AssertionError("no refusal")


def a_repeated_layout_reads_as_the_first() -> None:
    layouts = Layouts()
    first = [customer(), customer(customer_id="B-2", tenure=40)]
    second = [customer(customer_id="C-3", tenure=3), customer(monthly_charges=99.5)]
    for rows, request_id in ((first, "one"), (second, "two"), (first, "three")):
        expected = _uncached(churn_request(rows))
        decoded, validated = read(layouts, PLANE, churn_request(rows, request_id))
        assert validated == expected, (validated, expected)
        assert decoded.id == request_id
    assert len(layouts._known) == 1  # one layout, values and ids apart


def a_bad_value_in_a_known_layout_is_the_same_400() -> None:
    layouts = Layouts()
    read(layouts, PLANE, churn_request([customer()]))
    for bad in (customer(tenure=-1), customer(contract="Decade")):
        cold = _refusal(lambda bad=bad: _uncached(churn_request([bad])))
        warm = _refusal(lambda bad=bad: read(layouts, PLANE, churn_request([bad])))
        assert warm == cold and "input '" in warm, (warm, cold)
    truncated = churn_request([customer()])
    truncated.raw_input_contents[3] = b""  # a BOOL with no byte
    message = _refusal(lambda: read(layouts, PLANE, truncated))
    assert "0 bytes of BOOL data" in message, message
    short = churn_request([customer()])
    del short.raw_input_contents[-1]
    assert "raw_input_contents holds" in _refusal(lambda: read(layouts, PLANE, short))


def layouts_differ_by_shape_and_names_and_stay_bounded() -> None:
    layouts = Layouts(size=2)
    without = {k: v for k, v in customer().items() if k != "gender"}
    message = _refusal(lambda: read(layouts, PLANE, churn_request([without])))
    assert "input 'gender' is missing" in message and not layouts._known, message
    read(layouts, PLANE, churn_request([customer()]))
    read(layouts, PLANE, churn_request([customer(), customer(customer_id="X")]))
    assert len(layouts._known) == 2
    third = [customer(), customer(), customer()]
    decoded, validated = read(layouts, PLANE, churn_request(third))  # full: read, not kept
    assert validated is None and len(layouts._known) == 2
    assert records(PLANE.model("churn"), decoded) == _uncached(churn_request(third))
