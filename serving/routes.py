"""The public prediction routes: HTTP in and out; the work is the service's.

A JSON route reads its body strictly (UTF-8 JSON with no NaN or Infinity and no key twice in one
object), refuses more records than allowed before validating any, validates them with the
contract, and hands them to the service's handler. A file route takes the multipart file part,
reads the table within its limits and validates its columns in the upload pool
(`serving/uploads.py`), hands the validated columns to the handler, and writes the answer
back in the upload's format, in the pool too. Every refusal is an `ApiError`, answered in one
place (`serving/errors.py`).

The routes live on the FastAPI app the entry service mounts (`bentoml.asgi_app`), so the body
is ours to read: BentoML's own request parsing would fetch a URL sent in place of a file, and
answers its own errors in its own shapes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from models import tabular
from serving.errors import ApiError, problem, validation_detail
from serving.settings import get_serving_settings, get_settings
from serving.tables import MEDIA_TYPES, TableFormat, TableLimits, read_table, write_table
from serving.uploads import FILE_FIELD, file_part, offload, pool

#: JSON bodies larger than this are parsed and validated in the upload pool, off the loop.
INLINE_JSON_BYTES = 256 * 1024
_REF = "#/components/schemas/{model}"
_TABLE_TYPES = tuple(MEDIA_TYPES.values())

Kind = Literal["json", "file"]


@dataclass(frozen=True)
class Upload:
    """An uploaded table: the file as read (every column, in order), its format, and the
    contract's validated values by field (`tabular.validate_columns`)."""

    frame: pd.DataFrame
    format: TableFormat
    columns: tabular.Columns


@dataclass(frozen=True)
class Scored:
    """What a file handler answers: the columns to append, in order, and the request id."""

    columns: Mapping[str, Any]
    request_id: str


class _Duplicate(ValueError):
    pass


class _NotANumber(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return obj


def _no_constant(token: str) -> Any:
    raise _NotANumber(token)


def loads(body: bytes) -> Any:
    """JSON as RFC 8259 defines it, strictly: UTF-8, no NaN or Infinity (Python's `json` and
    pydantic accept both, and NaN would read as a missing value), no key twice in one object
    (where the last would silently win)."""
    try:
        return json.loads(
            body.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant
        )
    except _Duplicate as exc:
        key = str(exc)
        raise ApiError(
            400,
            f"request body: the key {key!r} appears twice in one JSON object",
            code="duplicate_key",
            detail=[problem(key, "appears more than once in the same object")],
        ) from None
    except _NotANumber as exc:
        raise ApiError(
            400,
            f"request body: {exc} is not a JSON number; leave the field out or send null",
            code="invalid_json",
            detail=[problem("body", f"{exc} is not JSON")],
        ) from None
    except UnicodeDecodeError as exc:
        raise ApiError(
            400,
            f"request body: not UTF-8 (undecodable byte at offset {exc.start})",
            code="invalid_json",
            detail=[problem("body", "not UTF-8")],
        ) from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            f"request body: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            code="invalid_json",
            detail=[problem("body", exc.msg, line=exc.lineno, column=exc.colno)],
        ) from None
    except (RecursionError, ValueError) as exc:  # nesting too deep, an integer too long
        raise ApiError(
            400,
            f"request body: not usable JSON ({type(exc).__name__})",
            code="invalid_json",
            detail=[problem("body", "nested too deeply or a number too long")],
        ) from None


@dataclass(frozen=True)
class JsonBody:
    """`{"<field>": [record, ...]}` with 1 to `max_items` records of `record`."""

    name: str
    field: str
    record: type[BaseModel]

    def model(self) -> type[BaseModel]:
        items = Annotated[list[self.record], Field(min_length=1)]  # type: ignore[name-defined]
        fields: dict[str, Any] = {self.field: (items, ...)}
        return create_model(self.name, __config__=ConfigDict(extra="forbid"), **fields)

    def parse(self, body: bytes, model: type[BaseModel], max_items: int) -> list[Any]:
        data = loads(body)
        if not isinstance(data, dict):
            raise ApiError(
                400,
                f'request body: a JSON object {{"{self.field}": [...]}} is expected',
                code="invalid_input",
                detail=[{"type": "model_type", "loc": [], "msg": "Input should be an object"}],
            )
        items = data.get(self.field)
        if isinstance(items, list) and len(items) > max_items:  # refused before validating
            raise ApiError(
                413,
                f"{self.field}: {len(items)} items is over the limit of {max_items} per "
                "request; upload a file instead",
                code="too_many_items",
                detail=[problem(self.field, f"at most {max_items} items")],
            )
        try:
            validated = model.model_validate(data)
        except ValidationError as exc:
            count = exc.error_count()
            raise ApiError(
                400,
                f"{count} invalid value{'s' if count > 1 else ''} in the request body",
                code="invalid_input",
                detail=validation_detail(
                    exc.errors(include_url=False, include_input=False, include_context=False)
                ),
            ) from None
        records: list[Any] = getattr(validated, self.field)
        return records


JsonHandler = Callable[[Any, list[Any]], Awaitable[tuple[list[Any], str]]]
FileHandler = Callable[[Any, Upload], Awaitable[Scored]]


def _components(schema: dict[str, Any], into: dict[str, Any]) -> dict[str, Any]:
    """Move a pydantic schema's `$defs` into the OpenAPI components; the schema without them."""
    into.update(schema.pop("$defs", {}))
    return schema


