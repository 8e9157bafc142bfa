"""`/graphql` through its ASGI app (httpx.ASGITransport) on a SQLite database of known rows:
the schema from the catalog, pages and cursors, aggregates, every limit, masking and
introspection in production."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from models import catalog
from persistence.db import make_engine
from serving import graphql
from tests.support.families import CATALOG
from tests.support.history import seed
from tests.support.predictions import sqlite_database

WEEK = 'since: "2026-11-28T00:00:00Z", until: "2026-12-02T00:00:00Z"'
PAGE = """query Page($after: String) {
  predictions(first: 5, after: $after, filter: {family: "churn"}) {
    edges { cursor node { id label family } }
    pageInfo { hasNextPage hasPreviousPage endCursor }
  }
}"""


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(sqlite_database(tmp_path))
    seed(engine)
    yield engine
    engine.dispose()


def ask(
    engine: Engine,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    production: bool = False,
    families: tuple[Any, ...] = catalog.FAMILIES,
) -> dict[str, Any]:
    app = graphql.graphql_app(families, production=production, engine_factory=lambda: engine)

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/graphql", json={"query": query, "variables": variables})

    response = asyncio.run(post())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def messages(body: dict[str, Any]) -> list[str]:
    return [error["message"] for error in body.get("errors", [])]


def test_cursor_round_trip_walks_every_row_once(engine: Engine) -> None:
    ids: list[str] = []
    after = None
    previous_flags = []
    while True:
        body = ask(engine, PAGE, {"after": after})
        connection = body["data"]["predictions"]
        ids.extend(edge["node"]["id"] for edge in connection["edges"])
        previous_flags.append(connection["pageInfo"]["hasPreviousPage"])
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]
    assert len(ids) == len(set(ids)) == 12
    assert previous_flags == [False, True, True]
    assert {edge["node"]["family"] for edge in connection["edges"]} == {"churn"}


def test_a_prediction_links_its_inputs_and_shadows(engine: Engine) -> None:
    body = ask(
        engine,
        '{ predictions(first: 2, filter: {family: "churn"}) { edges { node {'
        " inputs outputs role shadows { version score role shadowOf } } } } }",
    )
    first, second = (edge["node"] for edge in body["data"]["predictions"]["edges"])
    assert first["inputs"]["contract"] == "Month-to-month" and first["role"] == "champion"
    assert first["shadows"] == [
        {
            "version": "3",
            "score": 0.7,
            "role": "challenger",
            "shadowOf": "00000000-0000-0000-0000-000000000001",
        }
    ]
    assert second["shadows"] == []


def test_filters_by_grouping_label_and_protocol(engine: Engine) -> None:
    body = ask(
        engine,
        '{ seg: predictions(filter: {family: "credit", groups: [{name: "segment", value: "1"}]})'
        " { edges { node { entityId } } }"
        ' oip: predictions(filter: {protocol: "oip-rest"}) { edges { node { entityId } } }'
        ' high: predictions(first: 100, filter: {family: "churn", label: "high", version: "2"})'
        " { edges { node { entityId } } } }",
    )
    data = body["data"]
    assert sorted(e["node"]["entityId"] for e in data["seg"]["edges"]) == ["a1", "a3", "a5"]
    assert [e["node"]["entityId"] for e in data["oip"]["edges"]] == ["c3"]
    assert [e["node"]["entityId"] for e in data["high"]["edges"]] == ["c6", "c8", "c10"]


def test_a_family_filter_with_a_model_picks_that_model_of_the_family_only(
    engine: Engine,
) -> None:
    """`family` alone means its decisions; with `model`, one model of the family asked alone
    (credit-segment's own rows); a model of another family matches nothing."""
    from sqlalchemy import insert

    from persistence.tables import predictions
    from tests.support.history import credit_row

    alone = {
        **credit_row(50),
        "id": uuid.UUID(int=50_000),
        "model_name": "credit-segment",
        "entity_id": "alone",
    }
    with engine.begin() as connection:
        connection.execute(insert(predictions), [alone])
    body = ask(
        engine,
        '{ decisions: predictions(first: 100, filter: {family: "credit"})'
        " { edges { node { entityId model family } } }"
        ' own: predictions(filter: {family: "credit", model: "credit-segment"})'
        " { edges { node { entityId model family } } }"
        ' other: predictions(filter: {family: "credit", model: "churn"}) { edges { node { id } } }'
        ' any: predictions(filter: {model: "credit-segment"}) { edges { node { entityId } } } }',
    )
    data = body["data"]
    decisions = [edge["node"] for edge in data["decisions"]["edges"]]
    assert len(decisions) == 6 and {n["model"] for n in decisions} == {"credit-evaluation"}
    assert [edge["node"] for edge in data["own"]["edges"]] == [
        {"entityId": "alone", "model": "credit-segment", "family": "credit"}
    ]
    assert data["other"]["edges"] == []
    assert [edge["node"]["entityId"] for edge in data["any"]["edges"]] == ["alone"]


def test_aggregates_are_named_by_the_family(engine: Engine) -> None:
    body = ask(
        engine,
        f'{{ t: aggregate(family: "churn", by: "tenure_band", {WEEK}) {{ rateName scoreName'
        " groups { value count rate } }"
        f' s: aggregate(family: "credit", by: "segment", {WEEK})'
        " { rateName groups { value rate } }"
        f' v: volume(family: "churn", {WEEK}) {{ version count }} }}',
    )
    data = body["data"]
    assert data["t"]["rateName"] == "churn rate"
    assert data["t"]["scoreName"] == "churn_probability"
    assert [(g["value"], g["count"]) for g in data["t"]["groups"]] == [
        ("<12", 3),
        ("12-24", 2),
        ("24-48", 5),
        (">=48", 2),
    ]
    assert data["s"]["rateName"] == "approval rate"
    assert [g["value"] for g in data["s"]["groups"]] == ["0", "1"]
    assert sum(v["count"] for v in data["v"]) == 12


def test_a_boolean_grouping_reads_true_and_false_on_sqlite_too(engine: Engine) -> None:
    """SQLite's json_extract says 1 and 0 for JSON booleans, PostgreSQL's ->> true and false:
    groups and filters say true and false on both (the demo runs on SQLite)."""
    from sqlalchemy import insert

    from persistence.tables import predictions
    from tests.support.history import churn_row

    rows = [
        {
            **churn_row(200 + i),
            "id": uuid.UUID(int=20_000 + i),
            "model_name": "card-balance",
            "entity_id": f"b{i}",
            "label": None,
            "inputs": {"student": i < 2, "cards": 3},
        }
        for i in range(5)
    ]
    with engine.begin() as connection:
        connection.execute(insert(predictions), rows)
    body = ask(
        engine,
        f'{{ a: aggregate(family: "balance", by: "student", {WEEK}) {{ groups {{ value count }} }}'
        ' f: predictions(filter: {family: "balance", groups: [{name: "student", value: "true"}]})'
        " { edges { node { entityId } } } }",
    )
    data = body["data"]
    assert [(g["value"], g["count"]) for g in data["a"]["groups"]] == [("false", 3), ("true", 2)]
    assert sorted(e["node"]["entityId"] for e in data["f"]["edges"]) == ["b0", "b1"]


def test_the_schema_is_the_catalogs_even_a_toy_one(engine: Engine) -> None:
    body = ask(engine, "{ families { name rateName groupings { name bands } } }", families=CATALOG)
    assert body["data"]["families"] == [
        {
            "name": "toy",
            "rateName": "above rate",
            "groupings": [{"name": "x_band", "bands": ["<0", ">=0"]}],
        }
    ]
    refused = ask(
        engine, '{ aggregate(family: "churn", by: "contract") { count: family } }', families=CATALOG
    )
    assert messages(refused) == ["family: no family 'churn'; the catalog has toy"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            '{ aggregate(family: "churn", by: "shoe_size") { family } }',
            "has no grouping 'shoe_size'",
        ),
        ("{ predictions(first: 500) { edges { cursor } } }", "first: between 1 and 100"),
        ('{ predictions(after: "garbage") { edges { cursor } } }', "is not a cursor this API gave"),
        (
            '{ predictions(filter: {groups: [{name: "segment", value: "1"}]})'
            " { edges { cursor } } }",
            "groups: needs a family",
        ),
        (
            '{ predictions(filter: {family: "churn", groups: [{name: "tenure_band", value: "1"}]})'
            " { edges { cursor } } }",
            "is banded",
        ),
        (
            '{ aggregate(family: "churn", by: "contract", since: "2026-01-01T00:00:00Z",'
            ' until: "2026-12-01T00:00:00Z") { family } }',
            "at most 92 days",
        ),
    ],
)
def test_refusals_say_what_is_wrong(engine: Engine, query: str, message: str) -> None:
    body = ask(engine, query)
    assert body["data"] is None
    assert len(messages(body)) == 1 and message in messages(body)[0]


