"""BentoML services: the entry API and one model service per model family, and the routes.

    bentoml serve service:ClientInsight --port 3000

The entry service (`ClientInsight`) calls the model services over a process boundary
(`bentoml.depends`), applies the business decision from `models/`, and hands every prediction to
the persistence hook; concurrent requests are batched adaptively before the hop
(`serving/batching.py`). Its routes, declared at the end, live on a mounted FastAPI app: the
route table (`serving/routes.py`) reads and validates bodies and uploads and writes answers, the
front door (`serving/access.py`) checks keys and limits first. Inference lives in `ChurnModel`
and `CreditModels`, each in its own worker processes, so one failing model family leaves the
others serving. No feature logic and no SQL here: those live in `models/` and `persistence/`.
"""

from __future__ import annotations

import os

# scikit-learn's OpenMP threads thrash against the server's own on small machines.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

import aiohttp
import bentoml
import pandas as pd
from bentoml.exceptions import ServiceUnavailable
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from models import churn, credit, tabular
from models.settings import get_settings
from persistence.db import make_engine
from persistence.settings import get_settings as get_persistence_settings
from persistence.writer import (
    Column,
    PredictionBlock,
    PredictionWriter,
    prediction_block,
    record_columns,
)
from serving import bundles, errors, openapi, tuning
from serving.access import AccessGuard, AccessPolicy
from serving.batching import CallStats, MicroBatcher
from serving.errors import ApiError
from serving.live import LiveModels
from serving.metrics import WriterMetrics
from serving.routes import RouteTable, Scored, Upload
from serving.settings import get_settings as get_access_settings
from serving.settings import refuse_bad_configuration
from serving.shadow import Shadow
from serving.uploads import offload

log = logging.getLogger("clientinsight")
# Model loads and swaps are operational events: logged at INFO whatever the root level is.
for _name in ("clientinsight", "models.registry"):
    logging.getLogger(_name).setLevel(logging.INFO)
T = TypeVar("T")
#: What `_chunks` cuts: records, or a frame (sliced by row position either way).
Chunked = TypeVar("Chunked", list[Any], pd.DataFrame)

#: The public routes (declared at the end of this module) live on this app, which the entry
#: service mounts; BentoML adds its probes, /metrics and /docs.json beside them.
app = FastAPI(title="ClientInsight", docs_url=None, redoc_url=None, openapi_url=None)
errors.install(app)
routes = RouteTable(app)

# The configuration, checked here (from the environment only), so that a mistake in it (say,
# production without keys) stops `bentoml serve` itself with one line naming it, instead of a
# worker that keeps failing to start.
settings = refuse_bad_configuration(get_settings)
ACCESS_SETTINGS = refuse_bad_configuration(get_access_settings)
#: Who may call the public API, and how much.
ACCESS = refuse_bad_configuration(lambda: AccessPolicy(ACCESS_SETTINGS, routes.body_limit))

#: Connection recycling every 100 requests closes sessions with calls in flight (a third of
#: requests failed at 64 clients): keep the dependency connection for the worker's life.
_LONG_LIVED_CONNECTION = {"max_requests": 1_000_000_000, "max_age": 1e9}
#: Per-request observability: spans only when asked for; the internal hop is not access-logged.
_TRACING = {} if settings.tracing else tuning.untraced()
_INTERNAL = {"tracing": _TRACING, "logging": {"access": {"enabled": False}}}


