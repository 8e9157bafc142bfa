"""The Open Inference Protocol's work, the same for REST and gRPC: which models exist, their
metadata and readiness, and inference.

The models come from the catalog: each family's decision under the name it is stored by
(`churn`, `credit-evaluation`, `card-balance`), and each registered model of a family that
decides with several on its own (`credit-segment`, `credit-approval`: the family's `views`).
Their tensors come from the family's record and answer. An inference is the JSON API's path
(`Entry.infer`): the contract's validation, the family's batcher, version reporting,
shadowing and persistence (the stored row names the protocol). Access control and rate limits
are the front doors' (the REST routes sit behind `serving/access.py`; the gRPC server asks the
same policy). Every refusal is an `ApiError`, which each protocol words its own way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from models.family import Family, ModelView, Recording
from models.tabular import list_adapter
from persistence.writer import record_columns
from serving.errors import ApiError, problem
from serving.oip.tensors import Tensor, TensorSpec, invalid, output_tensors, specs
from serving.openapi import package_version
from serving.settings import get_serving_settings

SERVER_NAME = "clientinsight"
#: The protocol extensions served: binary tensors over REST.
EXTENSIONS = ("binary_tensor_data",)
#: The pandas codec MLServer defines: one tensor per column (how every request here is read).
PANDAS = "pd"


@dataclass(frozen=True)
class InferenceModel:
    """A model as the protocol names it: a family's decision, or one model of it."""

    name: str
    family: Family
    #: The registered model whose versions are this one's versions.
    model: str
    #: None for the family's decision; the model's own answer otherwise.
    view: ModelView | None
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    recording: Recording

    def columns(self, records: Sequence[Any], outputs: Sequence[Any]) -> dict[str, list[Any]]:
        """The answers to `records` from the model worker's `outputs`, as JSON-ready columns
        (the entity id first for a model's own answer, which does not echo it)."""
        if self.view is None:
            return record_columns(self.family.answers(records, outputs))
        take = self.view.take
        columns = record_columns([take(output) for output in outputs])
        entity = self.family.recording.entity_field
        return {entity: [getattr(r, entity) for r in records], **columns}

    def metadata(self, versions: Sequence[str]) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": list(versions),
            "platform": f"{SERVER_NAME}-{self.family.name}",
            "inputs": [spec.as_dict() for spec in self.inputs],
            "outputs": [spec.as_dict() for spec in self.outputs],
        }


def inference_models(families: Sequence[Family]) -> dict[str, InferenceModel]:
    """Every model the protocol serves, by name, from the catalog."""
    models: dict[str, InferenceModel] = {}
    for family in families:
        decision = family.recording
        models[decision.decision] = InferenceModel(
            decision.decision,
            family,
            decision.primary_model,
            None,
            specs(family.record),
            specs(family.answer),
            decision,
        )
        entity = decision.entity_field
        for name, view in family.views.items():
            if name in models:
                continue
            models[name] = InferenceModel(
                name,
                family,
                name,
                view,
                specs(family.record),
                (*specs(family.record, (entity,))[:1], *specs(view.output)),
                Recording(
                    decision=name,
                    primary_model=name,
                    entity_field=entity,
                    score_field=view.score_field or "",
                    label_field=view.label_field or "",
                ),
            )
    return models


@dataclass
class RequestedOutput:
    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferRequest:
    """An inference request as either protocol carries it, tensors decoded."""

    inputs: list[Tensor]
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[RequestedOutput] = field(default_factory=list)


@dataclass
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[Tensor]
    #: The id of the stored rows (the JSON API's X-Request-ID).
    request_id: str
    parameters: dict[str, Any] = field(default_factory=dict)


class Serving(Protocol):
    """What the data plane needs of the entry service (`serving.entry.Entry`)."""

    async def infer(
        self,
        target: InferenceModel,
        records: Sequence[BaseModel],
        *,
        version: str | None,
        protocol: str,
    ) -> tuple[dict[str, list[Any]], str, str] | None: ...

    async def versions(self, family: Family) -> dict[str, dict[str, str | None]]: ...


