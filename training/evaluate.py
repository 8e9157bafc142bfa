"""Metrics, plots and data profiles logged with every training run."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)


def cross_validate(
    pipeline: Any, x: pd.DataFrame, y: np.ndarray, folds: int, seed: int
) -> tuple[np.ndarray, dict[str, float]]:
    """Out-of-fold probabilities and the per-fold ROC-AUC summary (stratified, shuffled)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    oof = cross_val_predict(pipeline, x, y, cv=splitter, method="predict_proba")[:, 1]
    aucs = [roc_auc_score(y[idx], oof[idx]) for _, idx in splitter.split(x, y)]
    return oof, {"cv_roc_auc_mean": float(np.mean(aucs)), "cv_roc_auc_std": float(np.std(aucs))}


def choose_threshold(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """The probability cut-off that maximises F1 on validation (out-of-fold) predictions."""
    precision, recall, thresholds = precision_recall_curve(y_true, probabilities)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0)
    # precision/recall have one more entry than thresholds (the final point has no threshold).
    best = int(np.nanargmax(f1[:-1]))
    return float(thresholds[best])


def binary_metrics(
    y_true: np.ndarray, probabilities: np.ndarray, threshold: float, prefix: str
) -> dict[str, float]:
    """Ranking, calibration and thresholded metrics, with the confusion matrix cells."""
    predicted = (probabilities >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y_true, predicted, labels=[0, 1]).ravel()
    return {
        f"{prefix}_roc_auc": float(roc_auc_score(y_true, probabilities)),
        f"{prefix}_pr_auc": float(average_precision_score(y_true, probabilities)),
        f"{prefix}_brier": float(brier_score_loss(y_true, probabilities)),
        f"{prefix}_log_loss": float(log_loss(y_true, probabilities, labels=[0, 1])),
        f"{prefix}_f1": float(f1_score(y_true, predicted, zero_division=0)),
        f"{prefix}_tn": float(tn),
        f"{prefix}_fp": float(fp),
        f"{prefix}_fn": float(fn),
        f"{prefix}_tp": float(tp),
    }


def data_profile(features: pd.DataFrame, target: np.ndarray) -> dict[str, Any]:
    """Class balance, missing values and per-feature distributions, as JSON-ready data."""
    profile: dict[str, Any] = {
        "rows": len(features),
        "class_balance": {
            "positive": int(target.sum()),
            "negative": int(len(target) - target.sum()),
            "positive_rate": float(target.mean()),
        },
        "missing": {k: int(v) for k, v in features.isna().sum().items()},
        "features": {},
    }
    for name in features.columns:
        column = features[name]
        if pd.api.types.is_numeric_dtype(column):
            stats = column.describe()
            profile["features"][name] = {k: float(v) for k, v in stats.items()}
        else:
            profile["features"][name] = {
                str(k): int(v) for k, v in column.value_counts(dropna=False).items()
            }
    return profile


def log_figure(figure: Any, path: str) -> None:
    """Log a matplotlib figure to the active run and free it (pyplot keeps figures alive)."""
    import matplotlib.pyplot as plt
    import mlflow

    mlflow.log_figure(figure, path)
    plt.close(figure)


def plot_roc(y_true: np.ndarray, probabilities: np.ndarray) -> Any:
    import matplotlib.pyplot as plt

    fpr, tpr, _ = roc_curve(y_true, probabilities)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label=f"ROC-AUC {roc_auc_score(y_true, probabilities):.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title="Hold-out ROC")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def plot_calibration(y_true: np.ndarray, probabilities: np.ndarray) -> Any:
    import matplotlib.pyplot as plt

    observed, predicted = calibration_curve(y_true, probabilities, n_bins=10, strategy="quantile")
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(predicted, observed, marker="o", label="model")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.set(xlabel="Predicted probability", ylabel="Observed rate", title="Hold-out calibration")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def plot_importance(importance: pd.Series, title: str) -> Any:
    import matplotlib.pyplot as plt

    top = importance.sort_values().tail(20)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.barh(top.index, top.to_numpy())
    ax.set(title=title, xlabel="importance")
    fig.tight_layout()
    return fig


def regression_metrics(y_true: np.ndarray, predicted: np.ndarray, prefix: str) -> dict[str, float]:
    """A regressor's errors (in the target's unit) and its share of variance explained."""
    from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

    return {
        f"{prefix}_rmse": float(root_mean_squared_error(y_true, predicted)),
        f"{prefix}_mae": float(mean_absolute_error(y_true, predicted)),
        f"{prefix}_r2": float(r2_score(y_true, predicted)),
    }


def cross_validate_regression(
    pipeline: Any, x: pd.DataFrame, y: np.ndarray, folds: int, seed: int
) -> dict[str, float]:
    """The per-fold RMSE summary (shuffled K-fold)."""
    from sklearn.model_selection import KFold, cross_val_score

    splitter = KFold(folds, shuffle=True, random_state=seed)
    scores = -cross_val_score(pipeline, x, y, cv=splitter, scoring="neg_root_mean_squared_error")
    return {"cv_rmse_mean": float(np.mean(scores)), "cv_rmse_std": float(np.std(scores))}


def plot_residuals(y_true: np.ndarray, predicted: np.ndarray, unit: str) -> Any:
    """Residuals against predictions on the hold-out set: a pattern is what the model misses."""
    import matplotlib.pyplot as plt

    residuals = np.asarray(y_true, dtype="float64") - np.asarray(predicted, dtype="float64")
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(predicted, residuals, s=12, alpha=0.6)
    ax.axhline(0, linestyle="--", color="grey")
    ax.set(
        xlabel=f"Predicted ({unit})",
        ylabel=f"Observed - predicted ({unit})",
        title="Hold-out residuals",
    )
    fig.tight_layout()
    return fig
