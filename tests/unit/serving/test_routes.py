"""The route table on a FastAPI app with a stand-in service: strict bodies, limits before
validation, answers in kind, every refusal as one JSON error and one log line."""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any

import httpx
import pandas as pd
import pytest

from serving.errors import ApiError
from serving.routes import loads
from tests.support.routes import Service, toy_routes


@pytest.fixture
def service() -> Service:
    return Service()


@pytest.fixture
def client(service: Service) -> httpx.AsyncClient:
    app = toy_routes(service).app
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def _post(client: httpx.AsyncClient, path: str, **kwargs: Any) -> httpx.Response:
    return asyncio.run(client.post(path, **kwargs))


def test_records_in_answers_out_in_order(client: httpx.AsyncClient) -> None:
    body = b'{"toys": [{"name": "a", "count": 1}, {"name": "b", "count": "3"}]}'
    response = _post(client, "/toy/predict", content=body)
    assert response.status_code == 200
    assert response.json() == [{"name": "a", "double": 2}, {"name": "b", "double": 6}]
    assert response.headers["x-request-id"] == "req-1"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"toys": [{"name": "a", "count": 1, "count": 9}]}', "the key 'count' appears twice"),
        (b'{"toys": [{"name": "a", "count": NaN}]}', "NaN is not a JSON number"),
        (b'{"toys": [{"name": "a", "count": -Infinity}]}', "-Infinity is not a JSON number"),
        (b'{"toys": [{"name": "\xe9", "count": 1}]}', "not UTF-8"),
        (b'{"toys": [', "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not usable JSON"),
        (b'{"toys": [{"name": "a", "count": 1' + b"0" * 5000 + b"}]}", "not usable JSON"),
        (b'[{"name": "a", "count": 1}]', 'a JSON object {"toys": [...]}'),
    ],
)
def test_bodies_that_are_not_strict_json_are_400(
    client: httpx.AsyncClient, service: Service, body: bytes, words: str
) -> None:
    response = _post(client, "/toy/predict", content=body)
    assert response.status_code == 400
    assert words in response.json()["error"]
    assert service.calls == 0


@pytest.mark.parametrize(
    ("toy", "location", "message"),
    [
        ({"name": "a", "count": True}, ["toys", 0, "count"], "not true or false"),
        ({"name": "a", "count": 11}, ["toys", 0, "count"], "less than or equal to 10"),
        ({"name": "a"}, ["toys", 0, "count"], "Field required"),
        ({"name": "a", "count": 1, "extra": 1}, ["toys", 0, "extra"], "Extra inputs"),
    ],
)
def test_invalid_records_are_400_naming_the_field_without_the_value(
    client: httpx.AsyncClient, toy: dict[str, Any], location: list[Any], message: str
) -> None:
    response = _post(client, "/toy/predict", json={"toys": [toy]})
    assert response.status_code == 400
    [problem] = response.json()["detail"]
    assert problem["loc"] == location and message in problem["msg"]
    assert "input" not in problem and "ctx" not in problem and "url" not in problem


def test_too_many_records_are_413_before_any_is_validated(
    client: httpx.AsyncClient, service: Service
) -> None:
    invalid = [{"nonsense": True}] * 1001
    response = _post(client, "/toy/predict", json={"toys": invalid})
    assert response.status_code == 413
    assert "1001 items is over the limit of 1000" in response.json()["error"]
    assert service.calls == 0


def test_large_bodies_are_parsed_off_the_event_loop(client: httpx.AsyncClient) -> None:
    toys = [{"name": "x" * 300, "count": 1}] * 1000
    response = _post(client, "/toy/predict", json={"toys": toys})
    assert response.status_code == 200 and len(response.json()) == 1000


def test_refusals_are_logged_as_one_line_without_the_values(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="clientinsight.requests"):
        _post(client, "/toy/predict", json={"toys": [{"name": "SECRET-NAME", "count": 99}]})
    [record] = [r for r in caplog.records if r.name == "clientinsight.requests"]
    assert record.levelno == logging.INFO and record.exc_info is None
    assert record.getMessage() == "400 POST /toy/predict: invalid_input (toys.0.count)"
    assert "SECRET" not in caplog.text and "99" not in caplog.text


def test_an_uploaded_table_comes_back_with_the_answer_columns(client: httpx.AsyncClient) -> None:
    data = b"name,count,note\na,1,=cmd\nb,2,ok\n"
    response = _post(client, "/toy/predict_file", files={"file": ("t.csv", data)})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "req-2"
    assert response.headers["content-disposition"] == 'attachment; filename="toy_scores.csv"'
    back = pd.read_csv(io.BytesIO(response.content), dtype=str, keep_default_na=False)
    assert back.to_dict("list") == {
        "name": ["a", "b"],
        "count": ["1", "2"],
        "note": ["'=cmd", "ok"],
        "double": ["2", "4"],
    }


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"name,note\na,x\n", 400, "missing required columns: count"),
        (b"name,count\na,-1\n", 400, "1 invalid values"),
        (b"name,count\n" + b"a,1\n" * 1_000_001, 413, "1000001 rows"),
    ],
)
def test_upload_refusals_name_the_problem(
    client: httpx.AsyncClient, service: Service, data: bytes, status: int, words: str
) -> None:
    response = _post(client, "/toy/predict_file", files={"file": ("t.csv", data)})
    assert response.status_code == status and words in response.json()["error"]
    assert service.calls == 0


def test_strict_json_is_otherwise_plain_json() -> None:
    assert loads(b'{"a": [1, 2.5, "x", null, true], "b": {"c": {}}}') == {
        "a": [1, 2.5, "x", None, True],
        "b": {"c": {}},
    }
    with pytest.raises(ApiError, match="appears twice"):
        loads(b'{"a": {"b": 1, "b": 2}}')
