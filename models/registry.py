"""Resolve `models:/<name>@<alias>` to a concrete registered version and load it, loudly.

Serving never loads "whatever `@champion` is right now" by URI alone: it resolves the alias to a
version first, so every response and database row can name the version that produced it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.locks import exclusive
from common.urls import psycopg_url, redacted
from models.settings import ModelSettings, get_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

#: Version tag that stores the decision threshold chosen on validation data at training time.
THRESHOLD_TAG = "decision_threshold"
#: Metrics copied from the training run into `GET /models` and `training list`: the
#: classifiers' discrimination and calibration, a segmentation's separation and stability, a
#: regressor's errors and fit.
KEY_METRICS = (
    "holdout_roc_auc",
    "cv_roc_auc_mean",
    "holdout_pr_auc",
    "holdout_brier",
    "silhouette",
    "stability_ari",
    "holdout_rmse",
    "holdout_mae",
    "holdout_r2",
    "cv_rmse_mean",
)


class ModelNotAvailableError(RuntimeError):
    """The registry has no version for the requested name and alias."""


@dataclass(frozen=True)
class ServedModel:
    """A loaded model version and what clients need to know about it."""

    name: str
    alias: str
    version: str
    run_id: str
    source: str
    metrics: dict[str, float]
    tags: dict[str, str]
    model: Any = field(repr=False)
    #: What serves, taking feature columns: the compiled fast path when it matched the
    #: pipeline, else the pipeline behind the same interface.
    predictor: Any = field(repr=False, default=None)
    #: "fast" or "pipeline", and why (parity figure or the reason for falling back).
    inference_path: str = "pipeline"
    inference_note: str = ""
    #: Per-prediction contributions (`models/explain.py`), None for a model it cannot explain
    #: (k-means) or when explanations are off; `explanation_note` says which and why.
    explainer: Any = field(repr=False, default=None)
    explanation_note: str = ""
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def threshold(self) -> float:
        """The decision threshold stored with this version (0.5 only if training stored none)."""
        return float(self.tags.get(THRESHOLD_TAG, 0.5))

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for `GET /models`."""
        return {
            "name": self.name,
            "alias": self.alias,
            "version": self.version,
            "run_id": self.run_id,
            "metrics": self.metrics,
            # A classifier's stored cut-off; null for a model that decides nothing (k-means).
            "decision_threshold": (
                float(self.tags[THRESHOLD_TAG]) if THRESHOLD_TAG in self.tags else None
            ),
            "inference_path": self.inference_path,
            "inference_note": self.inference_note,
            "explanations": (
                self.explainer.describe()
                if self.explainer is not None
                else {"status": "off", "reason": self.explanation_note}
            ),
            "loaded_at": self.loaded_at.isoformat(),
        }


def key_metrics(run: Any) -> dict[str, float]:
    """The `KEY_METRICS` a training run logged (what `GET /models` and the CLI show)."""
    return {k: run.data.metrics[k] for k in KEY_METRICS if k in run.data.metrics}


def configure_mlflow(settings: ModelSettings | None = None) -> MlflowClient:
    """Point MLflow at the configured store and return a client (called, never run at import)."""
    import mlflow

    settings = settings or get_settings()
    # MLflow's default PostgreSQL driver is psycopg2; the project ships psycopg 3.
    uri = psycopg_url(settings.mlflow_tracking_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if not uri.startswith("sqlite:///") or uri in _CREATED:
        return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client = _create_once(Path(uri.removeprefix("sqlite:///")), uri)
    _CREATED.add(uri)
    return client


#: SQLite stores this process has seen created (see `_create_once`).
_CREATED: set[str] = set()


def _create_once(path: Path, uri: str) -> MlflowClient:
    """A client of a SQLite store that this process creates, or waits while another one does.
    Whichever process opens a fresh store first creates and migrates its tables; the model
    workers of a server started before any training all did so at once, left it half
    migrated, and every later command failed on `table _alembic_tmp_experiments already
    exists`."""
    import mlflow

    with exclusive(path):
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)  # the tracking tables
        client.search_registered_models(max_results=1)  # the registry's, opened lazily
    return client


def ensure_experiment(settings: ModelSettings | None = None) -> str:
    """Create (once) the experiment with an explicit artifact location and make it active."""
    import mlflow

    settings = settings or get_settings()
    client = configure_mlflow(settings)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is None:
        settings.mlflow_artifact_root.mkdir(parents=True, exist_ok=True)
        experiment_id = client.create_experiment(
            settings.experiment_name, artifact_location=settings.mlflow_artifact_root.as_uri()
        )
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return str(experiment_id)


