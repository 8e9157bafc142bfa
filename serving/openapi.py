"""The OpenAPI document (`/docs.json`) as the service really answers.

BentoML 1.4.39's generated document disagrees with the service in ways a client generator or
a fuzzer trips over (schemathesis found each of them, `tests/integration/test_fuzz.py`):

- request bodies are not marked required, though every API refuses a missing body (400);
- its error schema says `detail` is a string, but validation errors send a list of problems;
- the statuses the front door and the entry service add (401, 403, 413, 415, 429, 503) are
  missing, and file routes claim `application/octet-stream` although they answer CSV, Parquet
  or Arrow in the upload's own format.

`install()` post-processes the document where BentoML serves it; the service is unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from serving.access import ADMIN_ROUTES, PREDICTION_PREFIXES

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
    413: "Too large: over the items per request, rows per file, or body size limit",
}
_ERRORS_GUARDED = {
    401: "Missing or invalid API key (only when keys are configured)",
    429: "This key is over its rate; retry after the `Retry-After` header's seconds",
}
_ERRORS_PREDICTION = {
    503: "A model service is down, restarting or did not answer in time; `model` and "
    "`reason` say which and why",
}
_ERRORS_FILE = {415: "The upload is not UTF-8 CSV, Parquet or Arrow IPC"}
_ERRORS_ADMIN = {403: "The key is not an admin key"}
_TABLE_TYPES = ("text/csv", "application/vnd.apache.parquet", "application/vnd.apache.arrow.file")


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def document(spec: dict[str, Any]) -> dict[str, Any]:
    """The fixes in the module docstring, applied to a generated document (in place)."""
    for schema in spec.get("components", {}).get("schemas", {}).values():
        properties = schema.get("properties", {})
        if set(properties) == {"error", "detail"}:  # BentoML's own error components
            properties["detail"] = _DETAIL
    for path, item in spec.get("paths", {}).items():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            if "requestBody" in operation:
                operation["requestBody"]["required"] = True
            added: dict[int, str] = {}
            if path.startswith(PREDICTION_PREFIXES):
                added |= _ERRORS_EVERYWHERE | _ERRORS_GUARDED | _ERRORS_PREDICTION
                if path.endswith("_file"):
                    added |= _ERRORS_FILE
                    binary = {"schema": {"type": "string", "format": "binary"}}
                    responses["200"]["content"] = {kind: binary for kind in _TABLE_TYPES}
            elif path == ADMIN_ROUTES[0] or path.startswith(ADMIN_ROUTES[1]):
                added |= _ERRORS_GUARDED | _ERRORS_ADMIN
            for status, description in added.items():
                responses[str(status)] = _error(description)
    return spec


def install() -> None:
    """Serve `document(...)` of BentoML's generated document at `/docs.json`."""
    from _bentoml_impl.server.app import ServiceAppFactory
    from starlette.responses import JSONResponse

    generate = ServiceAppFactory.openapi_spec_view
    if getattr(generate, "documented", False):
        return

    async def documented_view(self: Any, request: Any) -> Any:
        response = await generate(self, request)
        if response.status_code != 200:
            return response
        return JSONResponse(document(json.loads(bytes(response.body))))

    documented_view.documented = True  # type: ignore[attr-defined]
    ServiceAppFactory.openapi_spec_view = documented_view
