"""BentoML services: a thin, typed entry API and one model service per model family.

    bentoml serve service:ClientInsight --port 3000

The entry service (`ClientInsight`) validates, calls the model service over a process boundary
(`bentoml.depends`), and hands every prediction to the persistence hook. Model inference lives in
`ChurnModel`, its own worker processes with adaptive batching. No feature logic and no SQL here:
those live in `models/` and `persistence/`.
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
from pathlib import Path
from typing import Annotated, Any

import bentoml
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import Field
from starlette.responses import Response

from models import churn, registry, tabular
from models.settings import get_settings
from persistence.db import make_engine
from persistence.settings import get_settings as get_persistence_settings
from persistence.writer import PredictionWriter, rows_for

log = logging.getLogger("clientinsight")
settings = get_settings()

#: Connection recycling every 100 requests closes sessions with calls in flight (a third of
#: requests failed at 64 clients): keep the dependency connection for the worker's life.
_LONG_LIVED_CONNECTION = {"max_requests": 1_000_000_000, "max_age": 1e9}


@bentoml.service(
    name="churn_model",
    workers=settings.churn_workers,
    traffic={"timeout": settings.model_timeout_s},
    runner_connection=_LONG_LIVED_CONNECTION,
)
class ChurnModel:
    """The `churn@champion` pipeline in its own processes; batches across concurrent requests."""

    def __init__(self) -> None:
        self.served = registry.load(churn.MODEL_NAME)
        # Per worker: how adaptive batching is actually grouping requests.
        self.batching = {"batches": 0, "rows": 0, "largest_batch": 0}

    # list[Customer] rather than a DataFrame: BentoML 1.4's DataFrame batching is broken.
    @bentoml.api(
        batchable=True,
        max_batch_size=settings.churn_max_batch_size,
        max_latency_ms=settings.churn_max_latency_ms,
    )
    def predict(self, customers: list[churn.Customer]) -> list[churn.ChurnPrediction]:
        self.batching["batches"] += 1
        self.batching["rows"] += len(customers)
        self.batching["largest_batch"] = max(self.batching["largest_batch"], len(customers))
        return churn.score(self.served.model, customers, self.served.threshold, self.served.version)

    @bentoml.api
    def predict_bulk(self, customers: list[churn.Customer]) -> list[churn.ChurnPrediction]:
        """Unbatched scoring of one large chunk (file uploads)."""
        return churn.score(self.served.model, customers, self.served.threshold, self.served.version)

    @bentoml.api
    def describe(self) -> dict[str, Any]:
        return {**self.served.describe(), "batching": dict(self.batching)}


admin = FastAPI(title="ClientInsight admin", docs_url=None, redoc_url=None, openapi_url=None)


def _problem(ctx: bentoml.Context, status: int, body: dict[str, Any]) -> Any:
    """A JSON error answer; BentoML copies ctx's status onto whatever the API returns."""
    ctx.response.status_code = status
    return JSONResponse(body, status_code=status)