def resolve(client: MlflowClient, name: str, alias: str) -> Any:
    """The ModelVersion the alias points to; a clear error if there is none. Any other failure
    (the tracking server is down, ...) raises as it is: "cannot tell" is not "none"."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code not in _NOT_FOUND:
            raise
        raise ModelNotAvailableError(
            f"registered model {name!r} has no version with alias {alias!r} in "
            f"{redacted(client.tracking_uri)}: train one with `python -m training "
            f"{_family_of(name)}` (the first version becomes @{alias})"
        ) from exc


def _family_of(name: str) -> str:
    """The training subcommand of the family serving `name` (FAMILY when none does)."""
    from models import catalog

    try:
        return catalog.serving(name).name
    except KeyError:
        return "FAMILY"


#: What MLflow answers for an alias or a registered model that does not exist.
_NOT_FOUND = ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST")


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version `name@alias` points to, None if the alias (or the model) does not exist.

    Any other failure (the tracking server is down, ...) raises: "cannot tell" must never be
    read as "the alias was removed".
    """
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in _NOT_FOUND:
            return None
        raise


def load(
    name: str,
    alias: str | None = None,
    settings: ModelSettings | None = None,
    *,
    reuse: Iterable[ServedModel | None] = (),
) -> ServedModel:
    """Resolve the alias, then load exactly that version with its metrics and tags.

    A model in `reuse` with the resolved name and version is returned (under `alias`) instead
    of loading it again: a promoted challenger is already in memory.
    """
    import mlflow.sklearn

    settings = settings or get_settings()
    alias = alias or settings.serving_alias
    client = configure_mlflow(settings)
    version = resolve(client, name, alias)
    for loaded in reuse:
        if loaded is not None and (loaded.name, loaded.version) == (name, str(version.version)):
            return dataclasses.replace(loaded, alias=alias)
    run = client.get_run(version.run_id)
    model = mlflow.sklearn.load_model(f"models:/{name}/{version.version}")
    reference = _evaluation_set(str(version.run_id))
    predictor, path, note = _choose_predictor(model, reference)
    explainer, why_not = _explainer(model, reference, settings)
    served = ServedModel(
        name=name,
        alias=alias,
        version=str(version.version),
        run_id=version.run_id,
        source=str(version.source),
        metrics=key_metrics(run),
        tags=dict(version.tags),
        model=model,
        predictor=predictor,
        inference_path=path,
        inference_note=note,
        explainer=explainer,
        explanation_note=why_not,
    )
    log.info(
        "loaded %s version %s (@%s, run %s), %s path: %s",
        name,
        served.version,
        alias,
        served.run_id,
        path,
        note,
    )
    return served


def _evaluation_set(run_id: str) -> Any:
    """The run's stored evaluation set (`evaluation/holdout.parquet`), None if it has none."""
    import mlflow.artifacts
    import pandas as pd
    from mlflow.exceptions import MlflowException

    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="evaluation/holdout.parquet"
        )
    except (MlflowException, OSError):
        return None
    return pd.read_parquet(local)


def _explainer(model: Any, reference: Any, settings: ModelSettings) -> tuple[Any, str]:
    """The version's explainer, its baseline the stored evaluation set; (None, why) if none."""
    from models.explain import explainer_for

    if not settings.explanations:
        return None, "CLIENTINSIGHT_EXPLANATIONS=false"
    if reference is None:
        return None, "no stored evaluation set to take the baseline from"
    return explainer_for(model, reference)


def _choose_predictor(model: Any, reference: Any) -> tuple[Any, str, str]:
    """The compiled fast path if it matches the pipeline on the stored evaluation set."""
    from models import fastpath

    compiled, reason = fastpath.compile_pipeline(model)
    fallback = fastpath.FramePipeline(model)
    if compiled is None:
        return fallback, "pipeline", reason
    if reference is None:
        return fallback, "pipeline", "no stored evaluation set to verify the fast path on"
    frame = reference[list(model.feature_names_in_)]
    difference = fastpath.verify(compiled, model, frame)
    if difference > fastpath.PARITY_TOLERANCE:
        log.warning("fast path differs from the pipeline by %g: serving the pipeline", difference)
        return fallback, "pipeline", f"fast path refused: max difference {difference:.3g}"
    return compiled, "fast", f"max difference {difference:.3g} on {len(frame)} stored rows"


def load_json_artifact(served: ServedModel, path: str) -> Any:
    """A JSON artifact logged in the run that produced `served` (e.g. segment profiles)."""
    import json

    import mlflow.artifacts

    local = mlflow.artifacts.download_artifacts(run_id=served.run_id, artifact_path=path)
    return json.loads(Path(local).read_text())


def has_alias(name: str, alias: str, settings: ModelSettings | None = None) -> bool:
    """Whether `name@alias` resolves (used by `make up` to skip retraining)."""
    client = configure_mlflow(settings)
    try:
        resolve(client, name, alias)
    except ModelNotAvailableError:
        return False
    return True
