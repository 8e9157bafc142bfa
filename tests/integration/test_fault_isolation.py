"""A dying or hanging credit worker: /credit answers 503 in time, /churn keeps working,
credit recovers by itself. Real processes, real signals, real concurrent clients."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from models.settings import ModelSettings
from tests.support.models import mlflow_env
from tests.support.records import APPLICANT, SNAKE
from tests.support.server import Server, serve

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMEOUT_S = 3.0


@dataclass
class Load:
    """Concurrent clients on both families until stopped (bounded by `max_s`)."""

    url: str
    clients: int = 4
    max_s: float = 120
    results: list[tuple[str, int, float, float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self, family: str) -> None:
        route, body = (
            ("/churn/predict", {"customers": [SNAKE]})
            if family == "churn"
            else ("/credit/evaluate", {"applicants": [APPLICANT]})
        )
        deadline = time.monotonic() + self.max_s
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    response = client.post(route, json=body)
                    status, text = response.status_code, response.text
                except httpx.HTTPError as exc:
                    status, text = -1, repr(exc)
                self.results.append((family, status, started, time.monotonic() - started, text))
                time.sleep(0.02)

    def start(self) -> None:
        for i in range(self.clients):
            thread = threading.Thread(target=self._run, args=("churn" if i % 2 else "credit",))
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def since(self, family: str, t0: float) -> list[tuple[str, int, float, float, str]]:
        return [r for r in self.results if r[0] == family and r[2] >= t0]


def wait_until_credit_answers(url: str, timeout: float = 90) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            response = httpx.post(
                f"{url}/credit/evaluate", json={"applicants": [APPLICANT]}, timeout=10
            )
            if response.status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"credit did not recover within {timeout}s")


@pytest.fixture(scope="module")
def fragile_server(
    mlflow_store: ModelSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("serve-faults")
    env = {
        **mlflow_env(mlflow_store),
        "DATABASE_URL": f"sqlite:///{root / 'predictions.db'}",
        "CLIENTINSIGHT_MODEL_TIMEOUT_S": str(TIMEOUT_S),
    }
    # Killed and hung model workers: their 503s and tracebacks are what is under test.
    with serve(env, Path(root) / "server.log", faults_expected=True) as server:
        yield server


def _assert_isolated(load: Load, t0: float) -> None:
    churn = load.since("churn", t0)
    credit = load.since("credit", t0)
    assert churn and credit
    assert {r[1] for r in churn} == {200}, "churn must keep working while credit is down"
    assert {r[1] for r in credit} <= {200, 503}
    for _, status, _, elapsed, text in credit:
        if status == 503:
            assert '"model":"credit"' in text.replace(" ", "") and "reason" in text
        # Every credit answer, good or bad, comes within the configured timeout (+ slack).
        assert elapsed < TIMEOUT_S + 2.0, f"credit answered after {elapsed:.1f}s"


def test_killed_credit_worker(fragile_server: Server) -> None:
    load = Load(fragile_server.url)
    load.start()
    try:
        time.sleep(2)
        victim = fragile_server.worker("credit_model")
        t0 = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        time.sleep(1.0)
        recovery_s = wait_until_credit_answers(fragile_server.url)
        time.sleep(1.0)
    finally:
        load.stop()
    _assert_isolated(load, t0)
    credit = load.since("credit", t0)
    assert any(r[1] == 503 for r in credit), "the dead worker went unnoticed"
    assert credit[-1][1] == 200, "credit did not recover by itself"
    assert fragile_server.worker("credit_model").pid != victim.pid
    print(f"credit recovered {recovery_s:.1f}s after SIGKILL of its worker")


def test_hanging_credit_worker(fragile_server: Server) -> None:
    wait_until_credit_answers(fragile_server.url)
    load = Load(fragile_server.url)
    load.start()
    victim = fragile_server.worker("credit_model")
    try:
        time.sleep(1)
        t0 = time.monotonic()
        os.kill(victim.pid, signal.SIGSTOP)
        # Long enough that a request sent after the stop (not only one in flight before it)
        # meets a still-stopped worker for its whole timeout, however the timers line up.
        time.sleep(TIMEOUT_S * 3)
        os.kill(victim.pid, signal.SIGCONT)
        wait_until_credit_answers(fragile_server.url)
        time.sleep(1.0)
    finally:
        os.kill(victim.pid, signal.SIGCONT)
        load.stop()
    _assert_isolated(load, t0)
    refused = [r[4] for r in load.since("credit", t0) if r[1] == 503]
    assert any("no answer within 3 s" in text for text in refused), (
        f"the hang went unnoticed; 503 reasons: {sorted(set(refused))[:5]}"
    )
    assert load.since("credit", t0)[-1][1] == 200


def test_a_hanging_model_worker_is_a_503_over_the_inference_protocol(
    fragile_server: Server,
) -> None:
    """The Open Inference Protocol's refusals for a model service that does not answer: 503
    with `{"error"}` over REST, UNAVAILABLE over gRPC, an error answer on a stream (which goes
    on), each within the timeout; churn keeps answering."""
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http
    from tritonclient.utils import InferenceServerException

    from tests.support import oip

    wait_until_credit_answers(fragile_server.url)
    host = fragile_server.url.removeprefix("http://")
    rest = triton_http.InferenceServerClient(host, network_timeout=30)
    grpc_client = triton_grpc.InferenceServerClient(fragile_server.grpc)
    # Metadata first: it asks the model service which versions it has loaded.
    columns = oip.typed_columns(oip.family_of("credit-evaluation"), oip.ROWS["credit"])
    rest_inputs = oip.http_inputs(rest.get_model_metadata("credit-evaluation"), columns, True)
    credit = oip.grpc_inputs(grpc_client.get_model_metadata("credit-evaluation"), columns)
    churn = oip.grpc_inputs(
        grpc_client.get_model_metadata("churn"),
        oip.typed_columns(oip.family_of("churn"), oip.ROWS["churn"]),
    )
    victim = fragile_server.worker("credit_model")
    os.kill(victim.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(InferenceServerException) as over_rest:
            rest.infer("credit-evaluation", rest_inputs)
        assert over_rest.value.status() == "503"
        assert "credit" in over_rest.value.message()
        with pytest.raises(InferenceServerException) as over_grpc:
            grpc_client.infer("credit-evaluation", credit)
        assert over_grpc.value.status() == "StatusCode.UNAVAILABLE"
        with oip.Stream(grpc_client) as stream:
            grpc_client.async_stream_infer("credit-evaluation", credit, request_id="down")
            grpc_client.async_stream_infer("churn", churn, request_id="up")
            got = stream.take(2)
        # tritonclient hands an error answer over without its id: the error is credit's.
        answered = [result.get_response().id for result, error in got if error is None]
        errors = [error for _, error in got if error is not None]
        assert answered == ["up"], "churn must keep answering on the same stream"
        assert len(errors) == 1 and "credit" in errors[0].message()
        assert time.monotonic() - started < 3 * (TIMEOUT_S + 2.0)
    finally:
        os.kill(victim.pid, signal.SIGCONT)
    wait_until_credit_answers(fragile_server.url)