def records(model: InferenceModel, request: InferRequest) -> list[BaseModel]:
    """The request's tensors as the family's records, validated by the contract; a 400 that
    names the tensor and the problem otherwise."""
    rows = check_layout(model, request)
    return validate(model, {tensor.name: tensor.data for tensor in request.inputs}, rows)


def check_layout(model: InferenceModel, request: InferRequest) -> int:
    """The rows the request's tensors hold, once their names, shapes and counts are the
    model's (everything but the values: a layout a client repeats is checked once)."""
    content_type = request.parameters.get("content_type")
    if content_type not in (None, PANDAS):
        raise invalid(
            f"parameters.content_type {content_type!r} is not served: send one tensor per "
            f"feature column ({PANDAS!r}, MLServer's pandas codec)",
            "parameters.content_type",
        )
    if not request.inputs:
        raise invalid("no inputs: send one tensor per feature column", "inputs")
    known = {spec.name: spec for spec in model.inputs}
    seen: dict[str, Tensor] = {}
    for tensor in request.inputs:
        if tensor.name in seen:
            raise invalid(f"input '{tensor.name}' is sent twice", tensor.name)
        if tensor.name not in known:
            raise invalid(
                f"input '{tensor.name}' is not an input of model '{model.name}'; its inputs: "
                f"{', '.join(known)}",
                tensor.name,
            )
        seen[tensor.name] = tensor
    missing = [s for s in model.inputs if not s.optional and s.name not in seen]
    if missing:
        spec = missing[0]
        raise invalid(
            f"input '{spec.name}' is missing ({spec.datatype}, shape [N]); "
            f"{len(missing)} required input{'s are' if len(missing) > 1 else ' is'} missing: "
            f"{', '.join(s.name for s in missing)}",
            spec.name,
        )
    rows = _rows(list(seen.values()))
    limit = get_serving_settings().max_rows_per_request
    if rows > limit:
        raise ApiError(
            413,
            f"inputs: {rows} rows is over the limit of {limit} per request",
            code="too_many_items",
            detail=[problem("inputs", f"at most {limit} rows")],
        )
    return rows


def validate(
    model: InferenceModel, columns: Mapping[str, Sequence[Any]], rows: int
) -> list[BaseModel]:
    """`rows` records from the tensors' values by name, validated by the contract."""
    table = [{name: values[i] for name, values in columns.items()} for i in range(rows)]
    try:
        return list_adapter(model.family.record).validate_python(table)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        first = errors[0]
        where = (
            f"input '{first['loc'][1]}' element {first['loc'][0]}"
            if len(first["loc"]) > 1
            else f"row {first['loc'][0]}"
        )
        raise ApiError(
            400,
            f"{where}: {first['msg']}"
            + (f" (and {len(errors) - 1} more invalid values)" if len(errors) > 1 else ""),
            code="invalid_input",
            detail=[
                {"type": e["type"], "loc": ["inputs", *e["loc"][1:], e["loc"][0]], "msg": e["msg"]}
                for e in errors[:20]
            ],
        ) from None


def _rows(tensors: Sequence[Tensor]) -> int:
    """N, which every tensor's shape `[N]` (or `[N, 1]`) and data must agree on."""
    rows: int | None = None
    for tensor in tensors:
        shape = tensor.shape
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise invalid(
                f"input '{tensor.name}': shape {shape} is not [N] or [N, 1] (one column)",
                tensor.name,
            )
        if len(tensor.data) != shape[0]:
            raise invalid(
                f"input '{tensor.name}': {len(tensor.data)} elements, but shape {shape} holds "
                f"{shape[0]}",
                tensor.name,
            )
        if rows is None:
            rows = shape[0]
        elif shape[0] != rows:
            raise invalid(
                f"input '{tensor.name}': {shape[0]} rows, but '{tensors[0].name}' has {rows}",
                tensor.name,
            )
    if not rows:
        raise invalid("inputs: no rows (N is 0)", "inputs")
    return rows


