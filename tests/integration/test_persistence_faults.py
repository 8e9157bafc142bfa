"""Nothing answered is lost: PostgreSQL stopped mid-load, SIGTERM mid-load, kill -9 of the API
worker. A real PostgreSQL cluster of the test's own (so it can be stopped), a real service,
real concurrent clients; every count is of real rows."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from models.settings import ModelSettings
from persistence.db import make_engine
from persistence.tables import predictions
from tests.support.models import mlflow_env
from tests.support.parts import missing
from tests.support.postgres import Cluster, find_bindir, throwaway_cluster
from tests.support.records import SNAKE
from tests.support.server import Server, serve, stop

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.slow]

#: How long the database stays down (the issue's scenario).
OUTAGE_S = 30
#: The documented loss window for kill -9 of the API worker (docs/persistence.md,
#: "Guarantees"): rows answered within one flush interval (0.25 s) before the kill, plus the
#: batch being written.
KILL_LOSS_WINDOW_S = 1.0


@dataclass
class Answered:
    request_id: str
    done: float


@dataclass
class Load:
    """Clients posting single-customer churn requests until stopped."""

    url: str
    clients: int = 6
    answered: list[Answered] = field(default_factory=list)
    failures: list[tuple[float, int, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post("/churn/predict", json={"customers": [SNAKE]})
                except httpx.HTTPError as exc:
                    self.failures.append((time.monotonic(), -1, repr(exc)))
                    time.sleep(0.05)
                    continue
                if response.status_code == 200:
                    self.answered.append(
                        Answered(response.headers["x-request-id"], time.monotonic())
                    )
                else:
                    self.failures.append((time.monotonic(), response.status_code, response.text))
                time.sleep(0.01)

    def __enter__(self) -> Load:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A cluster this test alone uses, so stopping it disturbs no other test."""
    if find_bindir() is None:
        missing("postgres", "no PostgreSQL server binaries (initdb) found")
    with throwaway_cluster() as cluster:
        yield cluster


def _env(mlflow_store: ModelSettings, database_url: str, journal: Path) -> dict[str, str]:
    return {
        **mlflow_env(mlflow_store),
        "DATABASE_URL": database_url,
        "CLIENTINSIGHT_JOURNAL_DIR": str(journal),
    }


