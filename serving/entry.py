"""The entry service's work, the same for every family in the catalog.

Per family, a `Lane`: the family's model service (a `bentoml.depends` dependency, in its own
processes), the batcher that coalesces concurrent requests' records before the hop
(`serving/batching.py`), and the shadow that sends a sample to the challenger
(`serving/shadow.py`). A request is validated by the route table (`serving/routes.py`), scored
over its lane, decided by the family's rule (`Family.answers`) and handed to the persistence
hook (`persistence/writer.py`) as the family's `Recording` says. A model service that fails or
does not answer within the model timeout is a 503 naming the family and the reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import bentoml
import pandas as pd
from bentoml.exceptions import ServiceUnavailable

from models import tabular
from models.family import Family
from persistence.db import make_engine
from persistence.settings import get_settings as get_persistence_settings
from persistence.writer import (
    Column,
    PredictionBlock,
    PredictionWriter,
    Recording,
    prediction_block,
    record_columns,
)
from serving import errors, tuning
from serving.access import AccessPolicy
from serving.batching import MicroBatcher
from serving.errors import ApiError
from serving.metrics import GrpcMetrics, WriterMetrics
from serving.oip.dataplane import DataPlane, InferenceModel
from serving.routes import Scored, Upload
from serving.settings import family_settings, get_serving_settings
from serving.shadow import Shadow
from serving.uploads import offload

if TYPE_CHECKING:
    from serving.oip.grpc import GrpcServer

log = logging.getLogger("clientinsight")
T = TypeVar("T")
#: What `_chunks` cuts: records, or a frame (sliced by row position either way).
Chunked = TypeVar("Chunked", list[Any], pd.DataFrame)


def dependency(family: Family) -> str:
    """The entry service's attribute holding the family's model service."""
    return f"{family.name.replace('-', '_')}_model"


class ModelTimeout:
    """The one model timeout: every model-service call, and a request's whole wait (queue and
    call, with one retry), is bounded by it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def bound(self, call: Awaitable[T], deadline: float | None = None) -> T:
        """`call`'s result, or TimeoutError at `deadline` (monotonic), by default one timeout
        from now."""
        remaining = self.seconds if deadline is None else deadline - time.monotonic()
        return await asyncio.wait_for(call, timeout=max(0.001, remaining))

    def deadline(self) -> float:
        return time.monotonic() + self.seconds

    def reason(self) -> str:
        return f"no answer within {self.seconds:g} s"


@dataclass
class Lane:
    """One family's way to its model service from this API worker."""

    family: Family
    service: Any
    batcher: MicroBatcher[Any, Any]
    shadow: Shadow[Any, Any]


