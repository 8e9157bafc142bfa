"""Persistence against a real throwaway PostgreSQL: migrations, the writer, the whole service."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect, text

from models.settings import ModelSettings
from persistence import migrate
from persistence.db import make_engine
from persistence.writer import PredictionWriter
from tests.support.models import mlflow_env
from tests.support.postgres import Cluster
from tests.support.predictions import migrated_at_once, numbered_block, wait_for_rows
from tests.support.records import APPLICANT, SNAKE
from tests.support.server import Server, serve

pytestmark = [pytest.mark.postgres, pytest.mark.integration]


def test_migrators_starting_together_on_a_fresh_database_all_succeed(
    postgres: Cluster,
) -> None:
    """API workers (and pods) migrate at start; the advisory lock lets one at a time in."""
    url = postgres.create_database()
    assert migrated_at_once(url) == []
    engine = make_engine(url)
    assert "predictions" in inspect(engine).get_table_names()
    engine.dispose()


def test_migrations_upgrade_and_downgrade(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    migrate.upgrade(postgres_url)
    columns = {c["name"]: c for c in inspect(engine).get_columns("predictions")}
    assert str(columns["inputs"]["type"]) == "JSONB"
    assert {i["name"] for i in inspect(engine).get_indexes("predictions")} >= {
        "ix_predictions_request_id",
        "ix_predictions_model_created",
        "ix_predictions_entity_created",
        "ix_predictions_created",
        "ix_predictions_challenger",
    }
    assert columns["role"]["default"] == "'champion'::character varying"
    assert columns["shadow_of"]["nullable"]
    migrate.downgrade(postgres_url, "0003")
    columns = {c["name"]: c for c in inspect(engine).get_columns("predictions")}
    assert "role" not in columns and "shadow_of" not in columns
    assert "ix_predictions_challenger" not in {
        i["name"] for i in inspect(engine).get_indexes("predictions")
    }
    migrate.downgrade(postgres_url, "0002")
    indexes = {i["name"] for i in inspect(engine).get_indexes("predictions")}
    assert "ix_predictions_entity" in indexes and "ix_predictions_created" not in indexes
    migrate.downgrade(postgres_url, "base")
    assert "predictions" not in inspect(engine).get_table_names()
    migrate.upgrade(postgres_url)
    assert "predictions" in inspect(engine).get_table_names()
    engine.dispose()


def test_writer_bulk_inserts_jsonb_rows(postgres_url: str, tmp_path: Path) -> None:
    migrate.upgrade(postgres_url)
    writer = PredictionWriter(
        lambda: make_engine(postgres_url), journal_dir=tmp_path / "journal", batch_rows=100
    )
    writer.start()
    for i in range(5):
        writer.submit(numbered_block(250, request_id=f"req-{i}"))
    assert writer.flush(30)
    writer.close()
    engine = make_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from predictions")).scalar_one() == 1250
        # JSONB is queryable without parsing text.
        assert (
            conn.execute(
                text("select count(*) from predictions where (inputs->>'i')::int = 7")
            ).scalar_one()
            == 5
        )
    engine.dispose()


@pytest.fixture(scope="module")
def postgres_server(
    mlflow_store: ModelSettings, postgres: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    from tests.support.postgres import Cluster

    assert isinstance(postgres, Cluster)
    root = tmp_path_factory.mktemp("serve-postgres")
    env = {**mlflow_env(mlflow_store), "DATABASE_URL": postgres.create_database()}
    with serve(env, Path(root) / "server.log") as server:
        yield server


def test_every_prediction_lands_in_postgres(postgres_server: Server, telco_csv: Path) -> None:
    def one(i: int) -> httpx.Response:
        body = {"customers": [{**SNAKE, "customer_id": f"pg{i}"}]}
        return httpx.post(f"{postgres_server.url}/churn/predict", json=body, timeout=30)

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(one, range(64)))
    assert all(r.status_code == 200 for r in responses)
    with telco_csv.open("rb") as handle:
        file_response = httpx.post(
            f"{postgres_server.url}/churn/predict_file", files={"file": handle}, timeout=120
        )
    assert file_response.status_code == 200
    credit_response = httpx.post(
        f"{postgres_server.url}/credit/evaluate", json={"applicants": [APPLICANT]}, timeout=30
    )
    assert credit_response.status_code == 200
    request_ids = [r.headers["x-request-id"] for r in [*responses, file_response, credit_response]]
    assert wait_for_rows(postgres_server.database_url, 64 + 7043 + 1, request_ids) == 64 + 7044
    engine = make_engine(postgres_server.database_url)
    with engine.connect() as conn:
        by_source: dict[str, int] = dict(
            conn.execute(
                text(
                    "select source, count(*) from predictions where model_name = 'churn' "
                    "group by source"
                )
            ).all()
        )
        versions = conn.execute(text("select distinct model_version from predictions")).all()
        credit_versions = conn.execute(
            text(
                "select model_versions->>'credit-segment' from predictions "
                "where model_name = 'credit-evaluation'"
            )
        ).scalar_one()
    engine.dispose()
    assert by_source == {"api": 64, "file": 7043}
    assert versions == [("1",)]
    assert credit_versions == "1"


def test_shutdown_flushes_queued_rows(
    mlflow_store: ModelSettings, postgres: object, tmp_path: Path
) -> None:
    from tests.support.postgres import Cluster
    from tests.support.server import stop

    assert isinstance(postgres, Cluster)
    url = postgres.create_database()
    # A long flush interval: rows are still queued when SIGTERM arrives.
    env = {
        **mlflow_env(mlflow_store),
        "DATABASE_URL": url,
        "CLIENTINSIGHT_WRITER_FLUSH_INTERVAL_S": "30",
        "CLIENTINSIGHT_WRITER_BATCH_ROWS": "100000",
    }
    with serve(env, tmp_path / "server.log") as server:
        customers = [{**SNAKE, "customer_id": f"s{i}"} for i in range(40)]
        response = httpx.post(f"{server.url}/churn/predict", json={"customers": customers})
        assert response.status_code == 200
        stop(server.process)
    assert wait_for_rows(url, 40, timeout=5) == 40
