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


HISTORY_KEY = "ci_history-key-for-tests"


def test_history_needs_a_history_or_admin_key() -> None:
    policy = AccessPolicy(_settings(CLIENTINSIGHT_HISTORY_KEYS=f"bi:{hash_key(HISTORY_KEY)}"))
    guard = AccessGuard(_app, policy)
    status, _, body = _call(guard, "/graphql", {"X-API-Key": USER_KEY})
    assert status == 403 and "'crm' may not use prediction history" in body["error"]
    assert "--history" in body["error"]
    assert _call(guard, "/graphql", {"X-API-Key": HISTORY_KEY})[0] == 200
    assert _call(guard, "/graphql", {"X-API-Key": ADMIN_KEY})[0] == 200
    assert _call(guard, "/graphql")[0] == 401
    # A history key is no admin key, and still predicts.
    assert _call(guard, "/models", {"X-API-Key": HISTORY_KEY})[0] == 403
    assert _call(guard, "/churn/predict", {"X-API-Key": HISTORY_KEY})[0] == 200


def test_the_key_command_makes_history_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert keys.main(["new", "bi", "--history"]) == 0
    out = capsys.readouterr().out
    assert "entry for CLIENTINSIGHT_HISTORY_KEYS" in out
    with pytest.raises(SystemExit):
        keys.main(["new", "bi", "--history", "--admin"])


@pytest.mark.parametrize(
    "path",
    ["/livez", "/readyz", "/metrics", "/docs.json", "/", "/v2/health/live", "/v2/health/ready"],
)
def test_probes_metrics_and_docs_stay_open(path: str) -> None:
    assert _call(AccessGuard(_app, AccessPolicy(_settings())), path)[0] == 200


def test_the_demo_without_keys_is_open_and_production_refuses_to_start() -> None:
    demo = AccessPolicy(AccessSettings.model_validate({}))
    assert demo.open
    assert _call(AccessGuard(_app, demo), "/churn/predict")[0] == 200
    with pytest.raises(ValueError, match="refusing to serve an open API"):
        AccessPolicy(AccessSettings.model_validate({"CLIENTINSIGHT_ENV": "production"}))
    assert not AccessPolicy(_settings(CLIENTINSIGHT_ENV="production")).open


def test_a_key_over_its_rate_gets_429_with_retry_after() -> None:
    settings = _settings(
        CLIENTINSIGHT_API_KEYS=f"crm:{hash_key(USER_KEY)}:1", CLIENTINSIGHT_RATE_LIMIT_BURST_S=3
    )
    guard = AccessGuard(_app, AccessPolicy(settings))
    statuses = [_call(guard, "/churn/predict", {"X-API-Key": USER_KEY})[0] for _ in range(3)]
    assert statuses == [200, 200, 200]
    status, headers, body = _call(guard, "/churn/predict", {"X-API-Key": USER_KEY})
    assert status == 429 and headers["retry-after"] == "1" and body["retry_after_s"] == 1
    assert "'crm' may send 1 requests/s (bursts of 3)" in body["error"]
    # Another key has its own bucket.
    assert _call(guard, "/churn/predict", {"X-API-Key": ADMIN_KEY})[0] == 200


@pytest.mark.parametrize(("entry", "burst"), [(":2", 4), (":0.5", 1), (":2:7", 7), ("", 6)])
def test_the_burst_scales_with_the_key_rate_unless_the_entry_sets_it(
    entry: str, burst: int
) -> None:
    """A slow key may burst two seconds of its own rate, not the fast keys' 400."""
    settings = _settings(
        CLIENTINSIGHT_API_KEYS=f"slow:{hash_key(USER_KEY)}{entry}", CLIENTINSIGHT_RATE_LIMIT_PER_S=3
    )
    guard = AccessGuard(_app, AccessPolicy(settings))
    statuses = [
        _call(guard, "/churn/predict", {"X-API-Key": USER_KEY})[0] for _ in range(burst + 1)
    ]
    assert statuses == [200] * burst + [429]


def test_the_retired_burst_setting_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="CLIENTINSIGHT_RATE_LIMIT_BURST_S"):
        _settings(CLIENTINSIGHT_RATE_LIMIT_BURST="400")


@pytest.mark.parametrize(
    "headers",
    [
        [("x-api-key", "ci_wrong"), ("x-api-key", USER_KEY)],
        [("authorization", "Bearer ci_wrong"), ("authorization", f"Bearer {USER_KEY}")],
        [("authorization", "Bearer ci_wrong"), ("x-api-key", USER_KEY)],
    ],
)
def test_more_than_one_key_in_a_request_is_400(headers: list[tuple[str, str]]) -> None:
    guard = AccessGuard(_app, AccessPolicy(_settings()))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/churn/predict",
        "headers": [(k.encode(), v.encode()) for k, v in headers],
    }
    asyncio.run(guard(scope, receive, send))
    assert sent[0]["status"] == 400
    assert "send one API key" in json.loads(sent[1]["body"])["error"]


def test_the_same_key_sent_both_ways_is_one_key() -> None:
    guard = AccessGuard(_app, AccessPolicy(_settings()))
    both = {"Authorization": f"Bearer {USER_KEY}", "X-API-Key": USER_KEY}
    assert _call(guard, "/churn/predict", both)[0] == 200


@pytest.mark.parametrize("path", ["/regression/predict", "/v2/models/churn/infer", "/v2"])
def test_a_route_not_listed_as_open_needs_a_key(path: str) -> None:
    """Closed by default: a route added later is guarded from its first line."""
    guard = AccessGuard(_app, AccessPolicy(_settings()))
    assert _call(guard, path)[0] == 401
    assert _call(guard, path, {"X-API-Key": USER_KEY})[0] == 200


