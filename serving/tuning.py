"""Small, tested workarounds for BentoML 1.4 costs on the request path.

Each one is measured in `bench/README.md` and checked by `tests/unit/serving/test_tuning.py`,
so an upgrade that fixes (or breaks) the behaviour shows up as a failing test, not as a silent
slowdown.
"""

from __future__ import annotations

import asyncio
from typing import Any


def release_request_timers() -> None:
    """Stop BentoML's per-request timeout timer once the request no longer needs it.

    BentoML 1.4.39's `TimeoutMiddleware` schedules a timer for every request (`traffic.timeout`
    seconds ahead) and never cancels it, so each request's timer, future and closure stay
    alive for the whole timeout: at 1,100 requests/s and the entry's 300 s timeout, the API
    worker grew by 0.8 MB/s, +138 MB over a 5-minute soak (bench/README.md), and would level
    off only at about 250 MB. This replaces its `__call__` with the same behaviour (a 504 if no
    response has started within the timeout) built on `asyncio.wait`, which cancels its timer
    as soon as the response starts or the handler finishes. It also answers at once when the
    handler fails before responding, instead of waiting out the timeout.
    """
    from bentoml._internal.server.http.traffic import TimeoutMiddleware
    from starlette.responses import JSONResponse

    async def bounded(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        responding: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def send_and_mark(message: Any) -> None:
            if not responding.done():
                responding.set_result(None)
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, receive, send_and_mark))
        done, _ = await asyncio.wait(
            {responding, handler}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if not done and handler.cancel():
            answer = {"error": f"Not able to process the request in {self.timeout:g} seconds"}
            await JSONResponse(answer, status_code=504)(scope, receive, send)
            return
        await handler

    TimeoutMiddleware.__call__ = bounded  # type: ignore[method-assign]


def quiet_readiness_probe() -> None:
    """Answer `/readyz` 503 while a model service is still loading, without a traceback.

    BentoML 1.4.39's probe asks each dependency whether it is ready; a model worker that is
    still loading its models accepts the connection but does not answer, and the probe's
    timeout escapes as an unhandled exception: an ERROR traceback in the log for every poll
    during a normal start. Here any failure of the probe is what it means, "not ready yet".
    """
    from _bentoml_impl.server.app import ServiceAppFactory
    from starlette.exceptions import HTTPException
    from starlette.responses import PlainTextResponse

    probe = getattr(ServiceAppFactory.readyz, "probe", ServiceAppFactory.readyz)

    async def readyz(self: Any, request: Any) -> Any:
        try:
            return await probe(self, request)
        except HTTPException:
            raise
        except Exception as exc:  # a dependency that does not answer (yet)
            reason = type(exc).__name__
            return PlainTextResponse(f"model services not ready ({reason})\n", status_code=503)

    readyz.probe = probe  # type: ignore[attr-defined]
    ServiceAppFactory.readyz = readyz


def fix_output_media_types(*services: Any) -> None:
    """Decide each API's response media type once, at import, instead of on every response.

    BentoML 1.4.39's `IOMixin.mime_type` rebuilds the output type's full JSON schema with pydantic
    for every response, only to learn it is "application/json": about a quarter of a worker's
    CPU at 64 concurrent clients (py-spy, entry and model worker alike). A descriptor with
    `media_type` set returns it directly, so setting it to what `mime_type()` computes now changes
    nothing but the cost.
    """
    for service in services:
        for api in service.apis.values():
            spec = api.output_spec
            if spec.media_type is None:
                spec.media_type = spec.mime_type()


def untraced() -> dict[str, Any]:
    """Service config that keeps OpenTelemetry's ASGI middleware from building a span per request.

    BentoML always installs the middleware; with no exporter configured the spans go nowhere but
    still cost about a tenth of a worker's CPU. Excluding every URL makes the middleware pass
    requests straight through.
    """
    return {"excluded_urls": [".*"]}


def tracing(enabled: bool) -> dict[str, Any]:
    """A service's `tracing` config: BentoML's spans when `enabled`, else `untraced()`."""
    return {} if enabled else untraced()


def tune_garbage_collector() -> None:
    """Keep the garbage collector's pauses off the request path (the 99th percentile).

    A worker's start-up (MLflow, scikit-learn, the model) leaves a few hundred thousand
    long-lived objects, and every full collection walked all of them: pauses of tens of
    milliseconds landing on whichever requests were in flight. `gc.freeze()` moves them out of
    the collector's reach (they live as long as the worker anyway). Requests allocate many
    short-lived objects, which reference counting frees; a young-generation threshold of 50,000
    instead of 700 makes the cycle collector run about seventy times less often. Measured at 64
    clients: p99 272 ms -> 133 ms with the freeze, -> about 70 ms with the threshold too
    (bench/README.md). Called once, at the end of each service's __init__.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, 20, 20)


#: Allocations (minus deallocations) between young-generation collections; CPython's default
#: is 700.
YOUNG_GENERATION_THRESHOLD = 50_000