def _stored_request_ids(database_url: str, timeout: float, expected: set[str]) -> set[str]:
    """The request ids in `predictions`, polled until `expected` are all there or time is up."""
    engine = make_engine(database_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as conn:
                rows = list(conn.execute(select(predictions.c.request_id)).scalars())
            stored = set(rows)
            assert len(rows) == len(stored), "a request's row was written twice"
            if expected <= stored or time.monotonic() > deadline:
                return stored
            time.sleep(0.25)
    finally:
        engine.dispose()


def _metric(server: Server, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    values = re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, flags=re.MULTILINE)
    return sum(float(v) for v in values)


def test_postgres_down_for_30_seconds_loses_nothing(
    own_cluster: Cluster, mlflow_store: ModelSettings, tmp_path: Path
) -> None:
    database_url = own_cluster.create_database()
    env = _env(mlflow_store, database_url, tmp_path / "journal")
    with serve(env, tmp_path / "s.log", faults_expected=True) as server:
        with Load(server.url) as load:
            time.sleep(3)
            own_cluster.stop()
            stopped = time.monotonic()
            time.sleep(OUTAGE_S)
            during = [a for a in load.answered if a.done > stopped]
            own_cluster.start()
            time.sleep(3)
        answered = {a.request_id for a in load.answered}
        assert not load.failures, f"predictions failed during the outage: {load.failures[:3]}"
        assert len(during) > 100, "too little load during the outage to prove anything"
        stored = _stored_request_ids(database_url, 60, answered)
        assert stored == answered, f"{len(answered - stored)} answered rows missing"
        spilled = _metric(server, "clientinsight_rows_spilled_total")
        replayed = _metric(server, "clientinsight_rows_replayed_total")
    assert spilled >= len(during) and replayed == spilled
    print(
        f"outage {OUTAGE_S}s: {len(answered)} answered ({len(during)} while down), "
        f"{len(stored)} rows stored, 0 failed; spilled {spilled:.0f}, replayed {replayed:.0f}"
    )


def test_outage_counters_on_metrics(
    own_cluster: Cluster, mlflow_store: ModelSettings, tmp_path: Path
) -> None:
    """The writer's counters are on /metrics and move the way an operator would expect."""
    database_url = own_cluster.create_database()
    with serve(
        _env(mlflow_store, database_url, tmp_path / "journal"),
        tmp_path / "s.log",
        faults_expected=True,  # the database is stopped under it
    ) as server:
        ok = httpx.post(f"{server.url}/churn/predict", json={"customers": [SNAKE]}, timeout=30)
        assert ok.status_code == 200
        time.sleep(1)
        assert _metric(server, "clientinsight_rows_written_total") >= 1
        own_cluster.stop()
        for _ in range(5):
            httpx.post(f"{server.url}/churn/predict", json={"customers": [SNAKE]}, timeout=30)
        time.sleep(1.5)
        assert _metric(server, "clientinsight_rows_spilled_total") >= 5
        assert _metric(server, "clientinsight_journal_rows") >= 5
        own_cluster.start()
        deadline = time.monotonic() + 30
        while _metric(server, "clientinsight_journal_rows") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _metric(server, "clientinsight_journal_rows") == 0
        assert _metric(server, "clientinsight_rows_replayed_total") >= 5
        assert _metric(server, "clientinsight_queue_depth") == 0


def test_sigterm_mid_load_keeps_every_answered_row(
    own_cluster: Cluster, mlflow_store: ModelSettings, tmp_path: Path
) -> None:
    database_url = own_cluster.create_database()
    env = _env(mlflow_store, database_url, tmp_path / "journal")
    with (
        serve(env, tmp_path / "first.log", faults_expected=True) as server,
        Load(server.url) as load,
    ):
        time.sleep(4)
        stop(server.process)  # SIGTERM to the whole service while the clients keep sending
        assert server.process.returncode is not None
    answered = {a.request_id for a in load.answered}
    assert len(answered) > 100
    with serve(
        env, tmp_path / "second.log", faults_expected=True
    ):  # a restart replays whatever was journaled
        stored = _stored_request_ids(database_url, 30, answered)
    assert answered <= stored, f"{len(answered - stored)} answered rows missing after SIGTERM"
    print(f"SIGTERM mid-load: {len(answered)} answered, all {len(answered)} rows stored")


def test_kill_9_of_the_api_worker_loses_at_most_the_documented_window(
    own_cluster: Cluster, mlflow_store: ModelSettings, tmp_path: Path
) -> None:
    database_url = own_cluster.create_database()
    env = _env(mlflow_store, database_url, tmp_path / "journal")
    with serve(env, tmp_path / "s.log", faults_expected=True) as server, Load(server.url) as load:
        time.sleep(4)
        victim = server.worker("clientinsight")
        killed = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        deadline = killed + 90
        while time.monotonic() < deadline:
            if [a for a in load.answered if a.done > killed + 1]:
                break
            time.sleep(0.5)
        recovered = [a for a in load.answered if a.done > killed + 1]
        assert recovered, "the service did not answer again within 90 s of the kill"
        assert server.worker("clientinsight").pid != victim.pid
        time.sleep(2)
    answered = {a.request_id: a.done for a in load.answered}
    stored = _stored_request_ids(database_url, 30, set(answered))
    lost = {rid: done for rid, done in answered.items() if rid not in stored}
    outside = [done for done in lost.values() if done < killed - KILL_LOSS_WINDOW_S]
    assert not outside, f"{len(outside)} rows lost outside the documented window"
    print(
        f"kill -9 of the API worker: {len(answered)} answered, {len(lost)} lost, all answered "
        f"within {KILL_LOSS_WINDOW_S}s before the kill; answering again "
        f"{recovered[0].done - killed:.1f}s after it"
    )
