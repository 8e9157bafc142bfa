"""One error type for whatever a request gets wrong, answered and logged in one place.

`ApiError` is raised anywhere on a request's path (the body, its validation, a limit, a model
service that does not answer) and turned into its JSON answer by the handler `install`
registers on the app; the front door (`serving/access.py`) sends the same bodies. Each refusal
is logged as one line: status, route, a short code and the names of the fields involved, never
the values sent (they are customer data) and never a traceback (a client's mistake is not a
server fault).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("clientinsight.requests")

#: At most this many problems are listed in one answer (and named in its log line).
MAX_LISTED_PROBLEMS = 20


@dataclass
class ApiError(Exception):
    """An answer other than 200: status, message, and what exactly was wrong."""

    status: int
    message: str
    #: A short, stable name for the kind of refusal (logged, and handy for clients).
    code: str = "invalid_input"
    #: One object per problem: the field (or `loc`, or row and field) and the problem.
    detail: list[dict[str, Any]] = field(default_factory=list)
    #: More top-level keys of the body (`model` and `reason` of a 503, `limit_bytes`, ...).
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message, **self.extra}
        if self.detail:
            body["detail"] = self.detail
        return body

    def encoded(self) -> bytes:
        return json.dumps(self.body()).encode()

    def fields(self) -> list[str]:
        """The names of the fields (and rows) the problems are about, never their values."""
        names = []
        for problem in self.detail[:MAX_LISTED_PROBLEMS]:
            if "loc" in problem:
                names.append(".".join(str(part) for part in problem["loc"]))
            elif "row" in problem:
                names.append(f"row {problem['row']} {problem.get('field', '')}".strip())
            elif "field" in problem:
                names.append(str(problem["field"]))
        return names

    def log_line(self, method: str, path: str) -> None:
        """The one line an operator reads: 4xx at INFO, 5xx at WARNING, values never."""
        named = self.fields()
        about = f" ({', '.join(named)})" if named else ""
        level = logging.WARNING if self.status >= 500 else logging.INFO
        log.log(level, "%d %s %s: %s%s", self.status, method, path, self.code, about)


def problem(field_name: str, text: str, **more: Any) -> dict[str, Any]:
    """One entry of `detail`."""
    return {"field": field_name, "problem": text, **more}


def validation_detail(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's errors as `detail` entries: where and what, without the input or context
    (`ValidationError.errors(include_input=False, include_context=False, include_url=False)`)."""
    return [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in errors]


def reason(exc: BaseException) -> str:
    """An exception as one reason text: of a 503, an unavailable entry in `/models`, a failed
    reload or shadow call (the one place it is worded)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def install(app: Any) -> None:
    """Answer `ApiError`s raised by the app's routes, and a client that went away mid-body."""
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import Response

    async def answer(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        exc.log_line(request.method, request.url.path)
        return Response(
            exc.encoded(), exc.status, headers=exc.headers, media_type="application/json"
        )

    async def gone(request: Request, exc: Exception) -> Response:
        # No one is left to read an answer. The front door cuts a body that passes the size
        # limit the same way, after answering 413 (and logging it) itself.
        if not request.scope.get(REFUSED_BY_FRONT_DOOR):
            log.info(
                "%s %s: the client disconnected before sending the whole body",
                request.method,
                request.url.path,
            )
        return Response(status_code=400)

    app.add_exception_handler(ApiError, answer)
    app.add_exception_handler(ClientDisconnect, gone)


#: Scope key the front door sets when it has already answered (413) and cut the body.
REFUSED_BY_FRONT_DOOR = "clientinsight.refused"