def test_the_start_up_line_says_whether_keys_are_required_and_how_many() -> None:
    assert (
        AccessPolicy(_settings())
        .describe()
        .startswith("authentication is ON: 1 API keys, 0 history keys and 1 admin keys")
    )
    assert "OFF" in AccessPolicy(AccessSettings.model_validate({})).describe()
    assert USER_KEY not in AccessPolicy(_settings()).describe()


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=100, burst=1)
    assert bucket.take() == 0
    wait = bucket.take()
    assert 0 < wait <= 0.011
    bucket.updated -= 0.02  # as if 20 ms passed
    assert bucket.take() == 0


@pytest.mark.parametrize("path", ["/v2/models/churn/versions/a\n8/infer", "/churn/pre\x00dict"])
def test_a_path_with_a_control_character_is_a_json_404_before_the_keys(path: str) -> None:
    """A decoded %0A matches no route, and BentoML's router would answer it in plain text."""
    status, headers, body = _call(AccessGuard(_app, AccessPolicy(_settings())), path)
    assert status == 404 and headers["content-type"] == "application/json"
    assert body["error"] == "no route: the path holds a control character"


def test_bodies_over_the_limit_are_413_whether_announced_or_streamed() -> None:
    policy = AccessPolicy(
        _settings(CLIENTINSIGHT_MAX_BODY_BYTES=2048),
        body_limit=lambda path: 1024 if path == "/churn/predict" else 2048,
    )
    guard = AccessGuard(_app, policy)
    key = {"X-API-Key": USER_KEY}
    status, _, body = _call(guard, "/churn/predict_file", {**key, "Content-Length": "4096"})
    assert status == 413 and "4096 bytes is over the limit of 2048 bytes" in body["error"]
    status, _, body = _call(guard, "/churn/predict_file", key, chunks=[b"x" * 1500] * 2)
    assert status == 413 and body["limit_bytes"] == 2048
    status, _, body = _call(guard, "/churn/predict_file", key, chunks=[b"x" * 1000] * 2)
    assert status == 200 and body["received"] == 2000
    # Each route its own limit: JSON bodies are far smaller than uploads.
    status, _, body = _call(guard, "/churn/predict", {**key, "Content-Length": "1500"})
    assert status == 413 and body["limit_bytes"] == 1024


def test_a_streamed_body_over_the_limit_is_cut_for_the_app() -> None:
    """After the 413, the app reads a disconnect (it stops) and its own answer goes nowhere."""
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message)
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b"app"})

    guard = AccessGuard(app, AccessPolicy(_settings(CLIENTINSIGHT_MAX_BODY_BYTES=2048)))
    status, _, body = _call(
        guard, "/churn/predict_file", {"X-API-Key": USER_KEY}, chunks=[b"x" * 1500] * 3
    )
    assert status == 413 and body["limit_bytes"] == 2048
    assert [m["type"] for m in seen] == ["http.request", "http.disconnect"]


def test_key_entries_must_hold_hashes_not_keys() -> None:
    with pytest.raises(ValueError, match="CLIENTINSIGHT_API_KEYS: entry 2") as error:
        parse_keys(
            f"a:{hash_key('x')},b:{USER_KEY}", admin=False, variable="CLIENTINSIGHT_API_KEYS"
        )
    assert USER_KEY not in str(error.value)
    [parsed] = parse_keys(f" crm:{hash_key('x')}:25 ", admin=True, variable="V")
    assert parsed.name == "crm" and parsed.admin and parsed.rate_per_s == 25


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("bad name:{digest}", "key name 'bad name'"),
        ("crm:{digest}:.", "rate '.' is not a number"),
        ("crm:{digest}:1e-9", "rate '1e-9' is not a number"),
        ("crm:{digest}:0", "rate 0: a key's rate must be between 0.01"),
        ("crm:{digest}:5:0", "burst '0' is not a whole number"),
        ("crm:{digest}:5:x:y", "is not 'name:sha256-hex"),
    ],
)
def test_a_bad_key_entry_says_which_part_is_wrong(entry: str, words: str) -> None:
    with pytest.raises(ValueError, match="V: entry 1") as error:
        parse_keys(entry.format(digest=hash_key("x")), admin=False, variable="V")
    assert words in str(error.value)


def test_the_key_command_prints_a_key_and_an_entry_that_matches_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert keys.main(["new", "crm", "--rate", "50"]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    key, entry = lines[1], lines[3]
    assert key.startswith("ci_") and len(key) > 40
    assert entry == f"crm:{hash_key(key)}:50"
    assert key not in entry


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["new", "bad name"], "key name 'bad name'"),
        (["new", "crm:evil"], "key name 'crm:evil'"),
        (["new", "crm", "--rate", "-5"], "rate -5: a key's rate must be between"),
        (["new", "crm", "--rate", "1e-9"], "rate 1e-09: a key's rate must be between"),
        (["new", "crm", "--rate", "0"], "rate 0: a key's rate must be between"),
        (["new", "crm", "--rate", "fast"], "rate 'fast' is not a number"),
        (["new", "crm", "--burst", "5"], "--burst needs --rate"),
    ],
)
def test_the_key_command_refuses_mistakes_with_one_line(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        keys.main(argv)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert words in line


def test_the_key_command_writes_rates_an_entry_reads_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert keys.main(["new", "slow", "--rate", "0.25", "--burst", "3"]) == 0
    entry = capsys.readouterr().out.splitlines()[3].strip()
    [parsed] = parse_keys(entry, admin=False, variable="V")
    assert entry.endswith(":0.25:3") and parsed.rate_per_s == 0.25 and parsed.burst == 3
