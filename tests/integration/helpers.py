"""Helpers shared by the integration tests."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from persistence.db import make_engine
from persistence.tables import predictions


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
