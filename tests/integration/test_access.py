"""API keys, admin routes, rate limits and the body limit on a real service, and production
mode refusing to start open."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from models.settings import ModelSettings
from serving.access import hash_key
from serving.keys import new_key
from tests.support.models import mlflow_env
from tests.support.postgres import free_port
from tests.support.records import SNAKE
from tests.support.server import ROOT, Server, _bentoml, serve, server_env, stop

pytestmark = [pytest.mark.integration]

USER, ADMIN = new_key(), new_key()


@pytest.fixture(scope="module")
def guarded(
    mlflow_store: ModelSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("serve-guarded")
    env = {
        **mlflow_env(mlflow_store),
        "DATABASE_URL": f"sqlite:///{root / 'predictions.db'}",
        "CLIENTINSIGHT_ENV": "production",
        "CLIENTINSIGHT_API_KEYS": f"crm:{hash_key(USER)}:2:5",
        "CLIENTINSIGHT_ADMIN_KEYS": f"ops:{hash_key(ADMIN)}",
        "CLIENTINSIGHT_MAX_BODY_BYTES": str(64 * 1024),
    }
    # The readiness check reads /models, which now needs the admin key.
    with serve(env, root / "server.log", admin_key=ADMIN) as server:
        yield server


def _predict(server: Server, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/churn/predict", json={"customers": [SNAKE]}, headers=headers, timeout=30
    )


def test_keys_guard_predictions_and_admin_routes(guarded: Server) -> None:
    missing = _predict(guarded)
    assert missing.status_code == 401 and "X-API-Key" in missing.json()["error"]
    assert _predict(guarded, **{"X-API-Key": "ci_wrong"}).status_code == 401
    assert _predict(guarded, Authorization=f"Bearer {ADMIN}").status_code == 200
    models = httpx.get(f"{guarded.url}/models", headers={"X-API-Key": USER}, timeout=30)
    assert models.status_code == 403 and "'crm'" in models.json()["error"]
    assert httpx.get(f"{guarded.url}/models", headers={"X-API-Key": ADMIN}).status_code == 200
    for open_path in ("/livez", "/readyz", "/metrics", "/docs.json"):
        assert httpx.get(f"{guarded.url}{open_path}").status_code == 200, open_path
    log = guarded.log()
    assert USER not in log and ADMIN not in log
    assert "authentication is OFF" not in log


def test_a_key_over_its_rate_gets_429_then_recovers(guarded: Server) -> None:
    time.sleep(3)  # a full bucket
    answers = [_predict(guarded, **{"X-API-Key": USER}) for _ in range(12)]
    statuses = [answer.status_code for answer in answers]
    assert statuses[:5] == [200] * 5 and 429 in statuses
    # The first refusal itself: a request sent after it may find a token refilled meanwhile
    # (one each 0.5 s) on a loaded machine.
    limited = answers[statuses.index(429)]
    assert int(limited.headers["retry-after"]) >= 1 and "'crm'" in limited.json()["error"]
    time.sleep(int(limited.headers["retry-after"]) + 0.5)
    assert _predict(guarded, **{"X-API-Key": USER}).status_code == 200


def test_a_body_over_the_limit_is_413_naming_the_limit(guarded: Server) -> None:
    response = httpx.post(
        f"{guarded.url}/churn/predict_file",
        files={"file": ("big.csv", b"a,b\n" + b"1,2\n" * 40_000)},
        headers={"X-API-Key": ADMIN},
        timeout=30,
    )
    assert response.status_code == 413
    assert "over the limit of 65536 bytes" in response.json()["error"]


def test_production_without_keys_refuses_to_start(
    mlflow_store: ModelSettings, tmp_path: Path
) -> None:
    log_path = tmp_path / "server.log"
    env = {
        **mlflow_env(mlflow_store),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}",
        "CLIENTINSIGHT_ENV": "production",
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [_bentoml(), "serve", "service:ClientInsight", "--port", str(free_port())],
            cwd=ROOT,
            env=server_env(env, tmp_path),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the service kept running without keys in production mode")
    finally:
        stop(process)
    assert process.returncode != 0
    # One line naming the problem and the fix, not a traceback with the reason at the bottom.
    [line] = log_path.read_text(errors="replace").strip().splitlines()
    assert line.startswith("clientinsight: cannot start: CLIENTINSIGHT_ENV=production")
    assert "refusing to serve an open API" in line and "python -m serving.keys new" in line


def test_the_inference_protocol_needs_the_same_keys_and_limits(guarded: Server) -> None:
    import tritonclient.grpc as triton_grpc
    from tritonclient.utils import InferenceServerException

    missing = httpx.get(f"{guarded.url}/v2/models/churn")
    assert missing.status_code == 401 and isinstance(missing.json()["error"], str)
    assert httpx.get(f"{guarded.url}/v2/models/churn", headers={"X-API-Key": ADMIN}).is_success
    assert httpx.get(f"{guarded.url}/v2/health/ready").json() == {"ready": True}

    client = triton_grpc.InferenceServerClient(guarded.grpc)
    assert client.is_server_live() and client.is_server_ready()  # probes need no key
    with pytest.raises(InferenceServerException) as refused:
        client.get_model_metadata("churn")
    assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
    assert "missing API key" in refused.value.message()
    with pytest.raises(InferenceServerException) as wrong:
        client.get_model_metadata("churn", headers={"authorization": "Bearer ci_wrong"})
    assert wrong.value.status() == "StatusCode.UNAUTHENTICATED"
    admin = {"authorization": f"Bearer {ADMIN}"}
    assert client.get_model_metadata("churn", headers=admin).name == "churn"

    time.sleep(3)  # a full bucket: 5 requests, then 2 a second
    statuses = []
    for _ in range(12):
        try:
            client.get_model_metadata("churn", headers={"x-api-key": USER})
            statuses.append("OK")
        except InferenceServerException as error:
            statuses.append(error.status())
    assert statuses[:5] == ["OK"] * 5 and "StatusCode.RESOURCE_EXHAUSTED" in statuses
    assert USER not in guarded.log()


def test_a_grpc_stream_needs_a_key_and_each_request_counts_against_its_rate(
    guarded: Server,
) -> None:
    import tritonclient.grpc as triton_grpc

    from tests.support import oip

    client = triton_grpc.InferenceServerClient(guarded.grpc)
    admin = {"authorization": f"Bearer {ADMIN}"}
    columns = oip.typed_columns(oip.family_of("churn"), oip.ROWS["churn"][:1])
    inputs = oip.grpc_inputs(client.get_model_metadata("churn", headers=admin), columns)
    with oip.Stream(client) as stream:  # no key: the stream ends at once, before any request
        [(result, error)] = stream.take(1)
    assert result is None and error.status() == "StatusCode.UNAUTHENTICATED"
    assert "missing API key" in error.message()

    time.sleep(3)  # a full bucket: 5 requests, then 2 a second
    with oip.Stream(client, headers={"x-api-key": USER}) as stream:
        for i in range(12):
            client.async_stream_infer("churn", inputs, request_id=f"r-{i}")
        answers = stream.take(12)
    refused = [error for _, error in answers if error is not None]
    assert len(answers) - len(refused) >= 5 and refused, answers
    assert all("rate limit: the key 'crm'" in error.message() for error in refused)
    assert USER not in guarded.log()
