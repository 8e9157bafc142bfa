"""The exact fast inference path: a fitted scikit-learn pipeline compiled into plain NumPy.

A `ColumnTransformer` pipeline costs about 4 ms per call whatever the batch size; the same
arithmetic from the fitted transformers' parameters costs a few hundredths of that. Only the
transformers this project fits are supported; anything else makes `compile_pipeline` return
None with the reason, and serving keeps the pipeline. `verify` compares both on a stored
evaluation set: the fast path is used only if no output differs by more than 1e-9.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

#: Largest absolute difference from the pipeline the fast path may have.
PARITY_TOLERANCE = 1e-9

#: Feature columns by name: a DataFrame, or a dict of 1-D arrays built from validated records.
Columns = Mapping[str, Any] | pd.DataFrame
Block = Callable[[Columns], np.ndarray]
Step = Callable[[np.ndarray], np.ndarray]


class Unsupported(Exception):
    """The pipeline holds a step the compiler does not know."""


def _step(transformer: Any) -> Step:
    """A numeric 2-D -> 2-D step from one fitted transformer."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    if isinstance(transformer, Pipeline):
        steps = [_step(t) for _, t in transformer.steps]

        def chain(x: np.ndarray) -> np.ndarray:
            for step in steps:
                x = step(x)
            return x

        return chain
    if isinstance(transformer, SimpleImputer):
        if transformer.add_indicator or not np.isnan(transformer.missing_values):
            raise Unsupported("SimpleImputer with indicator or non-NaN missing marker")
        fill = transformer.statistics_.astype("float64")
        return lambda x: np.where(np.isnan(x), fill, x)
    if isinstance(transformer, FunctionTransformer):
        if transformer.kw_args:
            raise Unsupported("FunctionTransformer with kw_args")
        if transformer.func is None:  # how a fitted ColumnTransformer stores "passthrough"
            return lambda x: x
        if transformer.func is not np.log1p:
            raise Unsupported(f"FunctionTransformer({transformer.func!r})")
        return np.log1p
    if isinstance(transformer, StandardScaler):
        mean = transformer.mean_ if transformer.with_mean else 0.0
        scale = transformer.scale_ if transformer.with_std else 1.0
        return lambda x: (x - mean) / scale
    raise Unsupported(type(transformer).__name__)


def _numeric(data: Columns, columns: list[str]) -> np.ndarray:
    return np.column_stack([np.asarray(data[c], dtype="float64") for c in columns])


def _block(transformer: Any, columns: list[str]) -> Block:
    """Columns -> 2-D float block for one ColumnTransformer entry."""
    from sklearn.preprocessing import OneHotEncoder

    if transformer == "passthrough":
        return lambda data: _numeric(data, columns)
    if isinstance(transformer, OneHotEncoder):
        if transformer.drop_idx_ is not None or transformer.handle_unknown != "ignore":
            raise Unsupported("OneHotEncoder with drop or strict unknowns")
        categories = [list(cats) for cats in transformer.categories_]
        widths = [len(c) for c in categories]
        offsets = np.cumsum([0, *widths[:-1]])

        def one_hot(data: Columns) -> np.ndarray:
            values = [np.asarray(data[name], dtype=object) for name in columns]
            out = np.zeros((len(values[0]), sum(widths)))
            for cats, offset, column in zip(categories, offsets, values, strict=True):
                # Elementwise equality per category: an unknown value matches none (all zeros),
                # as OneHotEncoder(handle_unknown="ignore") does.
                for index, category in enumerate(cats):
                    out[:, offset + index] = column == category
            return out

        return one_hot
    step = _step(transformer)
    return lambda data: step(_numeric(data, columns))


@dataclass(frozen=True)
class CompiledPipeline:
    """`predict_proba` (classifiers) or `predict` (k-means, linear regressors) without
    scikit-learn's overhead."""

    features: Callable[[Columns], np.ndarray]
    kind: str
    params: tuple[np.ndarray, np.ndarray]

    def predict_proba(self, data: Columns) -> np.ndarray:
        coef, intercept = self.params
        positive = expit((self.features(data) @ coef.T + intercept).ravel())
        return np.column_stack([1 - positive, positive])

    def predict(self, data: Columns) -> np.ndarray:
        if self.kind == "linear":
            coef, intercept = self.params
            result: np.ndarray = self.features(data) @ coef + intercept
            return result
        if self.kind != "kmeans":
            return (self.predict_proba(data)[:, 1] > 0.5).astype(int)
        centers, _ = self.params
        x = self.features(data)
        distances = ((x[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)
        return distances.argmin(axis=1).astype("int32")


def compile_pipeline(pipeline: Any) -> tuple[CompiledPipeline | None, str]:
    """(compiled, "") or (None, why not)."""
    from sklearn.base import is_regressor
    from sklearn.cluster import KMeans
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline

    try:
        if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
            raise Unsupported("not a (preprocess, estimator) pipeline")
        preprocess, estimator = pipeline.steps[0][1], pipeline.steps[1][1]
        if not isinstance(preprocess, ColumnTransformer) or preprocess.remainder != "drop":
            raise Unsupported("preprocess is not a ColumnTransformer without remainder")
        blocks = [
            _block(t, list(cols))
            for name, t, cols in preprocess.transformers_
            if name != "remainder" and t != "drop"
        ]

        def features(data: Columns) -> np.ndarray:
            return np.hstack([block(data) for block in blocks])

        if isinstance(estimator, LogisticRegression) and len(estimator.classes_) == 2:
            # Copies: the compiled path is frozen at load time, whatever happens to the estimator.
            params = (estimator.coef_.copy(), estimator.intercept_.copy())
            return CompiledPipeline(features, "logistic", params), ""
        if isinstance(estimator, LinearRegression | Ridge) and is_regressor(estimator):
            coef = np.asarray(estimator.coef_, dtype="float64")
            if coef.ndim != 1:
                raise Unsupported(f"{type(estimator).__name__} with several targets")
            intercept = np.asarray(estimator.intercept_, dtype="float64").reshape(())
            return CompiledPipeline(features, "linear", (coef.copy(), intercept.copy())), ""
        if isinstance(estimator, KMeans):
            params = (estimator.cluster_centers_.copy(), np.empty(0))
            return CompiledPipeline(features, "kmeans", params), ""
        raise Unsupported(type(estimator).__name__)
    except Unsupported as exc:
        return None, f"unsupported step: {exc}"


@dataclass(frozen=True)
class FramePipeline:
    """The fitted pipeline behind the same interface as `CompiledPipeline` (feature columns in),
    for the fallback path: scikit-learn's ColumnTransformer needs a DataFrame."""

    pipeline: Any

    def predict_proba(self, data: Columns) -> np.ndarray:
        return np.asarray(self.pipeline.predict_proba(self._frame(data)))

    def predict(self, data: Columns) -> np.ndarray:
        return np.asarray(self.pipeline.predict(self._frame(data)))

    def _frame(self, data: Columns) -> pd.DataFrame:
        names = list(self.pipeline.feature_names_in_)
        return data[names] if isinstance(data, pd.DataFrame) else pd.DataFrame(data)[names]


def verify(compiled: CompiledPipeline, pipeline: Any, frame: pd.DataFrame) -> float:
    """Largest absolute difference between the fast path and the pipeline on `frame`."""
    if compiled.kind in ("kmeans", "linear"):
        return float(np.abs(compiled.predict(frame) - pipeline.predict(frame)).max())
    return float(np.abs(compiled.predict_proba(frame) - pipeline.predict_proba(frame)).max())