@bentoml.service(
    name="churn_model",
    workers=settings.churn_workers,
    traffic={"timeout": settings.model_timeout_s},
    runner_connection=_LONG_LIVED_CONNECTION,
    **_INTERNAL,
)
class ChurnModel:
    """`churn@champion` (and `@challenger`, if any) in its own processes; scores the batches
    the entry assembles and follows the registry's aliases (`serving/live.py`)."""

    def __init__(self) -> None:
        self.live = LiveModels(
            "churn",
            load=lambda previous: bundles.ChurnBundle.load(previous, settings),
            watch=bundles.watch(settings, churn.MODEL_NAME),
            interval_s=settings.reload_interval_s,
        )
        self.live.start()
        self.calls = CallStats()  # this model worker's view of the batches
        tuning.tune_garbage_collector()

    # list[Customer]: the contract is validated again on this side of the process boundary.
    @bentoml.api
    def predict(self, customers: list[churn.Customer]) -> list[churn.ChurnPrediction]:
        """One batch (requests coalesced by the entry service, or a chunk of an uploaded file)."""
        self.calls.add(len(customers))
        served = self.live.current.champion  # read once: the version reported is the one used
        return churn.score(
            served.predictor, customers, served.threshold, served.version, served.explainer
        )

    @bentoml.api
    def predict_frame(self, features: pd.DataFrame) -> pd.DataFrame:
        """A chunk of an uploaded file, as feature columns validated by the entry service:
        no record per row on either side of the hop (`churn.outcome_frame` columns back)."""
        self.calls.add(len(features))
        served = self.live.current.champion
        return churn.score_frame(
            served.predictor, features, served.threshold, served.version, served.explainer
        )

    @bentoml.api
    def shadow(self, customers: list[churn.Customer]) -> list[churn.ChurnPrediction]:
        """The challenger's answers for a sample of traffic; empty when there is none."""
        challenger = self.live.current.challenger
        if challenger is None:
            return []
        return churn.score(
            challenger.predictor,
            customers,
            challenger.threshold,
            challenger.version,
            challenger.explainer,
        )

    @bentoml.api
    def describe(self) -> list[dict[str, Any]]:
        bundle = self.live.current
        worker = {
            "model_worker_calls": self.calls.as_dict(),
            "reload": self.live.status(),
            # Kept loaded: promoting it back (a rollback) swaps without loading.
            "standby_version": bundle.standby.version if bundle.standby else None,
        }
        served = [bundle.champion, bundle.challenger]
        return [{**model.describe(), **worker} for model in served if model is not None]


@bentoml.service(
    name="credit_models",
    workers=settings.credit_workers,
    traffic={"timeout": settings.model_timeout_s},
    runner_connection=_LONG_LIVED_CONNECTION,
    **_INTERNAL,
)
class CreditModels:
    """`credit-segment` and `credit-approval` (`@champion`, and `@challenger` where set) in
    their own processes, following the registry's aliases (`serving/live.py`)."""

    def __init__(self) -> None:
        self.live = LiveModels(
            "credit",
            load=lambda previous: bundles.CreditBundle.load(previous, settings),
            watch=bundles.watch(settings, credit.SEGMENT_MODEL, credit.APPROVAL_MODEL),
            interval_s=settings.reload_interval_s,
        )
        self.live.start()
        self.calls = CallStats()  # this model worker's view of the batches
        tuning.tune_garbage_collector()

    @bentoml.api
    def assess(self, applicants: list[credit.Applicant]) -> list[credit.CreditAssessment]:
        """Both models on one batch: segment and approval probability per applicant."""
        self.calls.add(len(applicants))
        return self.live.current.champion.assess(applicants)

    @bentoml.api
    def shadow(self, applicants: list[credit.Applicant]) -> list[credit.CreditAssessment]:
        """The challenger pair's assessments for a sample of traffic; empty when there is none."""
        challenger = self.live.current.challenger
        return [] if challenger is None else challenger.assess(applicants)

    @bentoml.api
    def describe(self) -> list[dict[str, Any]]:
        bundle = self.live.current
        worker = {
            "model_worker_calls": self.calls.as_dict(),
            "reload": self.live.status(),
            "standby_versions": bundle.standby.versions if bundle.standby else None,
        }
        described: list[dict[str, Any]] = []
        for pair in (bundle.champion, bundle.challenger):
            if pair is None:
                continue
            segments = {"segments": pair.segmentation.to_dict()}
            for model, extra in ((pair.segment, segments), (pair.approval, {})):
                if model.alias == settings.serving_alias and pair is bundle.challenger:
                    continue  # the champion half of a challenger pair is listed once
                described.append({**model.describe(), **extra, **worker})
        return described


def _chunks(items: Chunked) -> list[Chunked]:
    """An upload's records or feature rows in model-service calls of `file_chunk_rows`."""
    size = settings.file_chunk_rows
    return [items[i : i + size] for i in range(0, len(items), size)]


