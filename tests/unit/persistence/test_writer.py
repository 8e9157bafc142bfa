"""The buffered writer: rows land in bulk, failures are retried without loss, close drains."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, func, select

from models import churn
from persistence import migrate
from persistence.db import make_engine
from persistence.tables import predictions
from persistence.writer import PredictionWriter, prediction_row, rows_for
from tests.unit.models.test_churn import SNAKE


def _rows(n: int, request_id: str = "r") -> list[dict[str, object]]:
    return [
        prediction_row(
            request_id=request_id,
            model_name="churn",
            model_version="1",
            source="api",
            entity_id=str(i),
            score=0.5,
            label="medium",
            inputs={"i": i},
            outputs={"p": 0.5},
            latency_ms=1.0,
        )
        for i in range(n)
    ]


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(predictions)).scalar_one())


def _database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'db' / 'p.db'}"
    migrate.upgrade(url)
    return url


def test_rows_are_written_in_bulk(tmp_path: Path) -> None:
    url = _database(tmp_path)
    writer = PredictionWriter(lambda: make_engine(url), batch_rows=50, flush_interval_s=0.05)
    writer.start()
    for i in range(10):
        writer.submit(_rows(30, request_id=f"r{i}"))
    assert writer.flush(10)
    writer.close()
    assert _count(make_engine(url)) == 300
    assert writer.stats.rows_written == 300 and writer.stats.rows_pending == 0


def test_a_failing_database_delays_rows_but_loses_none(tmp_path: Path) -> None:
    url = _database(tmp_path)
    attempts = {"n": 0}

    def flaky_engine() -> Engine:
        attempts["n"] += 1
        if attempts["n"] <= 2:
            raise ConnectionError("database is down")
        return make_engine(url)

    writer = PredictionWriter(flaky_engine, flush_interval_s=0.01, max_backoff_s=0.05)
    writer.start()
    writer.submit(_rows(25))
    assert writer.flush(10)
    writer.close()
    assert writer.stats.write_failures == 2
    assert _count(make_engine(url)) == 25


def test_close_drains_what_was_queued(tmp_path: Path) -> None:
    url = _database(tmp_path)
    writer = PredictionWriter(lambda: make_engine(url), flush_interval_s=5)
    writer.start()
    writer.submit(_rows(7))
    writer.close()
    assert _count(make_engine(url)) == 7


def test_rows_for_pairs_inputs_and_outputs() -> None:
    customer = churn.Customer.model_validate(SNAKE)
    answer = churn.ChurnPrediction(
        customer_id="7590-VHVEG",
        churn_probability=0.7,
        churn=True,
        risk_band="high",
        model_version="3",
    )
    [row] = rows_for(
        model_name="churn",
        request_id="abc",
        source="file",
        inputs=[customer],
        outputs=[answer],
        entity_field="customer_id",
        score_field="churn_probability",
        label_field="risk_band",
        latency_ms=2.5,
    )
    assert row["model_version"] == "3" and row["entity_id"] == "7590-VHVEG"
    assert row["score"] == 0.7 and row["label"] == "high" and row["source"] == "file"
    assert row["inputs"]["contract"] == "Month-to-month"
    assert row["outputs"]["churn"] is True
