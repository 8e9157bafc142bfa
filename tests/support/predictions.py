"""The predictions table in tests: a migrated SQLite database, blocks of rows, counts, and
waiting for the asynchronous writer."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import Engine, func, select

from persistence import migrate
from persistence.db import make_engine
from persistence.tables import predictions
from persistence.writer import PredictionBlock, prediction_block
from tests.support.processes import failures_at_once
from tests.support.records import recording


def migrated_at_once(url: str) -> list[str]:
    """Eight processes upgrading `url` at the same moment, as API workers do at start: the
    stderr of each that failed."""
    return failures_at_once(
        "from persistence import migrate\nmigrate.upgrade(sys.argv[2])\n", url, processes=8
    )


def sqlite_database(tmp_path: Path) -> str:
    """The URL of a new SQLite database under `tmp_path`, migrated to the latest schema."""
    url = f"sqlite:///{tmp_path / 'db' / 'p.db'}"
    migrate.upgrade(url)
    return url


def numbered_block(n: int, request_id: str = "r") -> PredictionBlock:
    """`n` predictions of one request: input `i` is the row number."""
    return prediction_block(
        recording=recording(
            "churn",
            entity_field="id",
            score_field="p",
            label_field="band",
        ),
        request_id=request_id,
        source="api",
        inputs={"i": list(range(n))},
        outputs={
            "id": [str(i) for i in range(n)],
            "p": [0.5] * n,
            "band": ["medium"] * n,
            "model_version": ["1"] * n,
        },
        latency_ms=1.0,
    )


def count_rows(engine: Engine) -> int:
    """Rows in the predictions table."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(predictions)).scalar_one())


def wait_for_rows(
    database_url: str, expected: int, request_ids: list[str] | None = None, timeout: float = 20
) -> int:
    """Poll until the predictions table holds `expected` rows (of these requests, if given).

    The writer is asynchronous by design, so rows appear shortly after the responses.
    """
    query = select(func.count()).select_from(predictions)
    if request_ids is not None:
        query = query.where(predictions.c.request_id.in_(request_ids))
    engine = make_engine(database_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as conn:
                count = int(conn.execute(query).scalar_one())
            if count >= expected or time.monotonic() > deadline:
                return count
            time.sleep(0.1)
    finally:
        engine.dispose()
