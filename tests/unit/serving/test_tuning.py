"""The BentoML workarounds do what they claim, so a BentoML upgrade that changes them shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bentoml
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