def test_cost_limit_refuses_expensive_queries_before_running_them(engine: Engine) -> None:
    node = "edges { node { id inputs shadows { id shadows { id } } } }"
    body = ask(
        engine,
        f"{{ a: predictions(first: 100) {{ {node} }} b: predictions(first: 100) {{ {node} }} }}",
    )
    assert body["data"] is None
    assert messages(body)[0].startswith("query cost ")
    assert "exceeds the limit of 1000" in messages(body)[0]
    # A variable `first` counts as the most it may be.
    variable = ask(
        engine,
        "query Q($n: Int!) { a: predictions(first: $n) { "
        + node
        + " } b: predictions(first: $n) { "
        + node
        + " } }",
        {"n": 1},
    )
    assert "exceeds the limit" in messages(variable)[0]
    assert ask(engine, PAGE)["data"]["predictions"]["edges"]


def test_cost_counts_pages_fragments_and_aggregates() -> None:
    from graphql import FragmentDefinitionNode, OperationDefinitionNode, parse

    document = parse(
        'query { predictions(first: 10) { edges { ...E } } aggregate(family: "x", by: "y")'
        " { groups { value } } } fragment E on PredictionEdge { node { shadows { id } } }"
    )
    operation = document.definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    # predictions: 10 + 10 * (edges 1 + node 1 + shadows 2); aggregate: 50 + groups 1.
    assert graphql.query_cost(operation.selection_set, fragments) == 10 + 10 * 4 + 51


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "{ predictions { edges { node { shadows { shadows { shadows { shadows { shadows"
            " { shadows { shadows { shadows { id } } } } } } } } } } } }",
            "exceeds maximum operation depth",
        ),
        ("{ " + " ".join(f"a{i}: families {{ name }}" for i in range(20)) + " }", "aliases"),
        ("{ families { " + "name " * 2100 + "} }", "token"),
    ],
)
def test_strawberry_limits_refuse_with_a_message(engine: Engine, query: str, message: str) -> None:
    body = ask(engine, query)
    assert message in " ".join(messages(body)).lower() or message in " ".join(messages(body))


