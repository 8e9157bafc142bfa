"""The Open Inference Protocol over REST, with the binary tensor data extension.

Routes (on the entry service's app, behind the same front door as the JSON API):
`GET /v2/health/live`, `/v2/health/ready`, `/v2`, `/v2/models/{name}[/versions/{v}]`,
`.../ready`, and `POST .../infer`. This module does only HTTP: the work is the data plane's
(`serving/oip/dataplane.py`).

A body is JSON, or, when `Inference-Header-Content-Length` is sent, that many bytes of JSON
followed by the inputs' binary data in order (each input says its `binary_data_size`);
`Content-Type` is not relied on (tritonclient sends none). Outputs come back binary when the
request asks (`binary_data` per output, or `binary_data_output`), with the same header.
Errors are `{"error": "..."}`: 400 for bad input, 404 for an unknown model or version, 503
when not ready.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic_core import from_json, to_json
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from serving.errors import ApiError
from serving.oip.dataplane import DataPlane, InferRequest, InferResponse, RequestedOutput
from serving.oip.layouts import Layouts
from serving.oip.tensors import (
    DATATYPES,
    Tensor,
    check_datatype,
    element_count,
    flatten,
    from_binary,
    invalid,
    to_binary,
)
from serving.routes import loads

HEADER_LENGTH = "inference-header-content-length"
#: Where each input's values lie in a binary body's binary part.
Spans = tuple[tuple[int, int], ...]
PROTOCOL = "oip-rest"
Endpoint = Callable[[Request], Awaitable[Response]]


def _dict(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"{where} must be a JSON object", where)
    return value


def _header(body: bytes) -> Any:
    """The JSON header, as strictly as `serving.routes.loads` reads it, at a third of its cost.

    pydantic's reader goes first. It refuses what the strict reader refuses but one thing: it
    keeps the last of a key sent twice. Every key has a colon after it, so when the body holds
    no more colons than the keys of the objects read here, no object held a key twice (and no
    string a colon). Anything else (a duplicate, a colon in a string, objects nested deeper)
    is read again by the strict reader, which also words every refusal.
    """
    try:
        document = from_json(body, allow_inf_nan=False)
    except ValueError:
        return loads(body)
    if type(document) is not dict or body.count(b":") != _keys(document):
        return loads(body)
    return document


def _keys(document: dict[str, Any]) -> int:
    """The keys of the request, its tensors and their parameters."""
    keys = len(document)
    for part in ("parameters", "inputs", "outputs"):
        value = document.get(part)
        if type(value) is dict:
            keys += len(value)
        elif type(value) is list:
            for spec in value:
                if type(spec) is dict:
                    keys += len(spec)
                    if type(parameters := spec.get("parameters")) is dict:
                        keys += len(parameters)
    return keys


def header_size(body: bytes, header_length: str | None) -> int | None:
    """Where the JSON header ends (`Inference-Header-Content-Length`); None for a JSON body."""
    if header_length is None:
        return None
    size = header_length.strip()
    if not (size.isascii() and size.isdigit() and int(size) <= len(body)):
        raise invalid(
            f"Inference-Header-Content-Length {header_length!r} is not a byte count "
            f"within the {len(body)}-byte body",
            "Inference-Header-Content-Length",
        )
    return int(size)


def parse(body: bytes, header_length: str | None) -> tuple[InferRequest, Spans | None]:
    """An inference request from its body: JSON, or a JSON header and binary tensors. With it,
    where each input's values lie in the binary part when they all are there (None when any
    is in the header's `data`)."""
    size = header_size(body, header_length)
    if size is None:
        return _parse(body, b"")
    return _parse(body[:size], body[size:])


