"""The churn API through a real `bentoml serve` process, with real HTTP clients."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa
import pytest
from sqlalchemy import select

from persistence.db import make_engine
from persistence.tables import predictions
from tests.support.predictions import wait_for_rows
from tests.support.records import IBM, SNAKE
from tests.support.server import Server

pytestmark = pytest.mark.integration


def test_single_customer_is_scored_and_persisted(sqlite_server: Server) -> None:
    response = httpx.post(f"{sqlite_server.url}/churn/predict", json={"customers": [SNAKE]})
    assert response.status_code == 200, response.text
    [answer] = response.json()
    assert answer["customer_id"] == "7590-VHVEG"
    assert 0 <= answer["churn_probability"] <= 1
    assert answer["risk_band"] in {"low", "medium", "high"}
    assert answer["model_version"] == "1"
    request_id = response.headers["x-request-id"]
    assert wait_for_rows(sqlite_server.database_url, 1, [request_id]) == 1
    engine = make_engine(sqlite_server.database_url)
    with engine.connect() as conn:
        row = conn.execute(select(predictions).where(predictions.c.request_id == request_id)).one()
    assert row.model_name == "churn" and row.model_version == "1" and row.source == "api"
    assert row.entity_id == "7590-VHVEG" and row.score == answer["churn_probability"]
    assert row.inputs["tenure"] == 1 and row.outputs["risk_band"] == answer["risk_band"]
    assert row.latency_ms > 0


def test_many_customers_keep_their_order(sqlite_server: Server) -> None:
    customers = [{**SNAKE, "customer_id": f"c{i}", "tenure": i} for i in range(50)]
    response = httpx.post(f"{sqlite_server.url}/churn/predict", json={"customers": customers})
    assert response.status_code == 200
    assert [a["customer_id"] for a in response.json()] == [f"c{i}" for i in range(50)]


def test_original_ibm_names_are_accepted(sqlite_server: Server) -> None:
    by_ibm = httpx.post(f"{sqlite_server.url}/churn/predict", json={"customers": [IBM]}).json()
    by_snake = httpx.post(f"{sqlite_server.url}/churn/predict", json={"customers": [SNAKE]}).json()
    assert by_ibm == by_snake


def _churn_model(server: Server) -> dict[str, Any]:
    models = httpx.get(f"{server.url}/models").json()["models"]
    return next(m for m in models if m["name"] == "churn")


def test_concurrent_requests_are_batched_together(sqlite_server: Server) -> None:
    before = _churn_model(sqlite_server)

    def one(i: int) -> httpx.Response:
        body = {"customers": [{**SNAKE, "customer_id": f"b{i}"}]}
        return httpx.post(f"{sqlite_server.url}/churn/predict", json=body, timeout=30)

    with ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(one, range(128)))
    assert [r.status_code for r in responses] == [200] * 128
    assert [r.json()[0]["customer_id"] for r in responses] == [f"b{i}" for i in range(128)]
    after = _churn_model(sqlite_server)
    # The API worker coalesced the 128 requests into fewer model-service calls ...
    calls = after["batching"]["calls"] - before["batching"]["calls"]
    assert after["batching"]["requests"] - before["batching"]["requests"] == 128
    assert calls < 128, "no two requests were ever scored in one batch"
    assert after["batching"]["largest_batch"] > 1
    # ... and the model worker really received them as those batches.
    worker_calls = after["model_worker_calls"]["calls"] - before["model_worker_calls"]["calls"]
    assert worker_calls == calls
    assert after["model_worker_calls"]["rows"] - before["model_worker_calls"]["rows"] == 128


@pytest.mark.parametrize(
    ("customer", "field"),
    [
        ({**SNAKE, "tenure": -3}, "tenure"),
        ({**SNAKE, "contract": "Forever"}, "contract"),
        ({**SNAKE, "monthly_charges": "lots"}, "monthly_charges"),
        ({k: v for k, v in SNAKE.items() if k != "gender"}, "gender"),
        ({**SNAKE, "tenur": 3}, "tenur"),
    ],
)
def test_bad_customer_is_400_naming_the_field(
    sqlite_server: Server, customer: dict[str, object], field: str
) -> None:
    response = httpx.post(f"{sqlite_server.url}/churn/predict", json={"customers": [customer]})
    assert response.status_code == 400
    locations = [tuple(d["loc"]) for d in response.json()["detail"]]
    assert locations == [("customers", 0, field)]


@pytest.mark.parametrize(
    "body", [{"customers": []}, {}, {"customer": [SNAKE]}, {"customers": SNAKE}]
)
def test_malformed_bodies_are_400(sqlite_server: Server, body: dict[str, object]) -> None:
    response = httpx.post(f"{sqlite_server.url}/churn/predict", json=body)
    assert response.status_code == 400
    assert response.json()["detail"], response.text


def test_invalid_json_is_a_4xx(sqlite_server: Server) -> None:
    response = httpx.post(
        f"{sqlite_server.url}/churn/predict",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert 400 <= response.status_code < 500


def test_too_many_customers_is_413_with_the_limit(sqlite_server: Server) -> None:
    body = {"customers": [SNAKE] * 1001}
    response = httpx.post(f"{sqlite_server.url}/churn/predict", json=body, timeout=30)
    assert response.status_code == 413
    assert "limit of 1000" in response.json()["error"]


def test_ibm_csv_file_comes_back_scored(sqlite_server: Server, telco_csv: Path) -> None:
    with telco_csv.open("rb") as handle:
        response = httpx.post(
            f"{sqlite_server.url}/churn/predict_file",
            files={"file": ("Telco-Customer-Churn.csv", handle, "text/csv")},
            timeout=120,
        )
    assert response.status_code == 200, response.text[:2000]
    assert response.headers["content-type"].startswith("text/csv")
    original = pd.read_csv(telco_csv, dtype=str, keep_default_na=False)
    scored = pd.read_csv(io.BytesIO(response.content), dtype=str, keep_default_na=False)
    assert len(scored) == 7043
    assert list(scored.columns) == [
        *original.columns,
        "churn_probability",
        "churn",
        "risk_band",
        "model_version",
        "top_factors",
    ]
    pd.testing.assert_frame_equal(scored[original.columns], original)
    # Up to three "feature=value +0.00" entries per row, the strongest first.
    first = scored["top_factors"].iloc[0].split("; ")
    assert 1 <= len(first) <= 3 and all("=" in f for f in first)
    assert set(scored["risk_band"]) <= {"low", "medium", "high"}
    assert set(scored["model_version"]) == {"1"}
    probabilities = scored["churn_probability"].astype(float)
    assert probabilities.between(0, 1).all()
    request_id = response.headers["x-request-id"]
    assert wait_for_rows(sqlite_server.database_url, 7043, [request_id]) == 7043


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_parquet_and_arrow_come_back_in_kind(sqlite_server: Server, fmt: str) -> None:
    frame = pd.DataFrame([{**IBM, "TotalCharges": 29.85, "tenure": 1}] * 20)
    frame["customerID"] = [f"id-{i}" for i in range(20)]
    sink = io.BytesIO()
    if fmt == "parquet":
        frame.to_parquet(sink)
    else:
        with pa.ipc.new_file(sink, pa.Schema.from_pandas(frame)) as writer:
            writer.write_table(pa.Table.from_pandas(frame))
    response = httpx.post(
        f"{sqlite_server.url}/churn/predict_file", files={"file": (f"x.{fmt}", sink.getvalue())}
    )
    assert response.status_code == 200, response.text
    if fmt == "parquet":
        scored = pd.read_parquet(io.BytesIO(response.content))
    else:
        scored = pa.ipc.open_file(io.BytesIO(response.content)).read_all().to_pandas()
    assert scored["customerID"].tolist() == frame["customerID"].tolist()
    assert scored["churn"].dtype == bool
    assert scored["churn_probability"].between(0, 1).all()


def test_bad_file_row_is_400_naming_row_and_field(sqlite_server: Server) -> None:
    frame = pd.DataFrame([IBM] * 5)
    frame.loc[3, "MonthlyCharges"] = "n/a"
    response = httpx.post(
        f"{sqlite_server.url}/churn/predict_file",
        files={"file": ("bad.csv", frame.to_csv(index=False).encode())},
    )
    assert response.status_code == 400
    assert response.json()["detail"] == [
        {
            "row": 4,
            "field": "MonthlyCharges",
            "problem": "Input should be a valid number, unable to parse string as a number",
        }
    ]


def test_binary_garbage_file_is_415(sqlite_server: Server) -> None:
    response = httpx.post(
        f"{sqlite_server.url}/churn/predict_file",
        files={"file": ("scores.csv", b"\x00\xff\xfe\x80garbage")},
    )
    assert response.status_code == 415
    assert "not a CSV" in response.json()["error"]


def test_models_lists_the_served_version(sqlite_server: Server) -> None:
    models = httpx.get(f"{sqlite_server.url}/models").json()["models"]
    [model] = [m for m in models if m["name"] == "churn"]
    assert model["name"] == "churn" and model["alias"] == "champion" and model["version"] == "1"
    assert len(model["run_id"]) == 32
    assert {"holdout_roc_auc", "cv_roc_auc_mean"} <= set(model["metrics"])
    assert model["inference_path"] == "fast", model["inference_note"]
    assert model["loaded_at"]


def test_builtins_answer(sqlite_server: Server) -> None:
    assert httpx.get(f"{sqlite_server.url}/livez").status_code == 200
    assert httpx.get(f"{sqlite_server.url}/readyz").status_code == 200
    spec = httpx.get(f"{sqlite_server.url}/docs.json").json()
    assert {"/churn/predict", "/churn/predict_file", "/models"} <= set(spec["paths"])
    assert "bentoml_" in httpx.get(f"{sqlite_server.url}/metrics").text
