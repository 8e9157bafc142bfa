"""Standard promotion gates: the metric a candidate version must not score worse on than the
version holding the alias, on the stored hold-out rows neither of them trained on."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from models.family import Gate


def _features(model: Any, frame: pd.DataFrame) -> pd.DataFrame:
    return frame[list(model.feature_names_in_)]


def roc_auc(target: str) -> Gate:
    """A classifier's hold-out ROC AUC on `target` (higher is better)."""

    def score(model: Any, frame: pd.DataFrame) -> float:
        from sklearn.metrics import roc_auc_score

        probabilities = model.predict_proba(_features(model, frame))[:, 1]
        return float(roc_auc_score(frame[target].astype(int), probabilities))

    return Gate("holdout ROC AUC", score)


def silhouette() -> Gate:
    """A segmentation pipeline's hold-out silhouette in its own scaled space (higher is
    better); one segment for everyone scores -1, the worst a segmentation can be."""

    def score(model: Any, frame: pd.DataFrame) -> float:
        from sklearn.metrics import silhouette_score

        features = _features(model, frame)
        labels = model.predict(features)
        if len(np.unique(labels)) < 2:
            return -1.0
        return float(silhouette_score(model[:-1].transform(features), labels))

    return Gate("holdout silhouette", score)


def rmse(target: str, floor: float | None = None) -> Gate:
    """A regressor's hold-out root mean squared error on `target` (lower is better), on its
    predictions as served: raised to `floor` when the family floors them."""

    def score(model: Any, frame: pd.DataFrame) -> float:
        predictions = np.asarray(model.predict(_features(model, frame)), dtype="float64")
        if floor is not None:
            predictions = np.maximum(predictions, floor)
        errors = predictions - frame[target].to_numpy(dtype="float64")
        return float(np.sqrt(np.mean(errors**2)))

    return Gate("holdout RMSE", score, higher_is_better=False)