def _parse(header: bytes, binary: bytes) -> tuple[InferRequest, Spans | None]:
    """`parse`, once the body is split into its JSON header and its binary part."""
    document = _dict(_header(header), "request body")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list):
        raise invalid("inputs: a list of tensors is required", "inputs")
    offset = 0
    inputs = []
    spans: list[tuple[int, int]] | None = []
    # One pass, each key read once: this loop runs once per feature column of every request.
    for position, spec in enumerate(raw_inputs):
        if type(spec) is not dict:
            spec = _dict(spec, f"inputs[{position}]")
        name = spec.get("name")
        if type(name) is not str or not name:
            raise invalid(f"inputs[{position}]: 'name' must be a non-empty string", "inputs")
        datatype = spec.get("datatype")
        if datatype not in DATATYPES:
            check_datatype(name, datatype)
        shape = spec.get("shape")
        if type(shape) is not list:
            raise invalid(f"input '{name}': 'shape' must be a list of dimensions", name)
        count = element_count(name, shape)
        parameters = spec.get("parameters")
        if type(parameters) is not dict:
            parameters = _dict(parameters, f"input '{name}' parameters")
        size = parameters.get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0:
                raise invalid(f"input '{name}': binary_data_size must be a byte count", name)
            end = offset + size
            if end > len(binary):
                raise invalid(
                    f"input '{name}': binary_data_size {size} runs past the binary data "
                    f"({len(binary) - offset} bytes left)",
                    name,
                )
            data = from_binary(name, datatype, count, binary[offset:end])
            if spans is not None:
                spans.append((offset, end))
            offset = end
        elif "data" in spec:
            spans = None
            data = flatten(name, spec["data"])
            if len(data) != count:
                raise invalid(
                    f"input '{name}': {len(data)} elements, but shape {shape} holds {count}", name
                )
        else:
            raise invalid(f"input '{name}': no 'data' and no binary_data_size", name)
        inputs.append(Tensor(name, datatype, shape, data, parameters))
    if offset != len(binary):
        raise invalid(
            f"{len(binary) - offset} bytes of binary data belong to no input "
            "(binary_data_size of each input)",
            "inputs",
        )
    outputs = []
    for position, raw in enumerate(document.get("outputs") or []):
        spec = _dict(raw, f"outputs[{position}]")
        if not isinstance(spec.get("name"), str):
            raise invalid(f"outputs[{position}]: 'name' must be a string", "outputs")
        outputs.append(
            RequestedOutput(spec["name"], _dict(spec.get("parameters"), "output parameters"))
        )
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise invalid("id must be a string", "id")
    request = InferRequest(
        inputs, request_id, _dict(document.get("parameters"), "parameters"), outputs
    )
    return request, None if spans is None else tuple(spans)


def read(
    layouts: Layouts, plane: DataPlane, name: str, body: bytes, header_length: str | None
) -> tuple[InferRequest, list[BaseModel] | None]:
    """The request to model `name` and, where its layout is known or kept, its validated
    records. The key is the model and the JSON header of a binary request, which holds no
    values (`serving/oip/layouts.py`); a header with values in it is read in full."""
    size = header_size(body, header_length)
    if size is None:
        return _parse(body, b"")[0], None
    header, binary = body[:size], body[size:]
    key = (name, header)
    layout = layouts.get(key)
    if layout is not None and len(binary) == layout.binary_size:
        return layout.request, layout.records(layout.split(binary))
    request, spans = _parse(header, binary)
    if spans is None:
        return request, None
    return request, layouts.learn(key, size, plane.model(name), request, spans)


def answer(response: InferResponse, request: InferRequest) -> Response:
    """The response document; outputs asked for as binary follow the JSON header."""
    binary_by_default = request.parameters.get("binary_data_output") is True
    wanted = {o.name: o.parameters.get("binary_data") for o in request.outputs}
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for tensor in response.outputs:
        binary = wanted.get(tensor.name)
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": tensor.shape,
        }
        if binary if binary is not None else binary_by_default:
            raw = to_binary(tensor.datatype, tensor.data)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = tensor.data
        outputs.append(entry)
    document: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
        "outputs": outputs,
    }
    if response.parameters:
        document["parameters"] = response.parameters
    header = to_json(document, inf_nan_mode="null")
    headers = {"X-Request-ID": response.request_id}
    if not chunks:
        return Response(header, media_type="application/json", headers=headers)
    headers["Inference-Header-Content-Length"] = str(len(header))
    return Response(
        b"".join([header, *chunks]), media_type="application/octet-stream", headers=headers
    )


def install(app: FastAPI, plane: DataPlane, service: Callable[[], Any]) -> None:
    """The protocol's routes on `app`; `service()` is the entry service instance."""

    def get(path: str, endpoint: Endpoint) -> None:
        app.add_api_route(path, endpoint, methods=["GET"], include_in_schema=False)

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        not_ready = await plane.ready(service())
        if not_ready:
            reasons = "; ".join(f"{name}: {why}" for name, why in not_ready.items())
            raise ApiError(503, f"not ready: {reasons}", code="not_ready")
        return JSONResponse({"ready": True})

    async def server(request: Request) -> Response:
        return JSONResponse(plane.server_metadata())

    async def metadata(request: Request) -> Response:
        name, version = _target(request)
        return JSONResponse(await plane.metadata(service(), name, version))

    async def model_ready(request: Request) -> Response:
        name, version = _target(request)
        await plane.model_ready(service(), name, version)
        return JSONResponse({"name": name, "ready": True})

    layouts = Layouts()

    async def infer(request: Request) -> Response:
        name, version = _target(request)
        body = await request.body()
        parsed, validated = read(layouts, plane, name, body, request.headers.get(HEADER_LENGTH))
        response = await plane.infer(service(), name, version, parsed, PROTOCOL, validated)
        return answer(response, parsed)

    get("/v2/health/live", live)
    get("/v2/health/ready", ready)
    get("/v2", server)
    for model in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        get(model, metadata)
        get(f"{model}/ready", model_ready)
        app.add_api_route(f"{model}/infer", infer, methods=["POST"], include_in_schema=False)


