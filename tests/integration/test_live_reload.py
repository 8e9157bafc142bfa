"""The model lifecycle against a running service: a challenger is shadowed, promoted and rolled
back while clients keep calling, with no restart and no failed request.

Everything is real: MLflow on PostgreSQL (tracking-server mode), `bentoml serve` with two churn
model workers that poll the registry every second, predictions in PostgreSQL, concurrent
clients. The two churn versions are trained on different samples, so a response's probability
says which version really scored it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import mlflow.sklearn
import pytest
from sqlalchemy import select

from models import catalog
from models.registry import configure_mlflow
from models.settings import ModelSettings
from persistence.db import make_engine
from persistence.tables import predictions
from serving.oip.tensors import specs
from tests.support import oip
from tests.support.models import (
    mlflow_env,
    train_tiny_balance,
    train_tiny_churn,
    train_tiny_credit,
)
from tests.support.predictions import wait_for_rows
from tests.support.records import APPLICANT
from tests.support.server import Server, serve
from training import promotion
from training.data import load_churn
from training.shadow import reports

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.slow]

#: Seconds between registry polls in each model worker; each phase lasts several polls.
POLL_S = 1.0
PHASE_S = 5.0


@dataclass(frozen=True)
class Answer:
    at: float
    request_id: str
    customer: int
    version: str
    probability: float


@dataclass
class Load:
    """Clients posting one known customer per request until stopped."""

    url: str
    customers: list[dict[str, Any]]
    clients: int = 6
    answers: list[Answer] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self, offset: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            i = offset
            while not self._stop.is_set():
                i = (i + 1) % len(self.customers)
                try:
                    response = client.post(
                        "/churn/predict", json={"customers": [self.customers[i]]}
                    )
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code}: {response.text[:200]}")
                    continue
                [body] = response.json()
                self.answers.append(
                    Answer(
                        time.monotonic(),
                        response.headers["X-Request-ID"],
                        i,
                        body["model_version"],
                        body["churn_probability"],
                    )
                )

    def __enter__(self) -> Load:
        self._threads = [
            threading.Thread(target=self._run, args=(n * 7,), daemon=True)
            for n in range(self.clients)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


@dataclass
class Lifecycle:
    server: Server
    settings: ModelSettings
    customers: list[dict[str, Any]]
    #: Each version's churn probability for each customer, computed outside the service.
    expected: dict[str, list[float]]


def _requests(frame: Any) -> list[dict[str, Any]]:
    rows = frame.to_dict("records")
    for i, row in enumerate(rows):
        row["customer_id"] = f"c{i}"
        if isinstance(row["total_charges"], float) and math.isnan(row["total_charges"]):
            row["total_charges"] = None
    return list(rows)


@pytest.fixture(scope="module")
def lifecycle(postgres: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lifecycle]:
    root = tmp_path_factory.mktemp("lifecycle")
    settings = ModelSettings.model_validate(
        {
            "MLFLOW_TRACKING_URI": postgres.create_database(),
            "CLIENTINSIGHT_MLFLOW_ARTIFACT_ROOT": str(root / "artifacts"),
        }
    )
    assert train_tiny_churn(settings).version == "1"
    train_tiny_credit(settings)
    train_tiny_balance(settings)  # every family in the catalog must load for the server to start
    # A different sample: a model whose answers differ from version 1's.
    second = train_tiny_churn(settings, rows=900)
    assert second.version == "2" and not second.promoted

    frame = load_churn(sample=40, seed=3).features
    configure_mlflow(settings)
    expected = {
        v: mlflow.sklearn.load_model(f"models:/churn/{v}").predict_proba(frame)[:, 1].tolist()
        for v in ("1", "2")
    }
    assert max(abs(a - b) for a, b in zip(expected["1"], expected["2"], strict=True)) > 1e-3
    env = {
        **mlflow_env(settings),
        "DATABASE_URL": postgres.create_database(),
        "CLIENTINSIGHT_JOURNAL_DIR": str(root / "journal"),
        "CLIENTINSIGHT_CHURN_WORKERS": "2",
        "CLIENTINSIGHT_RELOAD_INTERVAL_S": str(POLL_S),
        "CLIENTINSIGHT_SHADOW_SAMPLE": "1",
    }
    with serve(env, Path(root) / "server.log") as server:
        yield Lifecycle(server, settings, _requests(frame), expected)


def _models(server: Server) -> dict[tuple[str, str], dict[str, Any]]:
    listed = httpx.get(f"{server.url}/models", timeout=10).json()["models"]
    return {(m["name"], m["alias"]): m for m in listed}


def _swaps(server: Server) -> dict[str, int]:
    """How many times each churn worker has logged that it swapped versions."""
    lines = server.log().splitlines()
    return {
        worker: sum(1 for line in lines if worker in line and "now serving" in line)
        for worker in ("churn_model:1", "churn_model:2")
    }


def _wait_for_swaps(server: Server, before: dict[str, int], timeout: float = 60) -> None:
    """Wait until every churn worker has swapped once more than in `before`."""
    deadline = time.monotonic() + timeout
    while any(now <= before[w] for w, now in _swaps(server).items()):
        assert time.monotonic() < deadline, (before, _swaps(server))
        time.sleep(0.2)


def _pinned(lifecycle: Lifecycle, version: str) -> tuple[int, Any]:
    """The Open Inference Protocol pinned to `version`: (status, churn probability)."""
    [family] = [f for f in catalog.FAMILIES if f.name == "churn"]
    columns = oip.typed_columns(family, lifecycle.customers[:1])
    datatypes = {t.name: t.datatype for t in specs(family.record)}
    body = {
        "inputs": [
            {"name": n, "datatype": datatypes[n], "shape": [1], "data": v}
            for n, v in columns.items()
        ]
    }
    answer = httpx.post(
        f"{lifecycle.server.url}/v2/models/churn/versions/{version}/infer", json=body, timeout=30
    )
    if answer.status_code != 200:
        return answer.status_code, None
    outputs = {o["name"]: o["data"][0] for o in answer.json()["outputs"]}
    assert outputs["model_version"] == version
    return 200, outputs["churn_probability"]


def test_shadow_promote_and_roll_back_under_load_without_a_failed_request(
    lifecycle: Lifecycle,
) -> None:
    server, settings = lifecycle.server, lifecycle.settings
    phases: dict[str, float] = {}
    pinned: dict[str, tuple[int, Any]] = {}
    with Load(server.url, lifecycle.customers) as load:
        time.sleep(PHASE_S)
        pinned["2 before it is loaded"] = _pinned(lifecycle, "2")
        phases["challenger"] = time.monotonic()
        before = _swaps(server)
        promotion.promote("churn", "2", alias="challenger", settings=settings)
        time.sleep(PHASE_S)
        # On two busy cores a worker can take longer than a phase to load the challenger; the
        # promotion below must find it loaded in both, or it is loaded fresh as champion.
        _wait_for_swaps(server, before)
        pinned["2 as challenger"] = _pinned(lifecycle, "2")
        phases["promoted"] = time.monotonic()
        promoted_at = datetime.now(UTC)
        done = promotion.promote("churn", "2", force=True, settings=settings)
        assert done.previous == "1" and done.cleared_challenger
        time.sleep(PHASE_S)
        pinned["1 as standby"] = _pinned(lifecycle, "1")
        listed = _models(server)
        phases["rolled back"] = time.monotonic()
        promotion.promote("churn", "1", force=True, settings=settings)
        time.sleep(PHASE_S)
    answers = load.answers

    # A version-pinned Open Inference Protocol request is served by whichever role holds that
    # version (challenger, standby), and is a 404 while no role does.
    first = lifecycle.customers[0]["customer_id"]
    assert pinned["2 before it is loaded"] == (404, None)
    for case, version in (("2 as challenger", "2"), ("1 as standby", "1")):
        status, probability = pinned[case]
        assert status == 200, case
        assert probability == pytest.approx(lifecycle.expected[version][0], abs=1e-9), (case, first)

    # Nothing failed, and there was real traffic throughout.
    assert load.failures == []
    assert len(answers) > 200
    # Every answer's probability is exactly what the version it names computes.
    for answer in answers:
        want = lifecycle.expected[answer.version][answer.customer]
        assert answer.probability == pytest.approx(want, abs=1e-9), answer

    # Version 1, then 2 (within a poll of the promotion, in both workers), then 1 again.
    def versions(start: float, end: float) -> set[str]:
        return {a.version for a in answers if start <= a.at < end}

    grace = 2 * POLL_S + 1.5  # a poll, a load, a request in flight
    assert versions(0, phases["promoted"]) == {"1"}
    assert versions(phases["promoted"] + grace, phases["rolled back"]) == {"2"}
    assert versions(phases["rolled back"] + grace, math.inf) == {"1"}

    # GET /models showed version 2 as champion, with a load time, and no challenger any more.
    champion = listed[("churn", "champion")]
    assert champion["version"] == "2"
    assert datetime.fromisoformat(champion["loaded_at"]) <= promoted_at  # loaded as challenger
    assert champion["reload"]["swaps"] >= 2 and champion["reload"]["last_error"] is None
    assert ("churn", "challenger") not in listed
    assert champion["standby_version"] == "1"  # kept loaded: the rollback below loads nothing

    # Both churn workers swapped on their own (each logs its swaps).
    for worker, swapped in _swaps(server).items():
        assert swapped >= 3, (worker, swapped)

    # Every champion row carries the version its response named.
    answered = {a.request_id: a.version for a in answers}
    assert wait_for_rows(server.database_url, len(answered), list(answered), timeout=30) >= len(
        answered
    )
    engine = make_engine(server.database_url)
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                predictions.c.id,
                predictions.c.request_id,
                predictions.c.model_version,
                predictions.c.role,
                predictions.c.shadow_of,
                predictions.c.score,
            )
        ).all()
    engine.dispose()
    champions = {r.id: r for r in rows if r.role == "champion"}
    for row in champions.values():
        if row.request_id in answered:
            assert row.model_version == answered[row.request_id]

    # While version 2 was the challenger, sampled requests were shadowed: same request id, a
    # pointer to the champion row, the challenger's own probability.
    shadows = [r for r in rows if r.role == "challenger"]
    assert shadows
    for shadow in shadows:
        champion_row = champions[shadow.shadow_of]
        assert champion_row.request_id == shadow.request_id
        assert (champion_row.model_version, shadow.model_version) == ("1", "2")
    [found] = reports("churn", settings=settings, database_url=server.database_url)
    assert (found.live.champion_version, found.live.challenger_version) == ("1", "2")
    assert found.live.rows == len(shadows)
    assert 0 <= found.live.label_agreement <= 1
    assert found.live.mean_abs_score_delta and found.live.mean_abs_score_delta > 0
    # Version 2 trained on another sample: the gate's figures, if any, come from shared rows.
    assert found.gate is None or (found.gate[0] == "holdout ROC AUC" and found.gate[3] >= 100)
    assert "holdout_roc_auc" in found.metric_deltas()


def test_a_version_that_cannot_load_keeps_the_current_one_serving(lifecycle: Lifecycle) -> None:
    """A promoted version whose artifacts are gone: the reload fails, is reported in
    `GET /models`, and the previous version goes on answering."""
    server, settings = lifecycle.server, lifecycle.settings
    third = train_tiny_churn(settings, rows=800).version
    assert third is not None
    client = configure_mlflow(settings)
    source = client.get_model_version("churn", third).source
    logged = settings.mlflow_artifact_root / "models" / str(source).removeprefix("models:/")
    removed = list(logged.rglob("*.skops"))
    assert removed
    for path in removed:
        path.unlink()
    before = _models(server)[("churn", "champion")]["version"]
    # Straight to the alias: the promotion gate itself would refuse an unloadable model.
    client.set_registered_model_alias("churn", "champion", third)
    time.sleep(3 * POLL_S + 1)
    champion = _models(server)[("churn", "champion")]
    assert champion["version"] == before
    assert champion["reload"]["last_error"]
    response = httpx.post(
        f"{server.url}/churn/predict", json={"customers": [lifecycle.customers[0]]}, timeout=10
    )
    assert response.status_code == 200 and response.json()[0]["model_version"] == before


def test_a_credit_approval_challenger_is_shadowed_with_the_champion_segment_model(
    lifecycle: Lifecycle,
) -> None:
    """One half of the credit pair as challenger: the shadow decision uses the challenger
    approval model with the serving segment model, and names both versions."""
    server, settings = lifecycle.server, lifecycle.settings
    second = train_tiny_credit(settings)
    approval = second.approval.version
    assert approval is not None and approval != "1"
    promotion.promote("credit-approval", approval, alias="challenger", settings=settings)
    deadline = time.monotonic() + 10 * POLL_S
    while ("credit-approval", "challenger") not in _models(server):
        assert time.monotonic() < deadline, "the credit worker never loaded the challenger"
        time.sleep(0.2)
    applicants = [{**APPLICANT, "applicant_id": f"a{i}", "income": 1 + i / 2} for i in range(5)]
    response = httpx.post(f"{server.url}/credit/evaluate", json={"applicants": applicants})
    assert response.status_code == 200
    request_id = response.headers["X-Request-ID"]
    assert wait_for_rows(server.database_url, 10, [request_id]) == 10
    engine = make_engine(server.database_url)
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                predictions.c.role, predictions.c.model_versions, predictions.c.model_name
            ).where(predictions.c.request_id == request_id)
        ).all()
    engine.dispose()
    roles = {r.role: r for r in rows}
    assert {r.model_name for r in rows} == {"credit-evaluation"}
    assert roles["champion"].model_versions == {"credit-segment": "1", "credit-approval": "1"}
    assert roles["challenger"].model_versions == {
        "credit-segment": "1",
        "credit-approval": approval,
    }