def test_unexpected_errors_are_masked(tmp_path: Path) -> None:
    broken = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no table: an internal fault
    body = ask(broken, "{ predictions { edges { cursor } } }")
    assert messages(body) == ["Unexpected error."]


def test_introspection_is_off_in_production_only(engine: Engine) -> None:
    query = "{ __schema { queryType { name } } }"
    assert ask(engine, query)["data"]["__schema"]["queryType"]["name"] == "Query"
    body = ask(engine, query, production=True)
    assert body.get("data") is None
    assert "introspection" in " ".join(messages(body)).lower()
    # The history itself still answers in production.
    assert ask(engine, PAGE, production=True)["data"]["predictions"]["edges"]


def test_production_follows_the_server_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from serving import settings

    class Production:
        environment = "production"

    monkeypatch.setattr(settings, "get_settings", lambda: Production())
    monkeypatch.setattr(graphql, "get_access_settings", lambda: Production())
    app = graphql.graphql_app(catalog.FAMILIES)
    assert app.graphql_ide is None


def test_nothing_connects_until_a_query_needs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    monkeypatch.setattr(graphql, "_engine", None)

    def make_engine(url: str) -> str:
        made.append(url)
        return "engine"

    monkeypatch.setattr(graphql, "make_engine", make_engine)
    graphql.graphql_app(catalog.FAMILIES, production=False)
    assert made == []
    assert graphql.engine() == "engine" and graphql.engine() == "engine"
    assert len(made) == 1