def _target(request: Request) -> tuple[str, str | None]:
    params = request.path_params
    return str(params["name"]), params.get("version")


#: A tensor in a request or a response; `data` holds the row-major elements, flat or nested
#: as the shape, and is absent when they travel binary.
_TENSOR: dict[str, Any] = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": sorted(DATATYPES)},
        "parameters": {"type": "object"},
        "data": {"type": "array", "items": {}},
    },
}


def openapi(plane: DataPlane) -> dict[str, Any]:
    """The protocol's routes for `/docs.json` (`serving/openapi.py`): the KServe V2 REST
    schemas, with `name` one of the models the catalog serves. Binary bodies (the extension)
    are described, not schema'd: a JSON schema cannot say where the binary part starts."""
    error = {"$ref": "#/components/schemas/OipError"}

    def answers(ok: dict[str, Any], *statuses: int) -> dict[str, Any]:
        why = {
            400: "Bad input: the tensor and the problem",
            404: "No such model, or that version is not loaded",
            413: "Too large: over the rows per request or the body size limit",
            503: "Not ready: a model service is down or did not answer in time",
        }
        out: dict[str, Any] = {"200": ok}
        for status in statuses:
            out[str(status)] = {
                "description": why[status],
                "content": {"application/json": {"schema": error}},
            }
        return out

    def ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    name = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": list(plane.models)},
    }
    version = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
    ready = {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}}
    paths: dict[str, Any] = {
        "/v2/health/live": {
            "get": {
                "summary": "Open Inference Protocol: the server is live",
                "tags": ["Open Inference Protocol"],
                "responses": answers(ok("Live", {"type": "object", "required": ["live"]})),
            }
        },
        "/v2/health/ready": {
            "get": {
                "summary": "Open Inference Protocol: every family's model service answers",
                "tags": ["Open Inference Protocol"],
                "responses": answers(ok("Ready", ready), 503),
            }
        },
        "/v2": {
            "get": {
                "summary": "Open Inference Protocol: the server's name, version and extensions",
                "tags": ["Open Inference Protocol"],
                "responses": answers(
                    ok("Server metadata", {"$ref": "#/components/schemas/OipServerMetadata"})
                ),
            }
        },
    }
    for prefix, parameters in (
        ("/v2/models/{name}", [name]),
        ("/v2/models/{name}/versions/{version}", [name, version]),
    ):
        pinned = " (that version, while it is loaded)" if len(parameters) == 2 else ""
        paths[prefix] = {
            "get": {
                "summary": f"Open Inference Protocol: a model's inputs and outputs{pinned}",
                "tags": ["Open Inference Protocol"],
                "parameters": parameters,
                "responses": answers(
                    ok("Model metadata", {"$ref": "#/components/schemas/OipModelMetadata"}),
                    404,
                ),
            }
        }
        paths[f"{prefix}/ready"] = {
            "get": {
                "summary": f"Open Inference Protocol: a model is ready{pinned}",
                "tags": ["Open Inference Protocol"],
                "parameters": parameters,
                "responses": answers(ok("Ready", ready), 404, 503),
            }
        }
        paths[f"{prefix}/infer"] = {
            "post": {
                "summary": f"Open Inference Protocol: infer, one tensor per column{pinned}",
                "description": "Also takes the binary tensor data extension: send "
                "`Inference-Header-Content-Length` with the JSON header's size, the binary "
                "data after it. Outputs asked for as binary come back the same way "
                "(`application/octet-stream`).",
                "tags": ["Open Inference Protocol"],
                "parameters": parameters,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/OipInferenceRequest"}
                        }
                    },
                },
                "responses": answers(
                    {
                        "description": "The outputs, each a tensor of N rows",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/OipInferenceResponse"}
                            },
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            },
                        },
                    },
                    400,
                    404,
                    413,
                    503,
                ),
            }
        }
    metadata_tensor = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
    }
    schemas = {
        "OipError": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
        "OipServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "OipModelMetadata": {
            "type": "object",
            "required": ["name", "versions", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": metadata_tensor},
                "outputs": {"type": "array", "items": metadata_tensor},
            },
        },
        "OipInferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "inputs": {"type": "array", "items": _TENSOR},
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string"},
                            "parameters": {"type": "object"},
                        },
                    },
                },
            },
        },
        "OipInferenceResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "outputs": {"type": "array", "items": _TENSOR},
            },
        },
    }
    return {"paths": paths, "schemas": schemas}
