"""Behavioural checks of the churn model trained on the full default data."""

from __future__ import annotations

import pytest

from models import churn, registry
from tests.support.models import mlflow_settings
from tests.support.records import SNAKE
from training import churn as churn_training
from training.data import load_churn


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, registry.ServedModel]:
    settings = mlflow_settings(tmp_path_factory.mktemp("quality"))
    result = churn_training.train(load_churn(), settings=settings)
    return result, registry.load("churn", "champion", settings)


@pytest.mark.slow
def test_holdout_roc_auc_meets_the_bar(
    full_run: tuple[churn_training.TrainingResult, object],
) -> None:
    result, _ = full_run
    assert result.metrics["holdout_roc_auc"] >= 0.84
    assert result.metrics["cv_roc_auc_mean"] >= 0.84


def _probability(served: registry.ServedModel, **changes: object) -> float:
    customer = churn.Customer.model_validate({**SNAKE, **changes})
    return churn.score(served.predictor, [customer], served.threshold, served.version)[
        0
    ].churn_probability


@pytest.mark.slow
def test_long_contracts_lower_churn_risk(full_run: tuple[object, registry.ServedModel]) -> None:
    _, served = full_run
    monthly = _probability(served, contract="Month-to-month")
    assert _probability(served, contract="Two year") < monthly


@pytest.mark.slow
def test_longer_tenure_lowers_churn_risk(full_run: tuple[object, registry.ServedModel]) -> None:
    _, served = full_run
    assert _probability(served, tenure=60, total_charges=1800) < _probability(served, tenure=1)


@pytest.mark.slow
def test_missing_total_charges_is_scored(full_run: tuple[object, registry.ServedModel]) -> None:
    _, served = full_run
    assert 0 < _probability(served, tenure=0, total_charges=None) < 1
