"""The compiled fast path equals the scikit-learn pipeline, or is not used."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline

from models import fastpath, registry
from models.settings import ModelSettings
from training import churn as churn_training
from training import credit as credit_training
from training.data import load_churn, load_credit


@pytest.fixture(scope="module")
def churn_data():
    return load_churn(sample=2000, seed=5)


def test_churn_fast_path_is_exact(churn_data) -> None:
    pipeline = churn_training.build_pipeline(0.3, 0).fit(churn_data.features, churn_data.target)
    compiled, reason = fastpath.compile_pipeline(pipeline)
    assert compiled is not None, reason
    frame = churn_data.features.copy()
    frame.loc[:50, "total_charges"] = np.nan  # imputation
    frame.loc[51:60, "contract"] = "Ten year"  # unknown category: all zeros, as in sklearn
    assert fastpath.verify(compiled, pipeline, frame) <= fastpath.PARITY_TOLERANCE
    assert compiled.predict_proba(frame.head(1)).shape == (1, 2)


def test_credit_fast_paths_are_exact() -> None:
    data = load_credit()
    approval = credit_training.build_approval_pipeline(1.0, 0).fit(data.features, data.target)
    segments = credit_training.build_segment_pipeline(4, 0).fit(data.features)
    for pipeline in (approval, segments):
        compiled, reason = fastpath.compile_pipeline(pipeline)
        assert compiled is not None, reason
        assert fastpath.verify(compiled, pipeline, data.features) <= fastpath.PARITY_TOLERANCE
    compiled_segments, _ = fastpath.compile_pipeline(segments)
    assert compiled_segments is not None
    assert (compiled_segments.predict(data.features) == segments.predict(data.features)).all()


def test_unknown_estimators_fall_back_with_a_reason(churn_data) -> None:
    pipeline = churn_training.build_pipeline(0.3, 0)
    pipeline = Pipeline([pipeline.steps[0], ("gbm", HistGradientBoostingClassifier())])
    pipeline.fit(churn_data.features, churn_data.target)
    compiled, reason = fastpath.compile_pipeline(pipeline)
    assert compiled is None and "HistGradientBoostingClassifier" in reason


def test_a_drifting_fast_path_is_detected(churn_data) -> None:
    pipeline = churn_training.build_pipeline(0.3, 0).fit(churn_data.features, churn_data.target)
    compiled, _ = fastpath.compile_pipeline(pipeline)
    assert compiled is not None
    compiled.params[1][0] += 1e-6  # a tampered intercept
    assert fastpath.verify(compiled, pipeline, churn_data.features) > fastpath.PARITY_TOLERANCE


@pytest.mark.parametrize("name", ["churn", "credit-segment", "credit-approval"])
def test_registered_models_serve_the_verified_fast_path(
    mlflow_store: ModelSettings, name: str
) -> None:
    served = registry.load(name, "champion", mlflow_store)
    assert served.inference_path == "fast", served.inference_note
    assert served.describe()["inference_path"] == "fast"
    difference = float(served.inference_note.split("max difference ")[1].split()[0])
    assert difference <= fastpath.PARITY_TOLERANCE
