"""The churn contract: field names, IBM aliases, validation, risk bands, feature frame."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from models import churn, fastpath
from models.explain import LinearExplainer
from tests.support.records import IBM, SNAKE
from training import churn as churn_training
from training.data import load_churn


def test_ibm_column_names_map_to_the_same_customer() -> None:
    assert churn.Customer.model_validate(IBM) == churn.Customer.model_validate(SNAKE)


def test_yes_no_and_zero_one_are_booleans() -> None:
    customer = churn.Customer.model_validate(SNAKE)
    assert customer.partner is True
    assert customer.senior_citizen is False


@pytest.mark.parametrize("blank", ["", " ", None, math.nan])
def test_blank_total_charges_is_missing_not_zero(blank: object) -> None:
    customer = churn.Customer.model_validate({**IBM, "TotalCharges": blank})
    assert customer.total_charges is None


def test_total_charges_must_be_present_even_if_null() -> None:
    data = dict(SNAKE)
    del data["total_charges"]
    with pytest.raises(ValidationError) as info:
        churn.Customer.model_validate(data)
    assert info.value.errors()[0]["loc"] == ("total_charges",)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tenure", -1),
        ("monthly_charges", "abc"),
        ("monthly_charges", math.inf),
        ("contract", "Three year"),
        ("gender", "F"),
        ("partner", "maybe"),
        # Sloppiness that would change a decision: a boolean read as 1, implausible money.
        ("tenure", True),
        ("monthly_charges", False),
        ("total_charges", True),
        ("tenure", churn.MAX_TENURE_MONTHS + 1),
        ("monthly_charges", 1e308),
        ("total_charges", 1e308),
    ],
)
def test_bad_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        churn.Customer.model_validate({**SNAKE, field: value})
    assert [e["loc"] for e in info.value.errors()] == [(field,)]


def test_the_plausibility_bounds_admit_every_real_customer(telco_csv: object) -> None:
    frame = pd.read_csv(str(telco_csv))
    assert frame["tenure"].max() <= churn.MAX_TENURE_MONTHS
    assert frame["MonthlyCharges"].max() * 5 <= churn.MAX_MONTHLY_CHARGES
    totals = pd.to_numeric(frame["TotalCharges"], errors="coerce")
    assert totals.max() * 5 <= churn.MAX_TOTAL_CHARGES


def test_unknown_fields_are_rejected_by_name() -> None:
    with pytest.raises(ValidationError) as info:
        churn.Customer.model_validate({**SNAKE, "tenur": 3})
    assert info.value.errors()[0]["loc"] == ("tenur",)


def test_numeric_customer_ids_become_text() -> None:
    assert churn.Customer.model_validate({**SNAKE, "customer_id": 42}).customer_id == "42"


@pytest.mark.parametrize(
    ("probability", "band"),
    [
        (0.0, "low"),
        (0.2999, "low"),
        (0.30, "medium"),
        (0.5999, "medium"),
        (0.60, "high"),
        (1.0, "high"),
    ],
)
def test_risk_band_cut_offs(probability: float, band: str) -> None:
    assert churn.risk_band(probability) == band
    assert churn.risk_bands(np.array([probability])).tolist() == [band]


def test_decision_uses_the_version_threshold() -> None:
    customers = [churn.Customer.model_validate(SNAKE)] * 3
    out = churn.predictions_from_probabilities(customers, np.array([0.2, 0.34, 0.9]), 0.34, "7")
    assert [p.churn for p in out] == [False, True, True]
    assert [p.risk_band for p in out] == ["low", "medium", "high"]
    assert {p.model_version for p in out} == {"7"}
    assert out[0].customer_id == "7590-VHVEG"


def test_feature_frame_has_the_contract_layout() -> None:
    frame = churn.to_frame([churn.Customer.model_validate({**SNAKE, "total_charges": None})])
    assert tuple(frame.columns) == churn.FEATURES
    assert frame["partner"].dtype == np.int64
    assert frame["tenure"].dtype == np.float64
    assert frame["total_charges"].isna().all()


def test_feature_frame_from_columns_equals_the_records_frame() -> None:
    from models import tabular

    customers = [
        churn.Customer.model_validate(SNAKE),
        churn.Customer.model_validate({**SNAKE, "total_charges": None, "partner": False}),
    ]
    columns = {
        name: np.array([getattr(c, name) for c in customers], dtype=object)
        for name in churn.Customer.model_fields
    }
    pd.testing.assert_frame_equal(churn.feature_frame(columns), churn.to_frame(customers))
    assert tabular.records(columns, churn.Customer) == customers


def test_outcome_frame_is_the_records_answer_column_by_column() -> None:
    probabilities = np.array([0.1, 0.34, 0.6, 0.95])
    outcome = churn.outcome_frame(probabilities, 0.34, "4")
    customers = [churn.Customer.model_validate(SNAKE)] * 4
    records = churn.predictions_from_probabilities(customers, probabilities, 0.34, "4")
    assert tuple(outcome.columns) == churn.OUTPUT_COLUMNS
    for name in churn.OUTPUT_COLUMNS:
        assert outcome[name].tolist() == [getattr(r, name) for r in records], name


def test_score_frame_refuses_a_frame_without_the_features() -> None:
    with pytest.raises(ValueError, match="tenure"):
        churn.score_frame(None, pd.DataFrame({"gender": ["Male"]}), 0.5, "1")


def test_signature_is_derived_from_the_feature_lists() -> None:
    signature = churn.mlflow_signature()
    assert tuple(signature.inputs.input_names()) == churn.FEATURES


def test_every_alias_maps_to_a_field() -> None:
    assert set(churn.COLUMN_ALIASES.values()) == set(churn.Customer.model_fields)
    assert churn.COLUMN_ALIASES["TotalCharges"] == "total_charges"
    assert churn.COLUMN_ALIASES["customerID"] == "customer_id"


@pytest.fixture(scope="module")
def fitted() -> tuple[fastpath.CompiledPipeline, LinearExplainer, pd.DataFrame]:
    """A small real churn model: its compiled predictor, its explainer and its data."""
    data = load_churn(sample=1500, seed=3)
    pipeline = churn_training.build_pipeline(0.3, 0).fit(data.features, data.target)
    compiled, reason = fastpath.compile_pipeline(pipeline)
    assert compiled is not None, reason
    return compiled, LinearExplainer.from_pipeline(pipeline, data.features), data.features


def _customers() -> list[churn.Customer]:
    return [
        churn.Customer.model_validate(SNAKE),
        churn.Customer.model_validate(
            {**SNAKE, "contract": "Two year", "tenure": 60, "total_charges": None}
        ),
    ]


def test_old_callers_still_validate_a_prediction_without_factors() -> None:
    prediction = churn.ChurnPrediction(
        customer_id=None, churn_probability=0.5, churn=True, risk_band="medium", model_version="1"
    )
    assert prediction.top_factors == []


def test_score_with_an_explainer_carries_the_top_factors(fitted) -> None:
    predictor, explainer, _ = fitted
    customers = _customers()
    plain = churn.score(predictor, customers, 0.5, "3")
    explained = churn.score(predictor, customers, 0.5, "3", explainer=explainer)
    assert all(p.top_factors == [] for p in plain)
    without = [p.model_dump(exclude={"top_factors"}) for p in explained]
    assert without == [p.model_dump(exclude={"top_factors"}) for p in plain]
    contributions = explainer.contributions(churn.columns(customers))
    for prediction, row in zip(explained, contributions, strict=True):
        assert len(prediction.top_factors) == churn.TOP_FACTORS
        sizes = [abs(f.contribution) for f in prediction.top_factors]
        assert sizes == sorted(sizes, reverse=True)
        assert sizes[0] == round(float(np.abs(row).max()), 4)
        # Exact: the contributions and the baseline give back the answered probability.
        log_odds = explainer.baseline_log_odds + row.sum()
        assert prediction.churn_probability == pytest.approx(1 / (1 + math.exp(-log_odds)))
    # The customer's own input values, as sent (None for the blank total_charges).
    everything = explainer.top_factors(churn.columns(customers), 19, records=customers)[1]
    assert {f.feature: f.value for f in everything}["total_charges"] is None
    assert {f.feature: f.value for f in everything}["tenure"] == 60


def test_score_builds_no_dataframe(fitted, monkeypatch: pytest.MonkeyPatch) -> None:
    predictor, explainer, _ = fitted

    class NoFrames(pd.DataFrame):
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("a DataFrame on the single-record path")

    monkeypatch.setattr(pd, "DataFrame", NoFrames)
    (prediction,) = churn.score(predictor, _customers()[:1], 0.5, "3", explainer=explainer)
    assert prediction.top_factors


def test_score_frame_adds_the_factors_column_only_with_an_explainer(fitted) -> None:
    predictor, explainer, features = fitted
    frame = features.head(25).reset_index(drop=True)
    plain = churn.score_frame(predictor, frame, 0.5, "3")
    explained = churn.score_frame(predictor, frame, 0.5, "3", explainer)
    assert tuple(plain.columns) == churn.OUTPUT_COLUMNS
    assert tuple(explained.columns) == (*churn.OUTPUT_COLUMNS, churn.FACTORS_COLUMN)
    pd.testing.assert_frame_equal(explained[list(churn.OUTPUT_COLUMNS)], plain)
    # The same factors as the record path gives the same customers.
    customers = [churn.Customer.model_validate(r) for r in frame.to_dict("records")]
    records = churn.score(predictor, customers, 0.5, "3", explainer=explainer)
    for text, record in zip(explained[churn.FACTORS_COLUMN], records, strict=True):
        parsed = [part.rsplit(" ", 1) for part in text.split("; ")]
        assert [(name.split("=", 1)[0], float(c)) for name, c in parsed] == [
            (f.feature, round(f.contribution, 2)) for f in record.top_factors
        ]


def test_factor_text_reads_feature_value_and_contribution(fitted) -> None:
    _, explainer, _ = fitted
    customers = _customers()
    features = churn.to_frame(customers)
    (text,) = explainer.top_factor_texts(features.tail(1), len(churn.FEATURES))
    parts = {p.split("=", 1)[0]: p.split("=", 1)[1] for p in text.split("; ")}
    assert parts["total_charges"].startswith("missing ")
    assert parts["contract"].startswith("Two year ")
    assert parts["tenure"].startswith("60 ")  # the float64 column, without a trailing .0
    assert parts["partner"].startswith("1 ")  # binary features are 0/1 columns in a file
    assert all(p.rsplit(" ", 1)[1][0] in "+-" for p in parts.values())


def test_outcome_frame_takes_factor_texts() -> None:
    probabilities = np.array([0.1, 0.9])
    outcome = churn.outcome_frame(probabilities, 0.5, "2", ["tenure=1 +0.50", ""])
    assert tuple(outcome.columns) == (*churn.OUTPUT_COLUMNS, churn.FACTORS_COLUMN)
    assert outcome[churn.FACTORS_COLUMN].tolist() == ["tenure=1 +0.50", ""]
    with pytest.raises(ValueError, match="1 factor texts for 2 rows"):
        churn.outcome_columns(probabilities, 0.5, "2", ["x"])
