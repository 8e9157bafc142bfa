"""`/graphql` on a real PostgreSQL: the history queries and their indexes, and a real
`bentoml serve` whose predictions are read back with a history key (403 with a plain one)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, text

from models.settings import ModelSettings
from persistence import history, migrate
from persistence.db import make_engine
from persistence.tables import predictions
from persistence.writer import PredictionBlock, PredictionWriter, prediction_block
from serving.access import hash_key
from serving.keys import new_key
from tests.support.history import T0, TENURE, churn_row, seed
from tests.support.models import mlflow_env
from tests.support.postgres import Cluster
from tests.support.predictions import wait_for_rows
from tests.support.records import SNAKE, recording
from tests.support.server import Server, serve

pytestmark = [pytest.mark.postgres]

USER, HISTORY, ADMIN = new_key(), new_key(), new_key()
WEEK = (T0 - timedelta(days=7), T0 + timedelta(hours=1))


def test_history_queries_on_postgres(postgres_url: str) -> None:
    migrate.upgrade(postgres_url)
    engine = make_engine(postgres_url)
    seed(engine)
    with engine.connect() as connection:
        filters = history.Filters(model_names=("churn",))
        first = history.page(connection, filters=filters, first=5)
        after = history.Cursor(first[4].created_at, first[4].id)
        second = history.page(connection, filters=filters, first=5, after=after)
        assert [row.id.int for row in [*first[:5], *second[:5]]] == list(range(1, 11))
        segment = history.page(
            connection,
            filters=history.Filters(documents=(("outputs", "segment", "1"),)),
            first=10,
        )
        assert sorted(row.entity_id for row in segment) == ["a1", "a3", "a5"]
        bands = history.groups(
            connection,
            model_name="churn",
            document="inputs",
            key="tenure",
            bands=(12, 24, 48),
            band_names=("<12", "12-24", "24-48", ">=48"),
            rate_key="churn",
            since=WEEK[0],
            until=WEEK[1],
        )
        assert [(g.value, g.count) for g in bands] == [
            ("<12", 3),
            ("12-24", 2),
            ("24-48", 5),
            (">=48", 2),
        ]
        assert bands[2].rate == pytest.approx(0.4)
        students = history.groups(
            connection,
            model_name="churn",
            document="inputs",
            key="contract",
            rate_key="churn",
            since=WEEK[0],
            until=WEEK[1],
        )
        assert [g.count for g in students] == [4, 4, 4]
        hours = history.hourly(connection, since=WEEK[0], until=WEEK[1])
        assert sum(h.count for h in hours) == 18
        assert all(h.hour.tzinfo is not None and h.hour.minute == 0 for h in hours)
        assert history.shadows(connection, ids=[uuid.UUID(int=1)])[uuid.UUID(int=1)][0].role == (
            "challenger"
        )
        # A deep page is an index range read, not a scan and sort of the table.
        connection.execute(text("SET enable_seqscan = off"))
        plan = "\n".join(
            row[0]
            for row in connection.execute(
                text(
                    "EXPLAIN SELECT id FROM predictions WHERE model_name = 'churn' AND role = "
                    "'champion' AND (created_at, id) < (now(), gen_random_uuid()) "
                    "ORDER BY created_at DESC, id DESC LIMIT 21"
                )
            )
        )
        assert "ix_predictions_model_created_id" in plan and "Sort" not in plan
    engine.dispose()


def test_rollups_answer_as_the_table_does_and_stay_fresh(postgres_url: str) -> None:
    migrate.upgrade(postgres_url)
    engine = make_engine(postgres_url)
    seed(engine)
    # Rows are 11:43..12:00 (churn) and 10:15..10:20 (credit) on T0's day.
    partial = (T0 - timedelta(minutes=10), T0 + timedelta(hours=2, minutes=30))
    with engine.connect() as connection:
        before_rollups = history.groups(
            connection, since=WEEK[0], until=WEEK[1], now=T0 - timedelta(days=30), **TENURE
        )
        rolled = history.groups(
            connection, since=WEEK[0], until=WEEK[1], now=T0 + timedelta(hours=2), **TENURE
        )
        assert rolled == before_rollups
        assert [(g.value, g.count) for g in rolled] == [
            ("<12", 3),
            ("12-24", 2),
            ("24-48", 5),
            (">=48", 2),
        ]
        marks = connection.execute(text("select scope, rolled_until from rollup_marks")).all()
        assert [(scope, at) for scope, at in marks if scope == "churn"] == [
            ("churn", T0 + timedelta(hours=1))
        ]
        in_rollups = connection.execute(
            text("select sum(rows) from prediction_rollups where model_name = 'churn'")
        ).scalar_one()
        assert in_rollups == 12
        # Part rollup (12:00..13:00), part table (11:50..12:00): rows 0..10 minutes back.
        edges = history.groups(
            connection, since=partial[0], until=partial[1], now=T0 + timedelta(hours=2), **TENURE
        )
        assert sum(g.count for g in edges) == 11
        # A new row two hours on: the next refresh rolls up its hour and counts it.
        connection.execute(
            insert(predictions),
            [churn_row(60, id=uuid.uuid4(), created_at=T0 + timedelta(hours=1, minutes=30))],
        )
        connection.commit()
        day = T0 + timedelta(days=1)
        later = history.groups(
            connection, since=WEEK[0], until=day, now=T0 + timedelta(hours=3), **TENURE
        )
        assert sum(g.count for g in later) == 13
        assert [g.count for g in later if g.value == ">=48"] == [3]
        volume = history.hourly(connection, since=WEEK[0], until=day, now=T0 + timedelta(hours=3))
        direct = history.hourly(connection, since=WEEK[0], until=day, now=T0 - timedelta(days=30))
        assert volume == direct and sum(h.count for h in volume) == 19
    engine.dispose()


def test_the_rollups_command_rolls_up_every_grouping_the_aggregates_read(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m serving.rollups` leaves every family's groupings and the volume fresh, so
    the aggregates that follow roll up nothing; they answer as they would have."""
    from models import catalog
    from serving.graphql import grouping_query
    from serving.rollups import main, roll_up

    migrate.upgrade(postgres_url)
    engine = make_engine(postgres_url)
    seed(engine)
    now = T0 + timedelta(hours=2)
    churn = next(f for f in catalog.FAMILIES if f.name == "churn")
    with engine.connect() as connection:
        done = roll_up(connection, catalog.FAMILIES, now)
        assert done == sum(len(f.groupings) for f in catalog.FAMILIES) + 1
        query = text("select scope, grouping, rolled_until from rollup_marks")
        marks = connection.execute(query).all()
        assert len(marks) == done and {at for _, _, at in marks} == {T0 + timedelta(hours=1)}
        rolled = connection.execute(text("select count(*) from prediction_rollups")).scalar_one()
        tenure = history.groups(
            connection,
            **grouping_query(churn, "tenure_band"),
            since=WEEK[0],
            until=WEEK[1],
            now=now,
        )
        assert connection.execute(text("select count(*) from prediction_rollups")).scalar_one() == (
            rolled
        )
    assert [(g.value, g.count) for g in tenure] == [
        ("<12", 3),
        ("12-24", 2),
        ("24-48", 5),
        (">=48", 2),
    ]
    engine.dispose()
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    from persistence.settings import get_settings

    get_settings.cache_clear()
    try:
        assert main([]) == 0
    finally:
        get_settings.cache_clear()
    assert f"rolled up {done} groupings" in capsys.readouterr().out