class Entry:
    """The entry service's class body; `entry_service` adds one dependency per family."""

    families: tuple[Family, ...] = ()
    policy: AccessPolicy | None = None
    #: The Open Inference Protocol's data plane; its gRPC server runs in each API worker.
    inference: DataPlane | None = None
    host: str = "127.0.0.1"

    def __init__(self) -> None:
        if self.policy is not None:
            log.log(logging.WARNING if self.policy.open else logging.INFO, self.policy.describe())
        db = get_persistence_settings()
        if db.auto_migrate:
            from persistence.migrate import upgrade

            upgrade(db.database_url)  # one API worker at a time (see upgrade)
        # One journal per API worker: a restarted worker replays what its predecessor spilled.
        worker = bentoml.server_context.worker_index or 1
        self.writer = PredictionWriter(
            lambda: make_engine(db.database_url),
            journal_dir=db.journal_dir / f"api-worker-{worker}",
            fsync=db.journal_fsync,
            batch_rows=db.writer_batch_rows,
            flush_interval_s=db.writer_flush_interval_s,
            linger_s=db.writer_linger_s,
            max_queue_rows=db.writer_max_queue_rows,
            metrics=WriterMetrics(),
        )
        self.writer.start()
        self.settings = get_serving_settings()
        self.timeout = ModelTimeout(self.settings.model_timeout_s)
        self.lanes = {family.name: self._lane(family) for family in self.families}
        tuning.tune_garbage_collector()

    def _lane(self, family: Family) -> Lane:
        service = getattr(self, dependency(family))
        settings = self.settings
        # Concurrent API requests share model-service calls (serving/batching.py says why);
        # each call is bounded by the timeout, so a stuck one frees its slot.
        batcher: MicroBatcher[Any, Any] = MicroBatcher(
            lambda batch: self.timeout.bound(service.to_async.predict(batch)),
            max_batch_size=family_settings(family.name).max_batch_size,
            max_in_flight=settings.model_calls_in_flight,
            fill_rows=settings.batch_fill_rows,
            max_hold_s=settings.batch_max_hold_s,
            busy_hold_s=settings.batch_busy_hold_s,
        )
        # A sample of requests, scored again by the challenger after the answer has gone.
        shadow: Shadow[Any, Any] = Shadow(
            family.name,
            lambda batch: self.timeout.bound(service.to_async.shadow(batch)),
            lambda records, outputs, champion, started: self._persist_shadow(
                family, champion, record_columns(family.answers(records, outputs)), started
            ),
            sample=settings.shadow_sample,
            max_pending=settings.shadow_max_pending,
            idle_s=settings.reload_interval_s,
        )
        return Lane(family, service, batcher, shadow)

    @bentoml.on_startup
    async def _serve_grpc(self) -> None:
        """The gRPC server, in this worker's event loop (BentoML serves HTTP only)."""
        self.grpc: GrpcServer | None = None
        port = self.settings.grpc_port
        if self.inference is None or self.policy is None or not port:
            return
        # Imported here: its generated protobuf module registers `inference.*` messages, which
        # clash with tritonclient.grpc's in a process that imports both (tests, clients).
        from serving.oip.grpc import GrpcServer

        self.grpc = GrpcServer(
            self.inference,
            self,
            self.policy,
            host=self.host,
            port=port,
            shared=self.settings.api_workers > 1,
            servers=self.settings.grpc_servers,
            max_message_bytes=self.policy.max_json_body_bytes,
            metrics=GrpcMetrics(),
        )
        await self.grpc.start()

    @bentoml.on_shutdown
    async def _shut_down(self) -> None:
        """gRPC calls in flight finish first, then every prediction is written."""
        grpc: GrpcServer | None = getattr(self, "grpc", None)
        if grpc is not None:
            await grpc.stop(grace_s=5.0)
        self.writer.close()

    async def _call(self, family: Family, call: Callable[[], Awaitable[T]]) -> T:
        """The model service's answer, or a 503 naming the family and the reason when it
        fails or does not answer within the model timeout.

        A pooled connection the model worker already closed fails before anything is scored
        (aiohttp's ClientOSError / ServerDisconnectedError): that one call is retried once.
        """
        deadline = self.timeout.deadline()
        try:
            try:
                return await self.timeout.bound(call(), deadline)
            except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
                return await self.timeout.bound(call(), deadline)
        except Exception as exc:  # every failure of a model service is a 503 to the caller
            reason = self._reason(exc)
            log.warning("%s model service failed: %s", family.name, reason)
            raise ApiError(
                503,
                f"the {family.name} model service is unavailable",
                code="model_unavailable",
                extra={"model": family.name, "reason": reason},
            ) from exc

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return self.timeout.reason()
        if isinstance(exc, ServiceUnavailable):
            # BentoML hides the model service's own message for 5xx answers.
            return "the model service is overloaded or restarting (it refused the request)"
        return errors.reason(exc)

    def _persist(
        self,
        recording: Recording,
        source: str,
        inputs: Mapping[str, Column],
        outputs: Mapping[str, Column],
        started: float,
        protocol: str = "http",
    ) -> PredictionBlock:
        """Hand one request's rows to the writer (never blocks); the rows, with their ids."""
        block = prediction_block(
            recording=recording,
            request_id=str(uuid.uuid4()),
            source=source,
            inputs=inputs,
            outputs=outputs,
            latency_ms=(time.perf_counter() - started) * 1000,
            protocol=protocol,
        )
        self.writer.submit(block)
        return block

    def _persist_shadow(
        self,
        family: Family,
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
        shadow = prediction_block(
            recording=family.recording,
            request_id=champion.request_id,
            source=champion.source,
            inputs={},
            outputs=outputs,
            latency_ms=(time.perf_counter() - started) * 1000,
            shadow_of=champion.ids,
            protocol=champion.protocol,
        )
        if len(shadow) and shadow.model_versions[0] != champion.model_versions[0]:
            self.writer.submit(shadow)

    async def predict(self, family: Family, records: Sequence[Any]) -> tuple[list[Any], str]:
        """The family's answers for one request's records, in order, and its request id."""
        started = time.perf_counter()
        lane = self.lanes[family.name]
        outputs = await self._call(family, lambda: lane.batcher.submit(records))
        answers = family.answers(records, outputs)
        block = self._persist(
            family.recording, "api", record_columns(records), record_columns(answers), started
        )
        lane.shadow.offer(records, block)
        return answers, block.request_id

    async def infer(
        self,
        target: InferenceModel,
        records: Sequence[Any],
        *,
        version: str | None,
        protocol: str,
    ) -> tuple[dict[str, list[Any]], str, str] | None:
        """An Open Inference Protocol request's answers as columns, the version that made
        them and the request id; None when `version` is pinned and not loaded.

        Unpinned, it is the JSON route's path: the family's batcher, then the shadow (for a
        family's decision). A pinned version is scored by the model worker's scorer that
        holds it (champion, challenger or standby), alone.
        """
        started = time.perf_counter()
        family = target.family
        lane = self.lanes[family.name]
        if version is None:
            outputs = await self._call(family, lambda: lane.batcher.submit(records))
        else:
            outputs = await self._call(
                family,
                lambda: lane.service.to_async.predict_version(records, target.model, version),
            )
            if not outputs:
                return None
        columns = target.columns(records, outputs)
        block = self._persist(
            target.recording, "api", record_columns(records), columns, started, protocol
        )
        if version is None and target.view is None:
            lane.shadow.offer(records, block)
        return columns, str(block.model_version[0]), block.request_id

    async def versions(self, family: Family) -> dict[str, dict[str, str | None]]:
        """The version each role holds per model of `family`; 503 when its service is down."""
        service = self.lanes[family.name].service
        versions: dict[str, dict[str, str | None]] = await self._call(
            family, lambda: service.to_async.versions()
        )
        return versions

    def _chunks(self, items: Chunked) -> list[Chunked]:
        """An upload's records or feature rows in model-service calls of `file_chunk_rows`."""
        size = self.settings.file_chunk_rows
        return [items[i : i + size] for i in range(0, len(items), size)]

    async def predict_file(self, family: Family, upload: Upload) -> Scored:
        """A file's rows, scored in chunks: as feature frames when the family declares its
        frame (no record per row), else as records decided by the family's rule."""
        started = time.perf_counter()
        service = self.lanes[family.name].service
        if family.feature_frame is not None:
            features = await offload(family.feature_frame, upload.columns)
            frames = await self._call(
                family,
                lambda: asyncio.gather(
                    *(service.to_async.predict_frame(c) for c in self._chunks(features))
                ),
            )
            return await offload(self._frame_answer, family, upload, frames, started)
        records = await offload(tabular.records, upload.columns, family.record)
        chunks = await self._call(
            family,
            lambda: asyncio.gather(*(service.to_async.predict(c) for c in self._chunks(records))),
        )
        return await offload(self._records_answer, family, upload, records, chunks, started)

    def _frame_answer(
        self, family: Family, upload: Upload, frames: list[pd.DataFrame], started: float
    ) -> Scored:
        frame = pd.concat(frames, ignore_index=True)
        outcome: dict[str, Column] = {str(name): frame[name].to_numpy() for name in frame.columns}
        entity = family.recording.entity_field
        answers = {entity: upload.columns[entity], **outcome}
        block = self._persist(family.recording, "file", upload.columns, answers, started)
        return Scored(outcome, block.request_id)

    def _records_answer(
        self,
        family: Family,
        upload: Upload,
        records: list[Any],
        chunks: list[list[Any]],
        started: float,
    ) -> Scored:
        assert family.file_columns is not None  # Family.check
        answers = family.answers(records, [output for chunk in chunks for output in chunk])
        block = self._persist(
            family.recording, "file", upload.columns, record_columns(answers), started
        )
        return Scored(family.file_columns(answers), block.request_id)

    async def list_models(self) -> dict[str, Any]:
        """Which model versions are served, with their key metrics and load time, and each
        lane's batching and shadowing as this API worker sees them."""

        async def one(lane: Lane) -> list[dict[str, Any]]:
            seen = {
                "batching": lane.batcher.stats.as_dict(),
                "shadow": {"sample": lane.shadow.sample, **lane.shadow.stats.as_dict()},
            }
            try:
                described = await self.timeout.bound(lane.service.to_async.describe())
            except Exception as exc:
                reason = self._reason(exc)
                return [
                    {"name": name, "status": "unavailable", "reason": reason, **seen}
                    for name in lane.family.models
                ]
            return [{**model, **seen} for model in described]

        answers = await asyncio.gather(*(one(lane) for lane in self.lanes.values()))
        return {"models": [model for answer in answers for model in answer]}


def entry_service(
    families: tuple[Family, ...],
    model_services: Mapping[str, bentoml.Service[Any]],
    *,
    app: Any,
    policy: AccessPolicy,
    host: str,
    inference: DataPlane | None = None,
) -> bentoml.Service[Any]:
    """The public service: `Entry` with one `bentoml.depends` per family's model service,
    serving `app` (the route table's FastAPI app) on the public port."""
    settings = get_serving_settings()
    namespace: dict[str, Any] = {
        "__module__": "service",
        "__doc__": "The public API on port 3000: the routes are the route table's.",
        "families": families,
        "policy": policy,
        "inference": inference,
        "host": host,
    }
    for family in families:
        namespace[dependency(family)] = bentoml.depends(model_services[family.name])
    cls = type("ClientInsight", (Entry,), namespace)
    return bentoml.service(
        name="clientinsight",
        workers=settings.api_workers,
        traffic={"timeout": 300},
        http={"host": host},
        tracing=tuning.tracing(settings.tracing),
        logging={"access": {"enabled": settings.access_log}},
    )(bentoml.asgi_app(app, path="/")(cls))
