"""The buffered writer: rows land in bulk, failures are retried without loss, close drains."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from models import churn
from persistence import migrate
from persistence.db import make_engine
from persistence.tables import predictions
from persistence.writer import (
    COLUMNS,
    PredictionBlock,
    PredictionWriter,
    prediction_block,
    record_columns,
)
from tests.unit.models.test_churn import SNAKE


def _rows(n: int, request_id: str = "r") -> PredictionBlock:
    """`n` predictions of one request: input `i` is the row number."""
    return prediction_block(
        model_name="churn",
        request_id=request_id,
        source="api",
        inputs={"i": list(range(n))},
        outputs={
            "id": [str(i) for i in range(n)],
            "p": [0.5] * n,
            "band": ["medium"] * n,
            "model_version": ["1"] * n,
        },
        entity_field="id",
        score_field="p",
        label_field="band",
        latency_ms=1.0,
    )


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


def _block_for_one_customer() -> PredictionBlock:
    customer = churn.Customer.model_validate(SNAKE)
    answer = churn.ChurnPrediction(
        customer_id="7590-VHVEG",
        churn_probability=0.7,
        churn=True,
        risk_band="high",
        model_version="3",
    )
    return prediction_block(
        model_name="churn",
        request_id="abc",
        source="file",
        inputs=record_columns([customer]),
        outputs=record_columns([answer]),
        entity_field="customer_id",
        score_field="churn_probability",
        label_field="risk_band",
        latency_ms=2.5,
    )


def _written(tmp_path: Path, block: PredictionBlock) -> list[dict[str, Any]]:
    """The block written through the writer to SQLite and read back through SQLAlchemy."""
    url = _database(tmp_path)
    writer = PredictionWriter(lambda: make_engine(url), flush_interval_s=0.01)
    writer.start()
    writer.submit(block)
    writer.close()
    with make_engine(url).connect() as conn:
        return [dict(row._mapping) for row in conn.execute(select(predictions))]


def test_a_block_pairs_inputs_and_outputs(tmp_path: Path) -> None:
    block = _block_for_one_customer()
    [row] = _written(tmp_path, block)
    assert str(row["id"]) == block.ids[0] and row["request_id"] == "abc"
    assert row["model_version"] == "3" and row["entity_id"] == "7590-VHVEG"
    assert row["model_versions"] == {"churn": "3"}
    assert row["score"] == 0.7 and row["label"] == "high" and row["source"] == "file"
    assert row["inputs"] == churn.Customer.model_validate(SNAKE).model_dump(mode="json")
    assert row["outputs"]["churn"] is True and row["latency_ms"] == 2.5
    assert row["created_at"].replace(tzinfo=UTC) == block.created_at


def test_copy_rows_carry_each_document_as_json_text() -> None:
    block = _block_for_one_customer()
    [as_copy] = block.copy_rows()
    by_name = dict(zip(COLUMNS, as_copy, strict=True))
    assert json.loads(by_name["inputs"]) == churn.Customer.model_validate(SNAKE).model_dump(
        mode="json"
    )
    assert json.loads(by_name["model_versions"]) == {"churn": "3"}
    assert by_name["score"] == 0.7 and by_name["label"] == "high"


def test_several_versions_fill_model_version_from_the_primary_model(tmp_path: Path) -> None:
    versions = {"credit-segment": "2", "credit-approval": "5"}
    block = prediction_block(
        model_name="credit-evaluation",
        primary_model="credit-approval",
        request_id="r",
        source="api",
        inputs={"age": [30.0]},
        outputs={"eligible": [True], "model_versions": [versions]},
        entity_field="applicant_id",
        score_field="approval_probability",
        label_field="eligible",
        latency_ms=1.0,
    )
    [row] = _written(tmp_path, block)
    assert row["model_version"] == "5" and row["model_versions"] == versions
    assert row["label"] == "True" and row["entity_id"] is None and row["score"] is None


def test_rows_must_pair_up() -> None:
    with pytest.raises(ValueError, match="rows"):
        prediction_block(
            model_name="churn",
            request_id="r",
            source="api",
            inputs={"i": [1, 2]},
            outputs={"p": [0.5], "model_version": ["1"]},
            entity_field="id",
            score_field="p",
            label_field="band",
            latency_ms=1.0,
        )


def test_a_block_that_cannot_be_encoded_does_not_hold_back_the_others(tmp_path: Path) -> None:
    url = _database(tmp_path)
    writer = PredictionWriter(lambda: make_engine(url), flush_interval_s=0.01)
    broken = dataclasses.replace(_rows(3, request_id="broken"), inputs={"i": [object()] * 3})
    writer.start()
    writer.submit(_rows(5, request_id="before"))
    writer.submit(broken)
    writer.submit(_rows(4, request_id="after"))
    assert writer.flush(10)
    writer.close()
    assert _count(make_engine(url)) == 9
    assert writer.stats.rows_unwritable == 3 and writer.stats.rows_pending == 0
