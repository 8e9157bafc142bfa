"""Per-prediction explanations: exact additivity, one feature per input, order, directions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import logit
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from models import churn, credit, explain, fastpath
from models.explain import Factor, LinearExplainer, NotExplainable
from tests.support.records import APPLICANT, SNAKE
from training import churn as churn_training
from training import credit as credit_training
from training.data import load_churn, load_credit


@pytest.fixture(scope="module")
def churn_data():
    return load_churn(sample=2000, seed=5)


@pytest.fixture(scope="module")
def churn_model(churn_data) -> Pipeline:
    return churn_training.build_pipeline(0.3, 0).fit(churn_data.features, churn_data.target)


@pytest.fixture(scope="module")
def churn_explainer(churn_model, churn_data) -> LinearExplainer:
    return LinearExplainer.from_pipeline(churn_model, churn_data.features)


@pytest.fixture(scope="module")
def credit_data():
    return load_credit()


@pytest.fixture(scope="module")
def credit_model(credit_data) -> Pipeline:
    return credit_training.build_approval_pipeline(1.0, 0).fit(
        credit_data.features, credit_data.target
    )


def _tricky(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows the pipeline imputes, and an unknown category (all-zero one-hot)."""
    frame = frame.copy()
    frame.loc[:50, "total_charges"] = np.nan
    frame.loc[51:60, "contract"] = "Ten year"
    return frame


def _no_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(explain.fastpath, "compile_pipeline", lambda p: (None, "disabled"))


def _assert_additive(explainer: LinearExplainer, model: Pipeline, frame: pd.DataFrame) -> None:
    total = explainer.contributions(frame).sum(axis=1) + explainer.baseline_log_odds
    np.testing.assert_allclose(total, model.decision_function(frame), rtol=0, atol=1e-9)
    probability = model.predict_proba(frame)[:, 1]
    assert probability.min() > 1e-6 and probability.max() < 1 - 1e-6  # logit well conditioned
    np.testing.assert_allclose(total, logit(probability), rtol=0, atol=1e-9)


def test_churn_contributions_add_up_to_the_log_odds(churn_model, churn_data) -> None:
    # The reference set is not the explained set: any reference gives exact additivity.
    explainer = LinearExplainer.from_pipeline(
        churn_model, churn_data.features.sample(300, random_state=1)
    )
    assert explainer.path == "fast"
    _assert_additive(explainer, churn_model, _tricky(churn_data.features))


def test_credit_contributions_add_up_to_the_log_odds(credit_model, credit_data) -> None:
    explainer = LinearExplainer.from_pipeline(credit_model, credit_data.features)
    assert explainer.features == credit.FEATURES
    _assert_additive(explainer, credit_model, credit_data.features)


def test_baseline_is_the_mean_log_odds_of_the_reference(
    churn_explainer, churn_model, churn_data
) -> None:
    mean = churn_model.decision_function(churn_data.features).mean()
    assert churn_explainer.baseline_log_odds == pytest.approx(mean, abs=1e-9)
    assert churn_explainer.contributions(churn_data.features).mean(axis=0) == pytest.approx(
        np.zeros(len(churn.FEATURES)), abs=1e-9
    )


def test_compiled_and_pipeline_paths_agree(
    monkeypatch: pytest.MonkeyPatch, churn_model, churn_data, churn_explainer
) -> None:
    _no_fast_path(monkeypatch)
    fallback = LinearExplainer.from_pipeline(churn_model, churn_data.features)
    assert fallback.path == "pipeline" and churn_explainer.path == "fast"
    assert fallback.baseline_log_odds == pytest.approx(churn_explainer.baseline_log_odds, abs=1e-12)
    frame = _tricky(churn_data.features)
    np.testing.assert_allclose(
        fallback.contributions(frame), churn_explainer.contributions(frame), rtol=0, atol=1e-9
    )
    customers = [churn.Customer.model_validate({**SNAKE, "total_charges": None})]
    records = churn.columns(customers)  # dict of arrays, as on the request path
    np.testing.assert_allclose(
        fallback.contributions(records), churn_explainer.contributions(records), rtol=0, atol=1e-9
    )
    assert fallback.top_factors(records, 5, customers) == churn_explainer.top_factors(
        records, 5, customers
    )
    _assert_additive(fallback, churn_model, frame)