def _selected(model: InferenceModel, request: InferRequest) -> list[TensorSpec]:
    if not request.outputs:
        return list(model.outputs)
    known = {spec.name: spec for spec in model.outputs}
    chosen = []
    for wanted in request.outputs:
        if wanted.name not in known:
            raise invalid(
                f"output '{wanted.name}' is not an output of model '{model.name}'; its "
                f"outputs: {', '.join(known)}",
                wanted.name,
            )
        chosen.append(known[wanted.name])
    return chosen


class DataPlane:
    """The protocol's operations over the catalog's models."""

    def __init__(self, families: Sequence[Family]) -> None:
        self.models = inference_models(families)

    def model(self, name: str) -> InferenceModel:
        found = self.models.get(name)
        if found is None:
            raise ApiError(
                404,
                f"unknown model '{name}'; served: {', '.join(self.models)}",
                code="unknown_model",
            )
        return found

    async def loaded(self, serving: Serving, model: InferenceModel) -> list[str]:
        """The versions of `model` loaded now: champion, challenger, standby (503 when its
        model service does not answer)."""
        roles = (await serving.versions(model.family)).get(model.model, {})
        versions = [roles.get(r) for r in ("champion", "challenger", "standby")]
        return list(dict.fromkeys(v for v in versions if v))

    async def ready(self, serving: Serving) -> Mapping[str, str]:
        """Families whose models are not ready, with the reason (empty: the server is)."""
        not_ready = {}
        for family in {m.family.name: m.family for m in self.models.values()}.values():
            try:
                await serving.versions(family)
            except ApiError as exc:
                not_ready[family.name] = str(exc.extra.get("reason", exc.message))
        return not_ready

    async def model_ready(self, serving: Serving, name: str, version: str | None) -> None:
        """Nothing when `name` (at `version`) can infer; 404 for an unknown model or a version
        not loaded, 503 when its model service is down."""
        model = self.model(name)
        loaded = await self.loaded(serving, model)
        if version is not None and version not in loaded:
            raise _not_loaded(model, version, loaded)
        if not loaded:
            raise ApiError(503, f"model '{name}' has no version loaded", code="not_ready")

    async def metadata(self, serving: Serving, name: str, version: str | None) -> dict[str, Any]:
        model = self.model(name)
        loaded = await self.loaded(serving, model)
        if version is not None and version not in loaded:
            raise _not_loaded(model, version, loaded)
        return model.metadata([version] if version else loaded)

    async def infer(
        self,
        serving: Serving,
        name: str,
        version: str | None,
        request: InferRequest,
        protocol: str,
        validated: list[BaseModel] | None = None,
    ) -> InferResponse:
        """The answer to `request`; `validated` holds its records when the caller has read
        them already (the gRPC server, from a layout it has seen)."""
        model = self.model(name)
        if validated is None:
            validated = records(model, request)
        selected = _selected(model, request)
        answered = await serving.infer(model, validated, version=version, protocol=protocol)
        if answered is None:
            assert version is not None
            raise _not_loaded(model, version, await self.loaded(serving, model))
        columns, served, request_id = answered
        return InferResponse(
            model_name=name,
            model_version=served,
            id=request.id or request_id,
            outputs=output_tensors(selected, columns, len(validated)),
            request_id=request_id,
            parameters={"content_type": PANDAS}
            if request.parameters.get("content_type") == PANDAS
            else {},
        )

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": package_version(), "extensions": list(EXTENSIONS)}


def _not_loaded(model: InferenceModel, version: str, loaded: Sequence[str]) -> ApiError:
    return ApiError(
        404,
        f"model '{model.name}' version '{version}' is not loaded; loaded versions: "
        f"{', '.join(loaded) or 'none'}",
        code="unknown_version",
    )
