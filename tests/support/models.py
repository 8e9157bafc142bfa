"""Tiny models trained into a temporary MLflow store, the way `python -m training` does it."""

from __future__ import annotations

from pathlib import Path

from models.settings import ModelSettings
from training import balance as balance_training
from training import churn as churn_training
from training import credit as credit_training
from training.data import load_churn, load_credit


def mlflow_settings(root: Path) -> ModelSettings:
    return ModelSettings.model_validate(
        {
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
            "CLIENTINSIGHT_MLFLOW_ARTIFACT_ROOT": str(root / "artifacts"),
        }
    )


def mlflow_env(settings: ModelSettings) -> dict[str, str]:
    """The environment a server process needs to find the same store."""
    return {
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "CLIENTINSIGHT_MLFLOW_ARTIFACT_ROOT": str(settings.mlflow_artifact_root),
    }


def train_tiny_churn(settings: ModelSettings, rows: int = 1500) -> churn_training.TrainingResult:
    data = load_churn(sample=rows, seed=7)
    return churn_training.train(
        data, churn_training.TrainingConfig(cv_folds=3, seed=7), settings=settings
    )


def train_tiny_credit(settings: ModelSettings) -> credit_training.CreditResult:
    """Both credit models on the (small) real data, with a short search over k."""
    config = credit_training.CreditConfig(k_values=(3, 4, 5), bootstraps=3, cv_folds=3, seed=7)
    return credit_training.train(load_credit(), config, settings=settings)


def train_tiny_balance(
    settings: ModelSettings, alpha: float = 1.0
) -> balance_training.TrainingResult:
    """The card-balance regression on the (small) real data, with 3 folds."""
    config = balance_training.BalanceConfig(cv_folds=3, seed=7, alpha=alpha)
    return balance_training.train(balance_training.load(), config, settings=settings)