@bentoml.service(
    name="clientinsight",
    workers=settings.api_workers,
    traffic={"timeout": 300},
    http={"host": ACCESS_SETTINGS.host},
    tracing=_TRACING,
    logging={"access": {"enabled": settings.access_log}},
)
@bentoml.asgi_app(app, path="/")
class ClientInsight:
    """The public API on port 3000: the routes are declared at the end of this module."""

    churn_model = bentoml.depends(ChurnModel)
    credit_models = bentoml.depends(CreditModels)

    def __init__(self) -> None:
        log.log(logging.WARNING if ACCESS.open else logging.INFO, ACCESS.describe())
        db = get_persistence_settings()
        if db.auto_migrate:
            from persistence.migrate import upgrade

            upgrade(db.database_url)
        # One journal per API worker: a restarted worker replays what its predecessor spilled.
        worker = bentoml.server_context.worker_index or 1
        self.writer = PredictionWriter(
            lambda: make_engine(db.database_url),
            journal_dir=db.journal_dir / f"api-worker-{worker}",
            fsync=db.journal_fsync,
            batch_rows=db.writer_batch_rows,
            flush_interval_s=db.writer_flush_interval_s,
            max_queue_rows=db.writer_max_queue_rows,
            metrics=WriterMetrics(),
        )
        self.writer.start()
        # Concurrent API requests share model-service calls (serving/batching.py says why).
        self.churn_batcher: MicroBatcher[churn.Customer, churn.ChurnPrediction] = MicroBatcher(
            lambda batch: self._hop(self.churn_model.to_async.predict(batch)),
            max_batch_size=settings.churn_max_batch_size,
            max_in_flight=settings.model_calls_in_flight,
        )
        self.credit_batcher: MicroBatcher[credit.Applicant, credit.CreditAssessment] = MicroBatcher(
            lambda batch: self._hop(self.credit_models.to_async.assess(batch)),
            max_batch_size=settings.credit_max_batch_size,
            max_in_flight=settings.model_calls_in_flight,
        )
        # A sample of requests, scored again by the challenger after the answer has gone.
        self.churn_shadow: Shadow[churn.Customer, churn.ChurnPrediction] = Shadow(
            "churn",
            lambda batch: self._hop(self.churn_model.to_async.shadow(batch)),
            lambda customers, predictions, champion, started: self._persist_shadow(
                churn, champion, record_columns(predictions), started
            ),
            sample=settings.shadow_sample,
            max_pending=settings.shadow_max_pending,
            idle_s=settings.reload_interval_s,
        )
        self.credit_shadow: Shadow[credit.Applicant, credit.CreditAssessment] = Shadow(
            "credit",
            lambda batch: self._hop(self.credit_models.to_async.shadow(batch)),
            lambda applicants, assessments, champion, started: self._persist_shadow(
                credit,
                champion,
                record_columns(credit.decide_all(applicants, assessments)),
                started,
            ),
            sample=settings.shadow_sample,
            max_pending=settings.shadow_max_pending,
            idle_s=settings.reload_interval_s,
        )
        tuning.tune_garbage_collector()

    @staticmethod
    async def _hop(call: Awaitable[T]) -> T:
        """One model-service call, never longer than the model timeout (frees the call slot)."""
        return await asyncio.wait_for(call, timeout=settings.model_timeout_s)

    @bentoml.on_shutdown
    def _flush_predictions(self) -> None:
        self.writer.close()

    async def _call(self, family: str, call: Callable[[], Awaitable[T]]) -> T:
        """The model service's answer, or a 503 naming the model family and the reason when it
        fails or does not answer within the model timeout.

        A pooled connection the model worker already closed fails before anything is scored
        (aiohttp's ClientOSError / ServerDisconnectedError): that one call is retried once.
        """
        deadline = time.monotonic() + settings.model_timeout_s
        try:
            try:
                return await asyncio.wait_for(call(), timeout=settings.model_timeout_s)
            except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
                remaining = max(0.001, deadline - time.monotonic())
                return await asyncio.wait_for(call(), timeout=remaining)
        except Exception as exc:  # every failure of a model service is a 503 to the caller
            if isinstance(exc, TimeoutError):
                reason = f"no answer within {settings.model_timeout_s:g} s"
            elif isinstance(exc, ServiceUnavailable):
                # BentoML hides the model service's own message for 5xx answers.
                reason = "the model service is overloaded or restarting (it refused the request)"
            else:
                reason = errors.reason(exc)
            log.warning("%s model service failed: %s", family, reason)
            raise ApiError(
                503,
                f"the {family} model service is unavailable",
                code="model_unavailable",
                extra={"model": family, "reason": reason},
            ) from exc

    @staticmethod
    def _block(
        contract: Any,
        request_id: str,
        source: str,
        inputs: Mapping[str, Column],
        outputs: Mapping[str, Column],
        started: float,
        shadow_of: list[str] | None = None,
    ) -> PredictionBlock:
        """One request's rows as the `contract` (churn or credit) indexes them."""
        return prediction_block(
            model_name=contract.DECISION_NAME,
            primary_model=contract.PRIMARY_MODEL,
            request_id=request_id,
            source=source,
            inputs=inputs,
            outputs=outputs,
            entity_field=contract.ENTITY_FIELD,
            score_field=contract.SCORE_FIELD,
            label_field=contract.LABEL_FIELD,
            latency_ms=(time.perf_counter() - started) * 1000,
            shadow_of=shadow_of,
        )

    def _persist(
        self,
        contract: Any,
        source: str,
        inputs: Mapping[str, Column],
        outputs: Mapping[str, Column],
        started: float,
    ) -> PredictionBlock:
        """Hand one request's rows to the writer (never blocks); the rows, with their ids."""
        block = self._block(contract, str(uuid.uuid4()), source, inputs, outputs, started)
        self.writer.submit(block)
        return block

    def _persist_shadow(
        self,
        contract: Any,
        champion: PredictionBlock,
        outputs: Mapping[str, Column],
        started: float,
    ) -> None:
        """The challenger's answers for the champion's rows: same request, `shadow_of` each
        champion row; the inputs are the champion row's (not stored twice).

        Model workers swap versions independently: during a promotion the shadow call can
        reach a worker whose challenger is the version that already answered the request.
        Such a shadow compares a version with itself and is not stored.
        """
        shadow = self._block(
            contract, champion.request_id, champion.source, {}, outputs, started, champion.ids
        )
        if len(shadow) and shadow.model_versions[0] != champion.model_versions[0]:
            self.writer.submit(shadow)

    async def churn_predict(
        self, customers: list[churn.Customer]
    ) -> tuple[list[churn.ChurnPrediction], str]:
        """Churn probability, decision and risk band for one or more customers, in order."""
        started = time.perf_counter()
        predictions = await self._call("churn", lambda: self.churn_batcher.submit(customers))
        block = self._persist(
            churn, "api", record_columns(customers), record_columns(predictions), started
        )
        self.churn_shadow.offer(customers, block)
        return predictions, block.request_id

    async def churn_predict_file(self, upload: Upload) -> Scored:
        """A file's customers, scored in chunks of feature columns (no record per row)."""
        started = time.perf_counter()
        features = await offload(churn.feature_frame, upload.columns)
        chunks = await self._call(
            "churn",
            lambda: asyncio.gather(
                *(self.churn_model.to_async.predict_frame(c) for c in _chunks(features))
            ),
        )
        return await offload(self._churn_file_answer, upload, chunks, started)

    def _churn_file_answer(
        self, upload: Upload, chunks: list[pd.DataFrame], started: float
    ) -> Scored:
        frame = pd.concat(chunks, ignore_index=True)
        outcome: dict[str, Column] = {str(name): frame[name].to_numpy() for name in frame.columns}
        answers = {"customer_id": upload.columns["customer_id"], **outcome}
        block = self._persist(churn, "file", upload.columns, answers, started)
        return Scored(outcome, block.request_id)

    async def credit_evaluate(
        self, applicants: list[credit.Applicant]
    ) -> tuple[list[credit.CreditEvaluation], str]:
        """Can each applicant become a credit-card client? Decision, segment and reasons."""
        started = time.perf_counter()
        assessments = await self._call("credit", lambda: self.credit_batcher.submit(applicants))
        evaluations = credit.decide_all(applicants, assessments)
        block = self._persist(
            credit, "api", record_columns(applicants), record_columns(evaluations), started
        )
        self.credit_shadow.offer(applicants, block)
        return evaluations, block.request_id

    async def credit_evaluate_file(self, upload: Upload) -> Scored:
        """A file's applicants, assessed in chunks and decided by the same rule."""
        started = time.perf_counter()
        applicants = await offload(tabular.records, upload.columns, credit.Applicant)
        chunks = await self._call(
            "credit",
            lambda: asyncio.gather(
                *(self.credit_models.to_async.assess(c) for c in _chunks(applicants))
            ),
        )
        return await offload(self._credit_file_answer, upload, applicants, chunks, started)

    def _credit_file_answer(
        self,
        upload: Upload,
        applicants: list[credit.Applicant],
        chunks: list[list[credit.CreditAssessment]],
        started: float,
    ) -> Scored:
        evaluations = credit.decide_all(applicants, (a for c in chunks for a in c))
        block = self._persist(credit, "file", upload.columns, record_columns(evaluations), started)
        return Scored(credit.file_columns(evaluations), block.request_id)

    @app.get("/models")
    async def list_models(self) -> JSONResponse:
        """Which model versions are served, with their key metrics and load time."""
        families: dict[str, tuple[Any, MicroBatcher[Any, Any], Shadow[Any, Any], list[str]]] = {
            "churn": (self.churn_model, self.churn_batcher, self.churn_shadow, [churn.MODEL_NAME]),
            "credit": (
                self.credit_models,
                self.credit_batcher,
                self.credit_shadow,
                [credit.SEGMENT_MODEL, credit.APPROVAL_MODEL],
            ),
        }

        async def one(
            service: Any,
            batcher: MicroBatcher[Any, Any],
            shadow: Shadow[Any, Any],
            names: list[str],
        ) -> Any:
            # Batching and shadowing as this API worker sees them.
            batching = {
                "batching": batcher.stats.as_dict(),
                "shadow": {"sample": shadow.sample, **shadow.stats.as_dict()},
            }
            try:
                described = await asyncio.wait_for(
                    service.to_async.describe(), timeout=settings.model_timeout_s
                )
                return [{**model, **batching} for model in described]
            except Exception as exc:
                reason = errors.reason(exc)
                return [
                    {"name": n, "status": "unavailable", "reason": reason, **batching}
                    for n in names
                ]

        answers = await asyncio.gather(*(one(*family) for family in families.values()))
        return JSONResponse({"models": [m for answer in answers for m in answer]})