@bentoml.service(name="clientinsight", workers=settings.api_workers, traffic={"timeout": 300})
@bentoml.asgi_app(admin, path="/")
class ClientInsight:
    """The public API on port 3000."""

    churn_model = bentoml.depends(ChurnModel)

    def __init__(self) -> None:
        db = get_persistence_settings()
        if db.auto_migrate:
            from persistence.migrate import upgrade

            upgrade(db.database_url)
        self.writer = PredictionWriter(
            lambda: make_engine(db.database_url),
            batch_rows=db.writer_batch_rows,
            flush_interval_s=db.writer_flush_interval_s,
        )
        self.writer.start()

    @bentoml.on_shutdown
    def _flush_predictions(self) -> None:
        self.writer.close()

    async def _call_model(self, ctx: bentoml.Context, call: Any) -> tuple[Any, Any]:
        """(result, None) or (None, a 503 answer naming the reason) within the model timeout."""
        try:
            return await asyncio.wait_for(call, timeout=settings.model_timeout_s), None
        except Exception as exc:  # any failure of the model service is the same to the caller
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            log.warning("churn model service failed: %s", reason)
            return None, _problem(
                ctx,
                503,
                {
                    "error": "the churn model service is unavailable",
                    "model": churn.MODEL_NAME,
                    "reason": reason,
                },
            )

    def _persist(
        self,
        source: str,
        customers: list[churn.Customer],
        predictions: list[churn.ChurnPrediction],
        started: float,
    ) -> str:
        """Hand one request's rows to the writer (never blocks); the request id they carry."""
        request_id = str(uuid.uuid4())
        self.writer.submit(
            rows_for(
                model_name=churn.MODEL_NAME,
                request_id=request_id,
                source=source,
                inputs=customers,
                outputs=predictions,
                entity_field=churn.ENTITY_FIELD,
                score_field=churn.SCORE_FIELD,
                label_field=churn.LABEL_FIELD,
                latency_ms=(time.perf_counter() - started) * 1000,
            )
        )
        return request_id

    @bentoml.api(route="/churn/predict")
    async def churn_predict(
        self,
        customers: Annotated[list[churn.Customer], Field(min_length=1)],
        ctx: bentoml.Context,
    ) -> list[churn.ChurnPrediction]:
        """Churn probability, decision and risk band for one or more customers, in order."""
        started = time.perf_counter()
        if len(customers) > settings.max_rows_per_request:
            return _problem(
                ctx,
                413,
                {
                    "error": f"customers: {len(customers)} items is over the limit of "
                    f"{settings.max_rows_per_request} per request; upload a file instead",
                    "detail": [
                        {
                            "field": "customers",
                            "problem": f"at most {settings.max_rows_per_request} items",
                        }
                    ],
                },
            )
        predictions, failure = await self._call_model(
            ctx, self.churn_model.to_async.predict(customers)
        )
        if failure is not None:
            return failure
        ctx.response.headers["X-Request-ID"] = self._persist("api", customers, predictions, started)
        return list(predictions)

    @bentoml.api(route="/churn/predict_file")
    async def churn_predict_file(self, file: Path, ctx: bentoml.Context) -> Path:
        """Score a CSV, Parquet or Arrow IPC file; the same format comes back with
        churn_probability, churn, risk_band and model_version columns added."""
        started = time.perf_counter()
        try:
            frame, fmt = tabular.read_table(file.read_bytes())
            customers = tabular.validate_rows(
                frame, churn.Customer, churn.COLUMN_ALIASES, settings.max_rows_per_file
            )
        except tabular.TableError as exc:
            return _problem(ctx, exc.status, exc.body())
        chunks = [
            customers[i : i + settings.file_chunk_rows]
            for i in range(0, len(customers), settings.file_chunk_rows)
        ]
        results, failure = await self._call_model(
            ctx,
            asyncio.gather(*(self.churn_model.to_async.predict_bulk(c) for c in chunks)),
        )
        if failure is not None:
            return failure
        predictions = [p for chunk in results for p in chunk]
        out = frame.copy()
        for column in churn.OUTPUT_COLUMNS:
            out[column] = [getattr(p, column) for p in predictions]
        request_id = self._persist("file", customers, predictions, started)
        return Response(  # type: ignore[return-value]
            tabular.write_table(out, fmt),
            media_type=tabular.MEDIA_TYPES[fmt],
            headers={
                "X-Request-ID": request_id,
                "Content-Disposition": f'attachment; filename="churn_scores.{fmt}"',
            },
        )

    @admin.get("/models")
    async def list_models(self) -> JSONResponse:
        """Which model versions are served, with their key metrics and load time."""
        try:
            churn_info = await asyncio.wait_for(
                self.churn_model.to_async.describe(), timeout=settings.model_timeout_s
            )
        except Exception as exc:
            churn_info = {"name": churn.MODEL_NAME, "status": "unavailable", "reason": str(exc)}
        return JSONResponse({"models": [churn_info]})
