"""The BentoML workarounds do what they claim, so a BentoML upgrade that changes them shows."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import bentoml
import pytest
from pydantic import BaseModel

from serving import tuning


class Out(BaseModel):
    value: float


@bentoml.service
class _Toy:
    @bentoml.api
    def listed(self, x: int) -> list[Out]:
        return [Out(value=x)]

    @bentoml.api
    def filed(self, x: int) -> Path:
        return Path("x")


Toy: Any = _Toy  # mypy sees the class, not the bentoml.Service wrapper with `.apis`


def test_output_media_types_are_fixed_once_to_what_bentoml_would_compute() -> None:
    computed = {name: api.output_spec.mime_type() for name, api in Toy.apis.items()}
    assert computed["listed"] == "application/json"
    tuning.fix_output_media_types(Toy)
    for name, api in Toy.apis.items():
        assert api.output_spec.media_type == computed[name]
    # The point: mime_type() no longer builds a JSON schema per response.
    calls = 0
    spec = Toy.apis["listed"].output_spec
    original = spec.model_json_schema

    def counting(*args: object, **kwargs: object) -> dict[str, object]:
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)

    spec.model_json_schema = counting
    try:
        assert spec.mime_type() == "application/json"
    finally:
        del spec.model_json_schema
    assert calls == 0


def test_untraced_excludes_every_url() -> None:
    from opentelemetry.util.http import ExcludeList

    excluded = ExcludeList(tuning.untraced()["excluded_urls"])
    assert excluded.url_disabled("http://localhost:3000/churn/predict")
    assert excluded.url_disabled("http://localhost:3000/credit/evaluate_file")


def test_the_garbage_collector_leaves_start_up_objects_alone_and_runs_less_often() -> None:
    import gc

    before = gc.get_threshold()
    try:
        tuning.tune_garbage_collector()
        assert gc.get_freeze_count() > 10_000  # the interpreter, pytest, bentoml, pydantic
        assert gc.get_threshold()[0] == tuning.YOUNG_GENERATION_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def _middleware(app: Any, timeout: float) -> Any:
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    tuning.release_request_timers()
    return TimeoutMiddleware(app, timeout=timeout)


async def _request(middleware: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await middleware({"type": "http", "method": "GET", "path": "/"}, receive, send)
    return sent


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_request_timers_are_released_once_the_response_starts() -> None:
    async def scenario() -> int:
        middleware = _middleware(_ok, timeout=300)
        for _ in range(200):
            sent = await _request(middleware)
            assert sent[0]["status"] == 200
        loop: Any = asyncio.get_running_loop()
        return sum(1 for handle in loop._scheduled if not handle.cancelled())

    # Unpatched, each of the 200 requests leaves a live 300 s timer behind.
    assert asyncio.run(scenario()) == 0


def test_a_request_that_never_responds_still_gets_a_504() -> None:
    async def silent(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(10)

    sent = asyncio.run(_request(_middleware(silent, timeout=0.05)))
    assert sent[0]["status"] == 504
    assert b"0.05 seconds" in sent[1]["body"]


def test_a_handler_that_fails_before_responding_fails_at_once() -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("boom")

    async def scenario() -> float:
        started = time.monotonic()
        with pytest.raises(ValueError, match="boom"):
            await _request(_middleware(broken, timeout=30))
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 1