def test_rows_written_late_into_a_rolled_up_hour_are_counted(
    postgres_url: str, tmp_path: Path
) -> None:
    """A journal replayed after an outage writes rows into hours already rolled up: the writer
    records those hours as stale with the rows, and the next refresh of every grouping rolls
    them up again, once."""
    migrate.upgrade(postgres_url)
    engine = make_engine(postgres_url)
    seed(engine)
    now, day = T0 + timedelta(hours=2), T0 + timedelta(days=1)

    def figures(at: datetime) -> tuple[list[history.Group], list[history.Hour]]:
        with engine.connect() as connection:
            return (
                history.groups(connection, since=WEEK[0], until=day, now=at, **TENURE),
                history.hourly(connection, since=WEEK[0], until=day, now=at),
            )

    def in_table(model: str = "%") -> int:
        query = (
            "select count(*) from predictions where role = 'champion' and model_name like :m "
            "and created_at >= :lo and created_at < :hi"
        )
        with engine.connect() as connection:
            found = connection.execute(text(query), {"m": model, "lo": WEEK[0], "hi": day})
            return int(found.scalar_one())

    rolled_before, _ = figures(now)  # rolls up every hour to T0 + 1 h
    writer = PredictionWriter(lambda: make_engine(postgres_url), journal_dir=tmp_path / "j")
    writer.start()
    late = dataclasses.replace(_churn_block(3, tenure=60), created_at=T0 - timedelta(minutes=30))
    writer.submit(late)
    writer.submit(_churn_block(2, tenure=60))  # written on time: no stale hour
    assert writer.flush(30)
    writer.close()
    with engine.connect() as connection:
        stale = connection.execute(text("select hour from stale_rollup_hours")).scalars().all()
    assert stale == [T0 - timedelta(hours=1)]
    groups, hours = figures(now)
    # The rollups agree with the table again: the late rows' hour was rolled up again.
    assert sum(g.count for g in groups) == sum(g.count for g in rolled_before) + 3
    assert sum(g.count for g in groups) == in_table("churn")
    assert [g.count for g in groups if g.value == ">=48"] == [2 + 3]
    assert sum(h.count for h in hours) == in_table()
    assert figures(now) == (groups, hours)  # rolled up again once, not at every refresh
    engine.dispose()