def test_one_hot_groups_are_summed_to_their_feature(
    churn_model, churn_data, churn_explainer
) -> None:
    assert churn_explainer.features == churn.FEATURES
    frame = churn_data.features
    contributions = churn_explainer.contributions(frame)
    assert contributions.shape == (len(frame), len(churn.FEATURES))
    # By hand, from scikit-learn's own transform and column names.
    preprocess, classifier = churn_model[0], churn_model[-1]
    z = preprocess.transform(frame)
    names = preprocess.get_feature_names_out()
    per_column = classifier.coef_[0] * (z - z.mean(axis=0))
    for feature in ("contract", "payment_method", "tenure", "partner"):
        mask = np.array([n.split("__")[1].startswith(feature) for n in names])
        width = len(churn.CATEGORICAL_FEATURES.get(feature, (feature,)))
        assert mask.sum() == width, feature
        expected = per_column[:, mask].sum(axis=1)
        got = contributions[:, churn.FEATURES.index(feature)]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9, err_msg=feature)


def test_month_to_month_raises_and_two_year_lowers_churn_risk(churn_explainer) -> None:
    customers = [
        churn.Customer.model_validate({**SNAKE, "contract": "Month-to-month"}),
        churn.Customer.model_validate({**SNAKE, "contract": "Two year"}),
    ]
    features = churn.columns(customers)
    contract = churn_explainer.contributions(features)[:, churn.FEATURES.index("contract")]
    assert contract[0] > 0 > contract[1]
    factors = churn_explainer.top_factors(features, len(churn.FEATURES), customers)
    monthly, two_year = ({f.feature: f for f in row}["contract"] for row in factors)
    assert (monthly.direction, monthly.value) == ("raises", "Month-to-month")
    assert (two_year.direction, two_year.value) == ("lowers", "Two year")
    assert monthly.contribution == round(float(contract[0]), 4)


def test_longer_tenure_lowers_the_tenure_contribution(churn_explainer) -> None:
    customers = [
        churn.Customer.model_validate({**SNAKE, "tenure": tenure}) for tenure in (1, 12, 60)
    ]
    tenure = churn_explainer.contributions(churn.columns(customers))[:, 0]
    assert tenure[0] > tenure[1] > tenure[2]


@pytest.mark.parametrize("k", [0, 1, 3, 5, 19, 50])
def test_top_factors_are_sorted_and_at_most_k(churn_explainer, churn_data, k: int) -> None:
    frame = churn_data.features.head(200)
    rows = churn_explainer.top_factors(frame, k)
    contributions = churn_explainer.contributions(frame)
    assert len(rows) == len(frame)
    for factors, row in zip(rows, contributions, strict=True):
        assert len(factors) == min(k, len(churn.FEATURES))  # none is ~0 on this data
        sizes = [abs(f.contribution) for f in factors]
        assert sizes == sorted(sizes, reverse=True)
        assert all(s >= explain.MIN_CONTRIBUTION for s in sizes)
        if factors:
            assert abs(factors[0].contribution) == round(float(np.abs(row).max()), 4)
        for f in factors:
            assert f.direction == ("raises" if f.contribution > 0 else "lowers")


def test_negligible_contributions_are_left_out(credit_model, credit_data) -> None:
    # The reference is this one applicant: every contribution is exactly zero.
    one = credit_data.features.head(1)
    explainer = LinearExplainer.from_pipeline(credit_model, one)
    assert explainer.top_factors(one, 9) == [[]]
    assert explainer.top_factor_texts(one) == [""]
    changed = one.assign(reports=one["reports"] + 2)
    (only,) = explainer.top_factors(changed, 9)
    assert [(f.feature, f.direction) for f in only] == [("reports", "lowers")]


def test_values_come_from_records_or_columns(churn_explainer) -> None:
    customers = [
        churn.Customer.model_validate(
            {**SNAKE, "senior_citizen": True, "tenure": 0, "total_charges": None}
        )
    ]
    features = churn.columns(customers)
    everything = len(churn.FEATURES)
    (from_records,) = churn_explainer.top_factors(features, everything, customers)
    values = {f.feature: f.value for f in from_records}
    assert values["senior_citizen"] is True and values["tenure"] == 0
    assert values["total_charges"] is None and values["contract"] == "Month-to-month"
    (from_columns,) = churn_explainer.top_factors(features, everything)
    values = {f.feature: f.value for f in from_columns}
    assert values["senior_citizen"] == 1 and values["tenure"] == 0.0
    assert values["total_charges"] is None
    assert all(type(v) in (int, float, str, type(None)) for v in values.values())


def test_factor_texts_are_the_factors_in_words(churn_explainer, churn_data) -> None:
    frame = _tricky(churn_data.features).head(60)
    texts = churn_explainer.top_factor_texts(frame, 3)
    factors = churn_explainer.top_factors(frame, 3)
    for text, row in zip(texts, factors, strict=True):
        parts = text.split("; ")
        assert len(parts) == len(row)
        for part, f in zip(parts, row, strict=True):
            assert part.startswith(f"{f.feature}=") and part.endswith(f" {f.contribution:+.2f}")
    everything = churn_explainer.top_factor_texts(frame.head(1), len(churn.FEATURES))
    assert "total_charges=missing" in everything[0] and "contract=" in everything[0]