#: The class BentoML's decorator wraps: its methods are the routes' handlers.
entry = cast(Any, ClientInsight).inner
routes.predict(
    "/churn/predict",
    operation="churn_predict",
    field="customers",
    record=churn.Customer,
    answer=churn.ChurnPrediction,
    handler=entry.churn_predict,
    summary="Churn probability, decision, risk band and top factors per customer, in order",
)
routes.upload(
    "/churn/predict_file",
    operation="churn_predict_file",
    record=churn.Customer,
    aliases=churn.COLUMN_ALIASES,
    handler=entry.churn_predict_file,
    answer_name="churn_scores",
    summary="Score a CSV, Parquet or Arrow IPC file; the same format comes back with "
    f"{', '.join(churn.OUTPUT_COLUMNS)} and {churn.FACTORS_COLUMN} columns added",
)
routes.predict(
    "/credit/evaluate",
    operation="credit_evaluate",
    field="applicants",
    record=credit.Applicant,
    answer=credit.CreditEvaluation,
    handler=entry.credit_evaluate,
    summary="Can each applicant become a credit-card client? Decision, segment and reasons",
)
routes.upload(
    "/credit/evaluate_file",
    operation="credit_evaluate_file",
    record=credit.Applicant,
    aliases=credit.COLUMN_ALIASES,
    handler=entry.credit_evaluate_file,
    answer_name="credit_evaluations",
    summary="Evaluate a CSV, Parquet or Arrow IPC file of applicants; the same format comes "
    f"back with {', '.join(credit.OUTPUT_COLUMNS)} columns added",
)

ClientInsight.add_asgi_middleware(AccessGuard, policy=ACCESS)  # type: ignore[attr-defined]
tuning.fix_output_media_types(ChurnModel, CreditModels, ClientInsight)
tuning.release_request_timers()
tuning.quiet_readiness_probe()
openapi.install(routes)
