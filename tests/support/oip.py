"""Open Inference Protocol requests as standard clients send them: `tritonclient` (http and
grpc) inputs built from contract records, and outputs read back as columns."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from pydantic import BaseModel

from models import catalog
from models.family import Family
from tests.support.cardholders import HOLDER
from tests.support.records import APPLICANT, SNAKE

#: Three rows per family, as JSON API records: the shared record and two variations.
ROWS: dict[str, list[dict[str, Any]]] = {
    "churn": [
        SNAKE,
        {**SNAKE, "customer_id": "c-2", "tenure": 40, "contract": "Two year"},
        {**SNAKE, "customer_id": None, "monthly_charges": 99.5},
    ],
    "credit": [
        APPLICANT,
        {**APPLICANT, "applicant_id": "a-2", "income": 1.2, "reports": 4},
        {**APPLICANT, "applicant_id": "a-3", "owner": "no", "months": 3},
    ],
    "balance": [
        HOLDER,
        {**HOLDER, "cardholder_id": "c-2", "limit": 9000, "rating": 650, "student": True},
        {**HOLDER, "cardholder_id": "c-3", "income": 120.5, "cards": 5},
    ],
}
_NUMPY = {"BOOL": np.bool_, "INT64": np.int64, "FP64": np.float64}


def family_of(model: str) -> Family:
    """The catalog family that serves Open Inference Protocol model `model`."""
    for family in catalog.FAMILIES:
        if model == family.recording.decision or model in family.views:
            return family
    raise KeyError(model)


def typed_columns(family: Family, rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """The rows as the contract reads them (booleans as booleans), column by column; the
    columns every row leaves out (null) are left out."""
    records = [family.record.model_validate(row).model_dump() for row in rows]
    names = [n for n in family.record.model_fields if any(r[n] is not None for r in records)]
    return {name: [r[name] for r in records] for name in names}


def array(datatype: str, values: Sequence[Any]) -> np.ndarray:
    if datatype == "BYTES":
        return np.array([("" if v is None else str(v)).encode() for v in values], dtype=object)
    return np.array(values, dtype=_NUMPY[datatype])


def http_inputs(
    metadata: dict[str, Any], columns: dict[str, list[Any]], binary: bool
) -> list[triton_http.InferInput]:
    inputs = []
    for spec in metadata["inputs"]:
        if spec["name"] not in columns:
            continue
        values = array(spec["datatype"], columns[spec["name"]])
        tensor = triton_http.InferInput(spec["name"], [len(values)], spec["datatype"])
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return inputs


def grpc_inputs(metadata: Any, columns: dict[str, list[Any]]) -> list[triton_grpc.InferInput]:
    inputs = []
    for spec in metadata.inputs:
        if spec.name not in columns:
            continue
        values = array(spec.datatype, columns[spec.name])
        tensor = triton_grpc.InferInput(spec.name, [len(values)], spec.datatype)
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    return inputs


def read(result: Any, names: Sequence[str]) -> dict[str, list[Any]]:
    """A tritonclient result's outputs as Python columns (BYTES as text)."""
    columns = {}
    for name in names:
        values = result.as_numpy(name).tolist()
        columns[name] = [v.decode() if isinstance(v, bytes) else v for v in values]
    return columns


def expected(answers: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, list[Any]]:
    """JSON API answers as the protocol's output columns: structured values as JSON text,
    None as empty text."""

    def wire(value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, list | dict):
            return json.dumps(value, separators=(",", ":"))
        return value

    return {name: [wire(a[name]) for a in answers] for name in names}


def view_answers(
    family: Family, model: str, rows: Sequence[dict[str, Any]], answers: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """What model `model` of a multi-model family says on its own, from the JSON API's
    answers: the plain fields its view shares with the decision, and its version (a list, such
    as factors, may be chosen differently for the decision's reasons)."""
    view: type[BaseModel] = family.views[model].output
    entity = family.recording.entity_field
    shared = [
        n
        for n in view.model_fields
        if n in family.answer.model_fields and not isinstance(answers[0][n], list | dict)
    ]
    return [
        {
            entity: row.get(entity),
            **{n: a[n] for n in shared},
            "model_version": a["model_versions"][model],
        }
        for row, a in zip(rows, answers, strict=True)
    ]


class Stream:
    """`tritonclient.grpc`'s stream (`start_stream`, `async_stream_infer`) as its users write
    it: a callback gathers each (result, error) as it comes back."""

    def __init__(self, client: triton_grpc.InferenceServerClient, **start: Any) -> None:
        import queue

        self.client = client
        self.answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
        client.start_stream(
            callback=lambda result, error: self.answers.put((result, error)), **start
        )

    def send(self, model: str, columns: dict[str, list[Any]], request_id: str) -> None:
        metadata = self.client.get_model_metadata(model)
        self.client.async_stream_infer(model, grpc_inputs(metadata, columns), request_id=request_id)

    def take(self, count: int, timeout_s: float = 30) -> list[tuple[Any, Any]]:
        """The next `count` answers, in the order they came."""
        return [self.answers.get(timeout=timeout_s) for _ in range(count)]

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *_: object) -> None:
        self.client.stop_stream()