def test_factors_survive_the_json_hop() -> None:
    for value in (True, False, 0, 2, 2.5, "Two year", None):
        factor = Factor(feature="x", value=value, direction="raises", contribution=0.5)
        back = Factor.model_validate_json(factor.model_dump_json())
        assert back == factor and type(back.value) is type(value)


def test_non_linear_pipelines_are_refused(credit_data) -> None:
    segments = credit_training.build_segment_pipeline(3, 0).fit(credit_data.features)
    with pytest.raises(NotExplainable, match="KMeans"):
        LinearExplainer.from_pipeline(segments, credit_data.features)
    explainer, reason = explain.explainer_for(segments, credit_data.features)
    assert explainer is None and "KMeans" in reason
    assert isinstance(NotExplainable("x"), ValueError)


def test_multiclass_logistic_is_refused(credit_data) -> None:
    target = np.arange(len(credit_data.features)) % 3
    pipeline = credit_training.build_approval_pipeline(1.0, 0).fit(credit_data.features, target)
    with pytest.raises(NotExplainable, match="3 classes"):
        LinearExplainer.from_pipeline(pipeline, credit_data.features)


def test_a_transformer_that_adds_columns_is_refused(credit_data) -> None:
    frame = credit_data.features.copy()
    frame.loc[:5, "age"] = np.nan
    preprocess = ColumnTransformer(
        [
            ("impute", SimpleImputer(add_indicator=True), ["age"]),
            ("rest", "passthrough", [c for c in credit.FEATURES if c != "age"]),
        ]
    )
    pipeline = Pipeline(
        [("preprocess", preprocess), ("classifier", LogisticRegression(max_iter=1000))]
    )
    pipeline.fit(frame, credit_data.target)
    with pytest.raises(NotExplainable, match="'impute'"):
        LinearExplainer.from_pipeline(pipeline, frame)


def test_reference_without_the_features_is_refused(credit_model, credit_data) -> None:
    with pytest.raises(NotExplainable, match="income"):
        LinearExplainer.from_pipeline(credit_model, credit_data.features.drop(columns="income"))
    with pytest.raises(NotExplainable, match="empty"):
        LinearExplainer.from_pipeline(credit_model, credit_data.features.head(0))


def test_a_fitted_kmeans_on_its_own_is_refused(credit_data) -> None:
    with pytest.raises(NotExplainable, match="pipeline"):
        LinearExplainer.from_pipeline(
            KMeans(2, n_init=1).fit(credit_data.features), credit_data.features
        )


def test_extra_reference_columns_are_ignored(credit_model, credit_data) -> None:
    reference = credit_data.features.assign(card=credit_data.target, rownames="x")
    explainer = LinearExplainer.from_pipeline(credit_model, reference)
    assert explainer.features == credit.FEATURES
    assert explainer.reference_rows == len(reference)
    applicants = [credit.Applicant.model_validate(APPLICANT)]
    assert explainer.contributions(credit.columns(applicants)).shape == (1, 9)
    assert fastpath.compile_pipeline(credit_model)[0] is not None and explainer.path == "fast"


def test_a_stored_parquet_evaluation_set_is_a_reference(churn_model, churn_data, tmp_path) -> None:
    # What serving loads: evaluation/holdout.parquet, features plus the target column.
    path = tmp_path / "holdout.parquet"
    churn_data.features.assign(churn=churn_data.target).to_parquet(path)
    stored = pd.read_parquet(path)
    explainer = LinearExplainer.from_pipeline(churn_model, stored)
    assert explainer.path == "fast" and explainer.features == churn.FEATURES
    _assert_additive(explainer, churn_model, _tricky(churn_data.features))


def test_a_reference_with_non_finite_values_is_refused(credit_model, credit_data) -> None:
    reference = credit_data.features.copy()
    reference.loc[0, "age"] = np.nan  # the credit pipeline does not impute
    with pytest.raises(NotExplainable, match="non-finite"):
        LinearExplainer.from_pipeline(credit_model, reference)


@pytest.mark.parametrize("per_direction", [0, 1, 2, 4])
def test_per_direction_keeps_the_strongest_each_way(
    churn_explainer, churn_data, per_direction
) -> None:
    frame = churn_data.features.head(100)
    everything = churn_explainer.top_factors(frame, len(churn.FEATURES))
    limited = churn_explainer.top_factors(frame, len(churn.FEATURES), per_direction=per_direction)
    for full, some in zip(everything, limited, strict=True):
        expected = [
            f
            for f in full
            if [g for g in full if g.direction == f.direction].index(f) < per_direction
        ]
        assert some == expected
