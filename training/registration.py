"""Logging a fitted pipeline, registering it, tagging the version and promoting the first one.

Shared by every model's training so that each registered version carries the same facts: its
decision threshold (when it has one), its key metric, and the stored evaluation set.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from models.registry import THRESHOLD_TAG, alias_version, configure_mlflow
from models.settings import ModelSettings


@dataclass(frozen=True)
class TrainingResult:
    """What one model's run produced."""

    run_id: str
    version: str | None
    promoted: bool
    metrics: dict[str, float]
    threshold: float | None


def log_evaluation_set(frame: pd.DataFrame) -> None:
    """Store the hold-out set with the run: promotions and parity checks score on it later."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "holdout.parquet"
        frame.to_parquet(path)
        mlflow.log_artifact(str(path), artifact_path="evaluation")


def log_and_register(
    pipeline: Any,
    *,
    name: str,
    signature: Any,
    input_example: pd.DataFrame,
    settings: ModelSettings,
    register: bool,
    trusted_types: list[str],
    pyfunc_predict_fn: str = "predict",
    version_tags: dict[str, str] | None = None,
) -> tuple[str | None, bool]:
    """Log the pipeline in the active run; register it; tag it; promote it if it is the first.

    Returns (version, promoted); (None, False) when not registering.
    """
    import mlflow.sklearn

    info = mlflow.sklearn.log_model(
        pipeline,
        name="model",
        signature=signature,
        input_example=input_example,
        pyfunc_predict_fn=pyfunc_predict_fn,
        skops_trusted_types=trusted_types,
        registered_model_name=name if register else None,
    )
    if not register or info.registered_model_version is None:
        return None, False
    version = str(info.registered_model_version)
    client = configure_mlflow(settings)
    for key, value in (version_tags or {}).items():
        client.set_model_version_tag(name, version, key, value)
    return version, promote_if_first(name, version, settings)


def threshold_tags(threshold: float, metric: str, value: float) -> dict[str, str]:
    """The version tags serving reads: decision threshold and the headline metric."""
    return {THRESHOLD_TAG: str(threshold), metric: f"{value:.4f}"}


def promote_if_first(name: str, version: str, settings: ModelSettings) -> bool:
    """The first registered version becomes the serving alias; later ones wait for a promotion.
    Only a missing alias counts as "first": a registry that cannot tell raises, so a version
    never reaches @champion past the gate because of a failed lookup."""
    client = configure_mlflow(settings)
    if alias_version(client, name, settings.serving_alias) is not None:
        return False
    client.set_registered_model_alias(name, settings.serving_alias, version)
    return True


def summary(result: TrainingResult) -> dict[str, Any]:
    """What the CLI prints at the end of a run."""
    return {
        "run_id": result.run_id,
        "version": result.version,
        "promoted": result.promoted,
        **result.metrics,
    }


def print_summary(title: str, result: TrainingResult, skip: tuple[str, ...] = ()) -> None:
    """`summary(result)` as a table on the terminal, leaving out keys starting with `skip`."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary(result).items():
        if skip and key.startswith(skip):
            continue
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)