class RouteTable:
    """The prediction routes on `app`, and what the front door and the API document need to
    know about them (their kind, body limit and schemas)."""

    def __init__(self, app: FastAPI, service: Callable[[], Any] | None = None) -> None:
        self.app = app
        self.service: Callable[[], Any] = service or _current_service
        self.kinds: dict[str, Kind] = {}
        #: Path prefixes whose bodies are held to the JSON limit (the inference protocols').
        self.json_prefixes: tuple[str, ...] = ()
        #: OpenAPI component schemas of the routes' bodies and answers.
        self.components: dict[str, Any] = {}

    def body_limit(self, path: str) -> int:
        """The largest body `path` accepts: JSON routes far less than file uploads."""
        settings = get_settings()
        if self.kinds.get(path) == "json" or path.startswith(self.json_prefixes):
            return settings.max_json_body_bytes
        return settings.max_body_bytes

    def predict(
        self,
        path: str,
        *,
        operation: str,
        field: str,
        record: type[BaseModel],
        answer: type[BaseModel],
        handler: JsonHandler,
        summary: str,
    ) -> None:
        """`POST path` with `{"<field>": [record, ...]}`: the handler's answers, in order."""
        spec = JsonBody(f"{_title(operation)}Request", field, record)
        model = spec.model()
        answers = TypeAdapter(list[answer])  # type: ignore[valid-type]

        async def endpoint(request: Request) -> Response:
            body = await request.body()
            limit = get_serving_settings().max_rows_per_request
            if len(body) > INLINE_JSON_BYTES:
                records = await offload(spec.parse, body, model, limit)
            else:
                records = spec.parse(body, model, limit)
            outputs, request_id = await handler(self.service(), records)
            return Response(
                answers.dump_json(outputs),
                media_type="application/json",
                headers={"X-Request-ID": request_id},
            )

        request_schema = _components(model.model_json_schema(ref_template=_REF), self.components)
        self.components[spec.name] = request_schema
        answer_schema = _components(
            answers.json_schema(mode="serialization", ref_template=_REF), self.components
        )
        self._add(
            path,
            "json",
            endpoint,
            operation,
            summary,
            {"application/json": {"schema": {"$ref": _REF.format(model=spec.name)}}},
            {"application/json": {"schema": answer_schema}},
        )

    def upload(
        self,
        path: str,
        *,
        operation: str,
        record: type[BaseModel],
        aliases: dict[str, str],
        handler: FileHandler,
        answer_name: str,
        summary: str,
    ) -> None:
        """`POST path` with a multipart `file` (CSV, Parquet or Arrow IPC): the same table
        back, in its format, with the handler's columns added."""

        def read(body: bytes, content_type: str | None) -> Upload:
            frame, fmt = read_table(file_part(body, content_type), _limits())
            try:
                columns = tabular.validate_columns(
                    frame, record, aliases, get_serving_settings().max_rows_per_file
                )
            except tabular.TableError as exc:
                raise ApiError(
                    413 if exc.too_large else 400,
                    exc.message,
                    code="file_too_large" if exc.too_large else "invalid_rows",
                    detail=exc.problems,
                ) from None
            return Upload(frame, fmt, columns)

        async def endpoint(request: Request) -> Response:
            async with pool().admitted():
                body = await request.body()
                upload = await offload(read, body, request.headers.get("content-type"))
                scored = await handler(self.service(), upload)
                content = await offload(_answer_table, upload, scored)
            return Response(
                content,
                media_type=MEDIA_TYPES[upload.format],
                headers={
                    "X-Request-ID": scored.request_id,
                    "Content-Disposition": f'attachment; filename="{answer_name}.{upload.format}"',
                },
            )

        multipart = {
            "schema": {
                "type": "object",
                "required": [FILE_FIELD],
                "properties": {
                    FILE_FIELD: {
                        "type": "string",
                        "format": "binary",
                        "description": "A CSV (UTF-8), Parquet or Arrow IPC file",
                    }
                },
                "additionalProperties": False,
            }
        }
        binary = {"schema": {"type": "string", "format": "binary"}}
        self._add(
            path,
            "file",
            endpoint,
            operation,
            summary,
            {"multipart/form-data": multipart},
            dict.fromkeys(_TABLE_TYPES, binary),
        )

    def info(
        self,
        path: str,
        *,
        operation: str,
        handler: Callable[[Any], Awaitable[Any]],
        summary: str,
    ) -> None:
        """`GET path`: the handler's JSON document (an operator's view of the service)."""

        async def endpoint(request: Request) -> Response:
            return JSONResponse(await handler(self.service()))

        self.app.add_api_route(
            path, endpoint, methods=["GET"], operation_id=operation, summary=summary
        )

    def _add(
        self,
        path: str,
        kind: Kind,
        endpoint: Callable[[Request], Awaitable[Response]],
        operation: str,
        summary: str,
        request: dict[str, Any],
        answer: dict[str, Any],
    ) -> None:
        self.kinds[path] = kind
        self.app.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            operation_id=operation,
            summary=summary,
            response_class=Response,
            openapi_extra={"requestBody": {"required": True, "content": request}},
            responses={200: {"description": summary, "content": answer}},
        )


def _title(operation: str) -> str:
    return "".join(part.title() for part in operation.split("_"))


def _limits() -> TableLimits:
    settings = get_settings()
    return TableLimits(
        rows=get_serving_settings().max_rows_per_file,
        columns=settings.max_columns,
        data_bytes=settings.max_table_bytes,
    )


def _answer_table(upload: Upload, scored: Scored) -> bytes:
    """The upload's own columns, in order, plus the answer's columns, in the upload's format.
    The frame is this request's alone: the columns are added to it, not to a copy."""
    out = upload.frame
    for column, values in scored.columns.items():
        out[column] = values
    return write_table(out, upload.format)


def _current_service() -> Any:
    import bentoml

    return bentoml.get_current_service()
