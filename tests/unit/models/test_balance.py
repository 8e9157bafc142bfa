"""The card-balance contract: ISLR names accepted, bounds and protected attributes refused,
bands fixed, and the record and frame paths giving the same answers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.linear_model import Ridge

from models import balance
from models.explain import explainer_for
from models.fastpath import FramePipeline
from tests.support.cardholders import HOLDER, ORIGINAL
from training.balance import build_pipeline


def test_original_names_read_as_the_snake_case_ones() -> None:
    snake = balance.Cardholder.model_validate(HOLDER)
    original = balance.Cardholder.model_validate(ORIGINAL)
    assert original.model_dump(exclude={"cardholder_id"}) == snake.model_dump(
        exclude={"cardholder_id"}
    )
    assert original.cardholder_id == "1"


@pytest.mark.parametrize("field", ["Gender", "Ethnicity", "gender", "balance"])
def test_protected_attributes_and_the_target_are_unknown_fields(field: str) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        balance.Cardholder.model_validate({**HOLDER, field: "x"})


@pytest.mark.parametrize(
    ("field", "value"),
    [("income", 1e308), ("limit", -1), ("age", 17), ("cards", True), ("income", float("nan"))],
)
def test_implausible_values_are_refused(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        balance.Cardholder.model_validate({**HOLDER, field: value})


def test_bands_are_fixed_cut_offs() -> None:
    bands = balance.balance_bands(np.array([0.0, 499.99, 500.0, 999.0, 1000.0, 5000.0]))
    assert bands.tolist() == ["low", "low", "medium", "medium", "high", "high"]


class _Negative:
    """A regressor that predicts below zero: the answer must be floored."""

    def predict(self, features: Any) -> np.ndarray:
        return np.full(len(next(iter(features.values()))), -50.0)


def test_expected_balance_is_never_negative() -> None:
    [estimate] = balance.score(_Negative(), [balance.Cardholder.model_validate(HOLDER)], "1")
    assert estimate.expected_balance == 0.0 and estimate.balance_band == "low"


def _fitted() -> Any:
    rng = np.random.default_rng(3)
    n = 200
    frame = pd.DataFrame(
        {
            "income": rng.uniform(10, 150, n),
            "limit": rng.integers(1000, 12000, n).astype(float),
            "rating": rng.integers(100, 900, n).astype(float),
            "cards": rng.integers(1, 6, n).astype(float),
            "age": rng.integers(20, 90, n).astype(float),
            "education": rng.integers(8, 20, n).astype(float),
            "student": rng.integers(0, 2, n).astype(float),
            "married": rng.integers(0, 2, n).astype(float),
        }
    )
    target = 0.2 * frame["limit"] - 7 * frame["income"] + 400 * frame["student"]
    return build_pipeline(1.0).fit(frame, target), frame


def test_records_and_frames_give_the_same_answers_with_factors() -> None:
    pipeline, frame = _fitted()
    assert isinstance(pipeline[-1], Ridge)
    explainer, why_not = explainer_for(pipeline, frame)
    assert explainer is not None, why_not
    assert explainer.describe()["method"].endswith("in the predicted unit")
    holders = [
        balance.Cardholder.model_validate(HOLDER),
        balance.Cardholder.model_validate(ORIGINAL),
    ]
    predictor = FramePipeline(pipeline)  # what serving passes when there is no fast path
    records = balance.score(predictor, holders, "4", explainer)
    frame_answer = balance.score_frame(predictor, balance.to_frame(holders), "4", explainer)
    assert list(frame_answer.columns) == [*balance.OUTPUT_COLUMNS, balance.FACTORS_COLUMN]
    np.testing.assert_allclose(
        frame_answer["expected_balance"], [r.expected_balance for r in records]
    )
    assert frame_answer["balance_band"].tolist() == [r.balance_band for r in records]
    # Contributions are in dollars and add up to the estimate minus the baseline.
    contributions = explainer.contributions(balance.columns(holders[:1]))
    raw = float(pipeline.predict(balance.to_frame(holders[:1]))[0])
    assert contributions.sum() + explainer.baseline_log_odds == pytest.approx(raw)
    assert records[0].top_factors[0].feature in balance.FEATURES


def test_the_family_declaration_is_complete() -> None:
    family = balance.FAMILY.check()
    assert family.route == "/balance/predict" and family.file_route == "/balance/predict_file"
    assert not family.gates[balance.MODEL_NAME].higher_is_better
