"""The persistence hook: predictions are queued by the request and written in bulk by a thread.

The request path only appends to an in-memory queue; a daemon thread drains it in batches of up
to `batch_rows` (multi-row INSERT through SQLAlchemy's insertmanyvalues) every
`flush_interval_s`. A failed write is retried with back-off, keeping the rows, so a short
database outage delays rows instead of dropping them. `close()` drains the queue on shutdown.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Engine, insert

from persistence.tables import predictions

log = logging.getLogger(__name__)

Row = dict[str, Any]


def prediction_row(
    *,
    request_id: str,
    model_name: str,
    model_version: str,
    source: str,
    entity_id: str | None,
    model_versions: dict[str, str] | None = None,
    score: float | None,
    label: str | None,
    inputs: dict[str, Any],
    outputs: dict[str, Any],
    latency_ms: float,
    created_at: datetime | None = None,
) -> Row:
    """One `predictions` row; the id is made here so a retried write can be told apart."""
    return {
        "id": uuid.uuid4(),
        "request_id": request_id,
        "created_at": created_at or datetime.now(UTC),
        "model_name": model_name,
        "model_version": model_version,
        "model_versions": model_versions or {model_name: model_version},
        "source": source,
        "entity_id": entity_id,
        "score": score,
        "label": label,
        "inputs": inputs,
        "outputs": outputs,
        "latency_ms": latency_ms,
    }


def rows_for(
    *,
    model_name: str,
    request_id: str,
    source: str,
    inputs: Sequence[BaseModel],
    outputs: Sequence[BaseModel],
    entity_field: str,
    score_field: str,
    label_field: str,
    latency_ms: float,
    primary_model: str | None = None,
) -> list[Row]:
    """Rows for one request: input i and output i of any model's contract, side by side.

    An output names its version as `model_version`, or several as `model_versions`; then the
    `primary_model`'s version fills the `model_version` column.
    """
    created_at = datetime.now(UTC)
    rows = []
    for given, answer in zip(inputs, outputs, strict=True):
        output = answer.model_dump(mode="json")
        versions = output.get("model_versions") or {model_name: output["model_version"]}
        rows.append(
            prediction_row(
                request_id=request_id,
                model_name=model_name,
                model_version=str(versions[primary_model or model_name]),
                model_versions=versions,
                source=source,
                entity_id=output.get(entity_field),
                score=output.get(score_field),
                label=None if output.get(label_field) is None else str(output[label_field]),
                inputs=given.model_dump(mode="json"),
                outputs=output,
                latency_ms=latency_ms,
                created_at=created_at,
            )
        )
    return rows


@dataclass
class WriterStats:
    rows_written: int = 0
    rows_pending: int = 0
    write_failures: int = 0


class PredictionWriter:
    """Buffered, batched writes of prediction rows off the request path."""

    def __init__(
        self,
        engine_factory: Callable[[], Engine],
        *,
        batch_rows: int = 1000,
        flush_interval_s: float = 0.25,
        max_backoff_s: float = 5.0,
    ) -> None:
        self._engine_factory = engine_factory
        self._engine: Engine | None = None
        self._batch_rows = batch_rows
        self._flush_interval_s = flush_interval_s
        self._max_backoff_s = max_backoff_s
        self._queue: queue.SimpleQueue[list[Row] | None] = queue.SimpleQueue()
        self._stats = WriterStats()
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def stats(self) -> WriterStats:
        with self._lock:
            return WriterStats(**vars(self._stats))

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="prediction-writer", daemon=True)
        self._thread.start()

    def submit(self, rows: Iterable[Row]) -> None:
        """Queue rows for writing; never blocks on the database."""
        batch = list(rows)
        if not batch:
            return
        with self._lock:
            self._stats.rows_pending += len(batch)
        self._queue.put(batch)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every submitted row is written; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._stats.rows_pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Drain the queue, then stop the thread (called on service shutdown)."""
        if self._thread is None:
            return
        drained = self.flush(timeout)
        self._stopping.set()
        self._queue.put(None)
        self._thread.join(timeout=5)
        self._thread = None
        pending = self.stats.rows_pending
        if not drained or pending:
            log.error("prediction writer closed with %d rows not written", pending)
        if self._engine is not None:
            self._engine.dispose()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                first = self._queue.get(timeout=self._flush_interval_s)
            except queue.Empty:
                continue
            if first is None:
                break
            batch = list(first)
            while len(batch) < self._batch_rows:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._stopping.set()
                    break
                batch.extend(more)
            self._write_with_retry(batch)

    def _write_with_retry(self, batch: list[Row]) -> None:
        backoff = 0.1
        while True:
            try:
                self._write(batch)
            except Exception:
                with self._lock:
                    self._stats.write_failures += 1
                log.exception(
                    "writing %d prediction rows failed; retrying in %.1fs", len(batch), backoff
                )
                if self._stopping.is_set():
                    return
                time.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
                continue
            with self._lock:
                self._stats.rows_written += len(batch)
                self._stats.rows_pending -= len(batch)
                self._lock.notify_all()
            return

    def _write(self, batch: list[Row]) -> None:
        if self._engine is None:
            self._engine = self._engine_factory()
        # One transaction for the whole batch, so a retry never writes a chunk twice.
        with self._engine.begin() as connection:
            for start in range(0, len(batch), self._batch_rows):
                connection.execute(insert(predictions), batch[start : start + self._batch_rows])