def _churn_block(n: int, *, tenure: int) -> PredictionBlock:
    return prediction_block(
        recording=recording(
            "churn", entity_field="customer_id", score_field="p", label_field="band"
        ),
        request_id="late",
        source="api",
        inputs={"customer_id": [f"late{i}" for i in range(n)], "tenure": [tenure] * n},
        outputs={
            "customer_id": [f"late{i}" for i in range(n)],
            "p": [0.9] * n,
            "band": ["high"] * n,
            "churn": [True] * n,
            "model_version": ["1"] * n,
        },
        latency_ms=5.0,
    )


@pytest.fixture(scope="module")
def history_server(
    mlflow_store: ModelSettings, postgres: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("serve-graphql")
    env = {
        **mlflow_env(mlflow_store),
        "DATABASE_URL": postgres.create_database(),
        "CLIENTINSIGHT_ENV": "production",
        "CLIENTINSIGHT_API_KEYS": f"crm:{hash_key(USER)}",
        "CLIENTINSIGHT_HISTORY_KEYS": f"analyst:{hash_key(HISTORY)}",
        "CLIENTINSIGHT_ADMIN_KEYS": f"ops:{hash_key(ADMIN)}",
    }
    with serve(env, Path(root) / "server.log", admin_key=ADMIN) as server:
        yield server


@pytest.mark.integration
def test_predictions_are_read_back_over_graphql(history_server: Server) -> None:
    url = history_server.url
    posted = httpx.post(
        f"{url}/churn/predict",
        json={"customers": [{**SNAKE, "customer_id": f"gql{i}"} for i in range(3)]},
        headers={"X-API-Key": USER},
        timeout=30,
    )
    assert posted.status_code == 200
    request_id = posted.headers["x-request-id"]
    assert wait_for_rows(history_server.database_url, 3, [request_id]) == 3
    query: dict[str, Any] = {
        "query": "query R($r: String) { predictions(first: 2, filter: {requestId: $r}) {"
        " edges { node { entityId family protocol score inputs } }"
        " pageInfo { hasNextPage endCursor } } }",
        "variables": {"r": request_id},
    }
    answer = httpx.post(f"{url}/graphql", json=query, headers={"X-API-Key": HISTORY}, timeout=30)
    assert answer.status_code == 200, answer.text
    page = answer.json()["data"]["predictions"]
    assert page["pageInfo"]["hasNextPage"] is True
    nodes = [edge["node"] for edge in page["edges"]]
    assert {n["family"] for n in nodes} == {"churn"} and {n["protocol"] for n in nodes} == {"http"}
    assert nodes[0]["inputs"]["contract"] == SNAKE["contract"]
    rest = httpx.post(
        f"{url}/graphql",
        json={
            **query,
            "query": query["query"]
            .replace("first: 2", "first: 2, after: $a")
            .replace("$r: String)", "$r: String, $a: String)"),
            "variables": {"r": request_id, "a": page["pageInfo"]["endCursor"]},
        },
        headers={"X-API-Key": HISTORY},
        timeout=30,
    ).json()["data"]["predictions"]
    seen = {n["entityId"] for n in nodes} | {e["node"]["entityId"] for e in rest["edges"]}
    assert seen == {"gql0", "gql1", "gql2"} and rest["pageInfo"]["hasNextPage"] is False
    # A plain API key may predict but not read the history; no key is 401.
    plain = httpx.post(f"{url}/graphql", json=query, headers={"X-API-Key": USER}, timeout=30)
    assert plain.status_code == 403
    assert httpx.post(f"{url}/graphql", json=query, timeout=30).status_code == 401
    # Production: no introspection, even for a history key.
    schema = httpx.post(
        f"{url}/graphql",
        json={"query": "{ __schema { types { name } } }"},
        headers={"X-API-Key": ADMIN},
        timeout=30,
    ).json()
    assert schema.get("data") is None and "introspection" in schema["errors"][0]["message"].lower()
