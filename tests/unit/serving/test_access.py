"""The front door: keys, admin routes, rate limits and body limits, on a toy ASGI app."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from serving import keys
from serving.access import AccessGuard, AccessPolicy, TokenBucket, hash_key, parse_keys
from serving.settings import AccessSettings

USER_KEY = "ci_user-key-for-tests"
ADMIN_KEY = "ci_admin-key-for-tests"


def _settings(**overrides: Any) -> AccessSettings:
    values: dict[str, Any] = {
        "CLIENTINSIGHT_API_KEYS": f"crm:{hash_key(USER_KEY)}",
        "CLIENTINSIGHT_ADMIN_KEYS": f"ops:{hash_key(ADMIN_KEY)}",
        **overrides,
    }
    return AccessSettings.model_validate(values)


async def _app(scope: Any, receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    payload = json.dumps({"path": scope["path"], "received": len(body)}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": payload})


def _call(
    guard: AccessGuard,
    path: str,
    headers: dict[str, str] | None = None,
    chunks: list[bytes] | None = None,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    parts = list(chunks or [b""])

    async def receive() -> dict[str, Any]:
        chunk = parts.pop(0) if parts else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(parts)}

    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    asyncio.run(guard(scope, receive, send))
    start = sent[0]
    response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], response_headers, json.loads(sent[1]["body"])


def test_prediction_routes_need_a_key_sent_either_way() -> None:
    guard = AccessGuard(_app, AccessPolicy(_settings()))
    status, headers, body = _call(guard, "/churn/predict")
    assert status == 401 and "Authorization: Bearer" in body["error"]
    assert headers["www-authenticate"] == "Bearer"
    assert _call(guard, "/churn/predict", {"Authorization": f"Bearer {USER_KEY}"})[0] == 200
    assert _call(guard, "/credit/evaluate", {"X-API-Key": USER_KEY})[0] == 200
    status, _, body = _call(guard, "/churn/predict", {"X-API-Key": "ci_guessed"})
    assert status == 401 and body == {"error": "invalid API key"}


def test_admin_routes_need_an_admin_key() -> None:
    guard = AccessGuard(_app, AccessPolicy(_settings()))
    status, _, body = _call(guard, "/models", {"X-API-Key": USER_KEY})
    assert status == 403 and "'crm' may not use admin routes" in body["error"]
    assert USER_KEY not in json.dumps(body)
    assert _call(guard, "/models", {"X-API-Key": ADMIN_KEY})[0] == 200
    assert _call(guard, "/churn/predict", {"X-API-Key": ADMIN_KEY})[0] == 200


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/metrics", "/docs.json", "/"])
def test_probes_metrics_and_docs_stay_open(path: str) -> None:
    assert _call(AccessGuard(_app, AccessPolicy(_settings())), path)[0] == 200


def test_the_demo_without_keys_is_open_and_production_refuses_to_start() -> None:
    demo = AccessPolicy(AccessSettings.model_validate({}))
    assert demo.open
    assert _call(AccessGuard(_app, demo), "/churn/predict")[0] == 200
    with pytest.raises(RuntimeError, match="refusing to serve an open API"):
        AccessPolicy(AccessSettings.model_validate({"CLIENTINSIGHT_ENV": "production"}))
    assert not AccessPolicy(_settings(CLIENTINSIGHT_ENV="production")).open


def test_a_key_over_its_rate_gets_429_with_retry_after() -> None:
    settings = _settings(
        CLIENTINSIGHT_API_KEYS=f"crm:{hash_key(USER_KEY)}:1", CLIENTINSIGHT_RATE_LIMIT_BURST=3
    )
    guard = AccessGuard(_app, AccessPolicy(settings))
    statuses = [_call(guard, "/churn/predict", {"X-API-Key": USER_KEY})[0] for _ in range(3)]
    assert statuses == [200, 200, 200]
    status, headers, body = _call(guard, "/churn/predict", {"X-API-Key": USER_KEY})
    assert status == 429 and headers["retry-after"] == "1" and body["retry_after_s"] == 1
    assert "'crm' may send 1 requests/s" in body["error"]
    # Another key has its own bucket.
    assert _call(guard, "/churn/predict", {"X-API-Key": ADMIN_KEY})[0] == 200


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=100, burst=1)
    assert bucket.take() == 0
    wait = bucket.take()
    assert 0 < wait <= 0.011
    bucket.updated -= 0.02  # as if 20 ms passed
    assert bucket.take() == 0


def test_bodies_over_the_limit_are_413_whether_announced_or_streamed() -> None:
    guard = AccessGuard(_app, AccessPolicy(_settings(CLIENTINSIGHT_MAX_BODY_BYTES=2048)))
    key = {"X-API-Key": USER_KEY}
    status, _, body = _call(guard, "/churn/predict_file", {**key, "Content-Length": "4096"})
    assert status == 413 and "4096 bytes is over the limit of 2048 bytes" in body["error"]
    status, _, body = _call(guard, "/churn/predict_file", key, chunks=[b"x" * 1500] * 2)
    assert status == 413 and body["limit_bytes"] == 2048
    status, _, body = _call(guard, "/churn/predict_file", key, chunks=[b"x" * 1000] * 2)
    assert status == 200 and body["received"] == 2000


def test_key_entries_must_hold_hashes_not_keys() -> None:
    with pytest.raises(ValueError, match="CLIENTINSIGHT_API_KEYS: entry 2") as error:
        parse_keys(
            f"a:{hash_key('x')},b:{USER_KEY}", admin=False, variable="CLIENTINSIGHT_API_KEYS"
        )
    assert USER_KEY not in str(error.value)
    [parsed] = parse_keys(f" crm:{hash_key('x')}:25 ", admin=True, variable="V")
    assert parsed.name == "crm" and parsed.admin and parsed.rate_per_s == 25


def test_the_key_command_prints_a_key_and_an_entry_that_matches_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert keys.main(["new", "crm", "--rate", "50"]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    key, entry = lines[1], lines[3]
    assert key.startswith("ci_") and len(key) > 40
    assert entry == f"crm:{hash_key(key)}:50"
    assert key not in entry
