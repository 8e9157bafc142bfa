"""A family declared in the test tree (`tests/support/families.py`) is served end to end by the
generic core, keys included; an incomplete declaration stops the start with one line."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from sqlalchemy import select

from persistence.db import make_engine
from persistence.tables import predictions
from serving.access import hash_key
from serving.keys import new_key
from tests.support.families import TOY_MODEL, train_toy
from tests.support.models import mlflow_env, mlflow_settings
from tests.support.predictions import wait_for_rows
from tests.support.server import ROOT, Server, _bentoml, serve, server_env

pytestmark = [pytest.mark.integration]

USER, ADMIN = new_key(), new_key()
POINTS = [{"point_id": "p1", "x": -3.0, "y": 4.0}, {"point_id": "p2", "x": 5.0, "y": -5.0}]


@pytest.fixture(scope="module")
def toy_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("toy")
    settings = mlflow_settings(root)
    assert train_toy(settings) == "1"
    return {
        **mlflow_env(settings),
        "CLIENTINSIGHT_CATALOG": "tests.support.families:CATALOG",
        "DATABASE_URL": f"sqlite:///{root / 'predictions.db'}",
    }


@pytest.fixture(scope="module")
def toy(toy_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("toy-open")
    with serve(toy_env, root / "server.log") as server:
        yield server


def test_the_toy_family_is_served_persisted_and_listed(toy: Server) -> None:
    response = httpx.post(f"{toy.url}/toy/predict", json={"points": POINTS})
    assert response.status_code == 200, response.text
    above, below = response.json()
    assert (above["point_id"], above["above"]) == ("p1", True)
    assert (below["point_id"], below["above"]) == ("p2", False)
    assert above["model_version"] == "1"
    request_id = response.headers["x-request-id"]
    assert wait_for_rows(toy.database_url, 2, [request_id]) == 2
    with make_engine(toy.database_url).connect() as conn:
        rows = conn.execute(select(predictions).where(predictions.c.request_id == request_id)).all()
    assert {(r.model_name, r.entity_id, r.label) for r in rows} == {
        ("toy", "p1", "True"),
        ("toy", "p2", "False"),
    }
    [model] = httpx.get(f"{toy.url}/models").json()["models"]
    assert (model["name"], model["version"], model["alias"]) == (TOY_MODEL, "1", "champion")
    assert model["inference_path"] == "fast"
    paths = httpx.get(f"{toy.url}/docs.json").json()["paths"]
    assert {"/toy/predict", "/toy/predict_file"} <= set(paths)
    assert not any(p.startswith(("/churn", "/credit", "/balance")) for p in paths)


def test_the_toy_file_route_answers_in_the_uploads_format(toy: Server) -> None:
    frame = pd.DataFrame(POINTS)
    response = httpx.post(
        f"{toy.url}/toy/predict_file", files={"file": ("p.csv", frame.to_csv(index=False))}
    )
    assert response.status_code == 200, response.text
    answer = pd.read_csv(io.BytesIO(response.content))
    assert list(answer.columns) == ["point_id", "x", "y", "probability", "above", "model_version"]
    assert answer["above"].tolist() == [True, False]
    assert 'filename="toy_scores.csv"' in response.headers["content-disposition"]


def test_the_contracts_errors_name_the_field(toy: Server) -> None:
    response = httpx.post(
        f"{toy.url}/toy/predict", json={"points": [{**POINTS[0], "x": 1e9, "z": 1}]}
    )
    assert response.status_code == 400
    locations = {tuple(d["loc"]) for d in response.json()["detail"]}
    assert locations == {("points", 0, "x"), ("points", 0, "z")}


def test_every_route_of_a_new_family_needs_a_key(toy_env: dict[str, str], tmp_path: Path) -> None:
    env = {
        **toy_env,
        "CLIENTINSIGHT_ENV": "production",
        "CLIENTINSIGHT_API_KEYS": f"crm:{hash_key(USER)}",
        "CLIENTINSIGHT_ADMIN_KEYS": f"ops:{hash_key(ADMIN)}",
    }
    csv = pd.DataFrame(POINTS).to_csv(index=False)
    with serve(env, tmp_path / "server.log", admin_key=ADMIN) as server:
        for path, kwargs in (
            ("/toy/predict", {"json": {"points": POINTS}}),
            ("/toy/predict_file", {"files": {"file": ("p.csv", csv)}}),
        ):
            anonymous = httpx.post(f"{server.url}{path}", **kwargs)
            assert anonymous.status_code == 401, (path, anonymous.text)
            keyed = httpx.post(
                f"{server.url}{path}",
                headers={"X-API-Key": USER},
                **kwargs,
            )
            assert keyed.status_code == 200, (path, keyed.text)


def test_an_incomplete_declaration_stops_the_start_with_one_line(
    toy_env: dict[str, str], tmp_path: Path
) -> None:
    env = server_env(
        {**toy_env, "CLIENTINSIGHT_CATALOG": "tests.support.families:BROKEN"}, tmp_path
    )
    done = subprocess.run(
        [_bentoml(), "serve", "service:ClientInsight", "--port", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    [line] = (done.stdout + done.stderr).strip().splitlines()
    assert line == (
        "clientinsight: cannot start: model family 'toy': gates: no promotion gate for 'toy-model'"
    )
