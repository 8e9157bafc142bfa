"""The history queries on a migrated SQLite database of known rows (PostgreSQL: the
integration test `tests/integration/test_graphql.py`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, insert

from persistence import history
from persistence.db import make_engine
from persistence.tables import predictions
from tests.support.history import T0, TENURE, churn_row, seed
from tests.support.predictions import sqlite_database

WEEK = (T0 - timedelta(days=7), T0 + timedelta(hours=1))


@pytest.fixture
def connection(tmp_path: Path) -> Iterator[Connection]:
    engine = make_engine(sqlite_database(tmp_path))
    seed(engine)
    with engine.connect() as conn:
        yield conn
    engine.dispose()


def test_pages_follow_the_cursor_newest_first_without_gaps(connection: Connection) -> None:
    filters = history.Filters(model_names=("churn",))
    seen: list[uuid.UUID] = []
    after = None
    while True:
        rows = history.page(connection, filters=filters, first=5, after=after)
        seen.extend(row.id for row in rows[:5])
        if len(rows) <= 5:
            break
        after = history.Cursor(rows[4].created_at, rows[4].id)
    assert seen == [uuid.UUID(int=i + 1) for i in range(12)]


def test_a_cursor_is_stable_when_newer_rows_arrive(connection: Connection) -> None:
    filters = history.Filters(model_names=("churn",))
    first = history.page(connection, filters=filters, first=3)
    after = history.Cursor(first[2].created_at, first[2].id)
    connection.execute(
        insert(predictions), [churn_row(50, id=uuid.UUID(int=999), created_at=T0 + timedelta(1))]
    )
    second = history.page(connection, filters=filters, first=3, after=after)
    assert [row.id for row in second[:3]] == [uuid.UUID(int=i) for i in (4, 5, 6)]


def test_filters_combine(connection: Connection) -> None:
    def ids(**given: object) -> list[int]:
        rows = history.page(connection, filters=history.Filters(**given), first=100)  # type: ignore[arg-type]
        return sorted(row.id.int - 1 for row in rows)

    assert ids(model_names=("churn",), label="high") == [0, 2, 4, 6, 8, 10]
    assert ids(model_names=("churn",), model_version="1", label="low") == [1, 3, 5]
    assert ids(protocol="oip-rest") == [3]
    assert ids(entity_id="c7") == [7]
    assert ids(request_id="req-2") == [2]
    assert ids(since=T0 - timedelta(minutes=2), model_names=("churn",)) == [0, 1, 2]
    assert ids(until=T0 - timedelta(minutes=10), model_names=("churn",)) == [11]
    assert ids(documents=(("inputs", "contract", "One year"),)) == [1, 4, 7, 10]
    assert ids(documents=(("outputs", "segment", "1"),)) == [101, 103, 105]
    assert ids(role="challenger") == [9999]
    assert len(ids(role=None)) == 12 + 6 + 1


def test_shadows_are_the_challenger_rows_of_each_prediction(connection: Connection) -> None:
    found = history.shadows(connection, ids=[uuid.UUID(int=1), uuid.UUID(int=2)])
    assert [row.model_version for row in found[uuid.UUID(int=1)]] == ["3"]
    assert found[uuid.UUID(int=2)] == []
    assert history.shadows(connection, ids=[]) == {}


def test_groups_count_mean_and_rate_per_band(connection: Connection) -> None:
    groups = history.groups(connection, since=WEEK[0], until=WEEK[1], **TENURE)
    # tenure is 5 * i: 0, 5, 10 | 15, 20 | 25 .. 45 | 50, 55; churns when i is even.
    assert [(g.value, g.count, g.rate) for g in groups] == [
        ("<12", 3, pytest.approx(2 / 3)),
        ("12-24", 2, 0.5),
        ("24-48", 5, 0.4),
        (">=48", 2, 0.5),
    ]
    assert groups[0].mean_score == pytest.approx((0.8 + 0.2 + 0.8) / 3)


def test_a_row_without_the_banded_value_is_in_no_band(connection: Connection) -> None:
    """SQL's CASE sends NULL to its ELSE: a row without `tenure` counted as `>=48`."""
    row = churn_row(12, id=uuid.UUID(int=998))
    del row["inputs"]["tenure"]
    connection.execute(insert(predictions), [row])
    groups = history.groups(connection, since=WEEK[0], until=WEEK[1], **TENURE)
    assert [(g.value, g.count) for g in groups] == [
        ("<12", 3),
        ("12-24", 2),
        ("24-48", 5),
        (">=48", 2),
        (None, 1),
    ]


def test_groups_by_value_and_without_rate(connection: Connection) -> None:
    by_segment = history.groups(
        connection,
        model_name="credit-evaluation",
        document="outputs",
        key="segment",
        rate_key="eligible",
        since=WEEK[0],
        until=WEEK[1],
    )
    # eligible unless i % 3 == 0: segment 0 holds 0, 2, 4; segment 1 holds 1, 3, 5.
    assert [(g.value, g.count, g.rate) for g in by_segment] == [
        ("0", 3, pytest.approx(2 / 3)),
        ("1", 3, pytest.approx(2 / 3)),
    ]
    contracts = history.groups(
        connection,
        model_name="churn",
        document="inputs",
        key="contract",
        since=WEEK[0],
        until=WEEK[1],
    )
    assert [(g.value, g.count, g.rate) for g in contracts] == [
        ("Month-to-month", 4, None),
        ("One year", 4, None),
        ("Two year", 4, None),
    ]


def test_groups_keep_to_the_time_range_and_champions(connection: Connection) -> None:
    groups = history.groups(
        connection,
        model_name="churn",
        document="inputs",
        key="payment_method",
        since=T0 - timedelta(minutes=1),
        until=T0 + timedelta(minutes=1),
    )
    # rows 0 and 1; row 0's challenger shadow is not counted.
    assert [(g.value, g.count) for g in groups] == [("Electronic check", 2)]


def test_unknown_documents_and_bad_bands_are_refused(connection: Connection) -> None:
    with pytest.raises(ValueError, match="unknown document"):
        history.groups(
            connection, model_name="churn", document="secrets", key="k", since=T0, until=T0
        )
    with pytest.raises(ValueError, match="one band more"):
        history.groups(
            connection,
            model_name="churn",
            document="inputs",
            key="tenure",
            bands=(1, 2),
            band_names=("a",),
            since=T0,
            until=T0,
        )


def test_hourly_volume_and_latency_per_version(connection: Connection) -> None:
    hours = history.hourly(connection, since=WEEK[0], until=WEEK[1], model_names=("churn",))
    # row i is i minutes before 12:00 with latency 10 + i; version 1 for i < 6.
    assert [(h.hour.hour, h.model_version, h.count) for h in hours] == [
        (11, "1", 5),
        (11, "2", 6),
        (12, "1", 1),
    ]
    assert hours[1].mean_latency_ms == pytest.approx(sum(10 + i for i in range(6, 12)) / 6)
    assert hours[1].max_latency_ms == 21
    assert hours[0].hour.tzinfo is not None
