"""One BentoML model service per family, built from its declaration.

Each family's models run in worker processes of their own (`{family}_model`, with the family's
`workers`), so one family's fault leaves the others serving. A worker holds the family's bundle
(`serving/bundles.py`) behind `LiveModels`, which follows the registry's aliases, and answers:

- `predict(records)`: a batch the entry service assembled (the contract is validated again on
  this side of the process boundary);
- `predict_frame(features)`: a file's chunk as a feature frame, for families that declare one
  (no record per row on either side of the hop);
- `shadow(records)`: the challenger's outputs for a sample, empty when there is none;
- `predict_version(records, model, version)`: the outputs of the loaded scorer (champion,
  challenger or standby) whose `model` is at `version`, empty when none is (version-pinned
  Open Inference Protocol requests);
- `versions()`: the version each role holds, per model (readiness and metadata);
- `describe()`: the served versions for `GET /models`.

The API methods' types come from the family (`record`, `worker_output`), so BentoML builds each
service's schemas as it would for a hand-written class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import bentoml
import pandas as pd

from models.family import Family
from models.settings import get_settings as get_model_settings
from serving import bundles, tuning
from serving.batching import CallStats
from serving.live import LiveModels
from serving.settings import family_settings, get_serving_settings

#: Connection recycling every 100 requests closes sessions with calls in flight (a third of
#: requests failed at 64 clients): keep the dependency connection for the worker's life.
LONG_LIVED_CONNECTION = {"max_requests": 1_000_000_000, "max_age": 1e9}


def internal_config() -> dict[str, Any]:
    """What every model service shares: spans only when asked for, no access log for the
    internal hop."""
    tracing = tuning.tracing(get_serving_settings().tracing)
    return {"tracing": tracing, "logging": {"access": {"enabled": False}}}


def service_name(family: Family) -> str:
    """`churn_model`, `credit_model`, ...: the service's (and its processes') name."""
    return f"{family.name.replace('-', '_')}_model"


def _typed(function: Callable[..., Any], **annotations: Any) -> Callable[..., Any]:
    """`function` with real types for BentoML to build its schemas from."""
    function.__annotations__ = annotations
    return function


def model_service(family: Family) -> bentoml.Service[Any]:
    """The family's model service: its class built from the declaration, then BentoML's."""
    record: Any = family.record
    output: Any = family.worker_output

    def __init__(self: Any) -> None:
        model_settings = get_model_settings()
        self.live = LiveModels(
            family.name,
            load=lambda previous: bundles.load(family, previous, model_settings),
            watch=bundles.watch(family, model_settings),
            interval_s=get_serving_settings().reload_interval_s,
        )
        self.live.start()
        self.calls = CallStats()  # this model worker's view of the batches
        tuning.tune_garbage_collector()

    def predict(self: Any, records: Any) -> Any:
        """One batch (requests coalesced by the entry service, or a chunk of a file)."""
        self.calls.add(len(records))
        return self.live.current.champion.score(records)  # read once: one version throughout

    def predict_frame(self: Any, features: Any) -> Any:
        """A file's chunk as feature columns validated by the entry service."""
        self.calls.add(len(features))
        return self.live.current.champion.score_frame(features)

    def shadow(self: Any, records: Any) -> Any:
        """The challenger's outputs for a sample of traffic; empty when there is none."""
        challenger = self.live.current.challenger
        return [] if challenger is None else challenger.score(records)

    def predict_version(self: Any, records: Any, model: str, version: str) -> Any:
        """A version-pinned batch: scored by whichever loaded scorer holds that version."""
        scorer = bundles.scorer_for(self.live.current, model, version)
        if scorer is None:
            return []
        self.calls.add(len(records))
        return scorer.score(records)

    def versions(self: Any) -> Any:
        return bundles.loaded_versions(family, self.live.current)

    def describe(self: Any) -> Any:
        worker = {"model_worker_calls": self.calls.as_dict(), "reload": self.live.status()}
        served = bundles.describe(family, self.live.current, get_model_settings().challenger_alias)
        return [{**model, **worker} for model in served]

    namespace: dict[str, Any] = {
        "__init__": __init__,
        "__doc__": f"The {family.name} family's models ({', '.join(family.models)}) in their "
        "own worker processes, following the registry's aliases.",
        "__module__": __name__,
        "predict": bentoml.api(_typed(predict, records=list[record], **{"return": list[output]})),
        "shadow": bentoml.api(_typed(shadow, records=list[record], **{"return": list[output]})),
        "predict_version": bentoml.api(
            _typed(
                predict_version,
                records=list[record],
                model=str,
                version=str,
                **{"return": list[output]},
            )
        ),
        "versions": bentoml.api(_typed(versions, **{"return": dict[str, dict[str, Any]]})),
        "describe": bentoml.api(_typed(describe, **{"return": list[dict[str, Any]]})),
    }
    if family.feature_frame is not None:
        namespace["predict_frame"] = bentoml.api(
            _typed(predict_frame, features=pd.DataFrame, **{"return": pd.DataFrame})
        )
    name = service_name(family)
    cls = type("".join(part.title() for part in name.split("_")), (), namespace)
    serving = get_serving_settings()
    return bentoml.service(
        name=name,
        workers=family_settings(family.name).workers,
        traffic={"timeout": serving.model_timeout_s},
        runner_connection=LONG_LIVED_CONNECTION,
        **internal_config(),
    )(cls)
