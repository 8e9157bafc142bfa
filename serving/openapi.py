"""The OpenAPI document (`/docs.json`) as the service really answers.

BentoML 1.4.39 builds the document from its own APIs and the mounted FastAPI app's routes; on
its own it would say less than the service does, and some of it wrongly (schemathesis found
each of these, `tests/integration/test_fuzz.py`):

- the routes' request and answer schemas live in the route table (`serving/routes.py`), which
  declares them in the operations and holds their components;
- its error schema says `detail` is a string, but errors send a list of problems;
- the statuses the front door and the routes add (400, 401, 403, 413, 415, 429, 503) are
  missing;
- its `info` is BentoML's boilerplate ("BentoML Team", version "None"), and it declares no
  security schemes, so Swagger UI could not send a key.

`install(routes)` post-processes the document where BentoML serves it; the service is unchanged.
"""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

from serving.access import access
from serving.routes import RouteTable

_DETAIL: dict[str, Any] = {
    "description": "What was wrong: a message, or one object per problem (field or row, and "
    "the problem)",
    "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}],
}
ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "detail": _DETAIL},
}
_ERRORS_EVERYWHERE = {
    400: "Invalid input: the fields (or file rows) and their problems are in `detail`",
    413: "Too large: over the items per request, rows, columns or size per file, or the "
    "body size limit",
}
_ERRORS_GUARDED = {
    401: "Missing or invalid API key (only when keys are configured)",
    429: "This key is over its rate; retry after the `Retry-After` header's seconds",
}
_ERRORS_PREDICTION = {
    503: "A model service is down, restarting or did not answer in time (`model` and "
    "`reason` say which and why), or this API worker is busy with other uploads",
}
_ERRORS_FILE = {
    415: "The upload is not multipart/form-data, or the file not UTF-8 CSV, Parquet or Arrow IPC"
}
_ERRORS_ADMIN = {403: "The key is not an admin key"}
#: How a key is sent: either scheme works (`serving/access.py`).
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
_DESCRIPTION = (
    "Standardized model serving: every model family in the catalog, from the MLflow "
    "registry's @champion versions. Every route but the probes, /metrics and the API "
    "documents needs an API key when keys are configured; admin routes need an admin key."
)


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def package_version() -> str:
    try:
        return metadata.version("clientinsight")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def document(spec: dict[str, Any], routes: RouteTable, *more: dict[str, Any]) -> dict[str, Any]:
    """The fixes in the module docstring, applied to a generated document (in place), and
    `more` routes BentoML does not see (each `{"paths": ..., "schemas": ...}`: the Open
    Inference Protocol's, `serving/oip/rest.py`)."""
    for extra in more:
        spec.setdefault("paths", {}).update(extra["paths"])
        spec.setdefault("components", {}).setdefault("schemas", {}).update(extra["schemas"])
    spec["info"] = {
        "title": "ClientInsight",
        "version": package_version(),
        "description": _DESCRIPTION,
    }
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for schema in schemas.values():
        properties = schema.get("properties", {})
        if set(properties) == {"error", "detail"}:  # BentoML's own error components
            properties["detail"] = _DETAIL
    schemas.update(routes.components)
    components["securitySchemes"] = SECURITY_SCHEMES
    for path, item in spec.get("paths", {}).items():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            if "requestBody" in operation:
                operation["requestBody"]["required"] = True
            added: dict[int, str] = {}
            guarded = access(path)
            if path in routes.kinds:
                added |= _ERRORS_EVERYWHERE | _ERRORS_PREDICTION
                if routes.kinds[path] == "file":
                    added |= _ERRORS_FILE
            if guarded != "open":
                added |= _ERRORS_GUARDED
                operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
            if guarded == "admin":
                added |= _ERRORS_ADMIN
            for status, description in added.items():
                responses[str(status)] = _error(description)
    return spec


def install(routes: RouteTable, *more: dict[str, Any]) -> None:
    """Serve `document(...)` of BentoML's generated document at `/docs.json`."""
    from _bentoml_impl.server.app import ServiceAppFactory
    from starlette.responses import JSONResponse

    generate = getattr(ServiceAppFactory.openapi_spec_view, "generated", None)
    generate = generate or ServiceAppFactory.openapi_spec_view

    async def documented_view(self: Any, request: Any) -> Any:
        response = await generate(self, request)
        if response.status_code != 200:
            return response
        return JSONResponse(document(json.loads(bytes(response.body)), routes, *more))

    documented_view.generated = generate  # type: ignore[attr-defined]
    ServiceAppFactory.openapi_spec_view = documented_view
