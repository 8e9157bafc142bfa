"""The persistence hook: predictions are queued by the request and written in bulk by a thread.

The request path only appends one `PredictionBlock` (its rows, column by column) to an
in-memory queue; a daemon thread drains it in batches of about `batch_rows` rows every
`flush_interval_s`: COPY on PostgreSQL, multi-row INSERT (SQLAlchemy's insertmanyvalues)
elsewhere. A failed write is retried with back-off, keeping the rows, so a short
database outage delays rows instead of dropping them. `close()` drains the queue on shutdown.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import BaseModel
from sqlalchemy import Connection, Engine, Text, Uuid, column, insert, table

from persistence.encode import json_objects, plain, random_uuids
from persistence.tables import predictions

log = logging.getLogger(__name__)

Column = Sequence[Any] | np.ndarray

#: The `predictions` columns a block fills, in COPY order.
COLUMNS: tuple[str, ...] = (
    "id",
    "request_id",
    "created_at",
    "model_name",
    "model_version",
    "model_versions",
    "source",
    "entity_id",
    "score",
    "label",
    "inputs",
    "outputs",
    "latency_ms",
)
#: Of those, the JSON documents.
_DOCUMENTS = ("model_versions", "inputs", "outputs")


@dataclass(frozen=True)
class PredictionBlock:
    """One request's predictions, column by column: row i of every column is prediction i.

    Columns, not row dicts, because a scored file is thousands of rows: building a dict per
    row cost more than scoring it. Row ids are made at submission, so a retried write of the
    same block is recognisably the same rows.
    """

    request_id: str
    model_name: str
    source: str
    latency_ms: float
    created_at: datetime
    ids: list[str]
    model_version: Column
    model_versions: Column
    entity_id: Column
    score: Column
    label: Column
    inputs: Mapping[str, Column]
    outputs: Mapping[str, Column]

    def __len__(self) -> int:
        return len(self.ids)

    def copy_rows(self) -> list[tuple[Any, ...]]:
        """Rows in `COLUMNS` order, the documents as JSON text; fails if a value is not JSON."""
        n = len(self)
        shared = (self.request_id, self.created_at, self.model_name)
        return [
            (row_id, *shared, version, versions, self.source, entity, score, label, i, o,
             self.latency_ms)
            for row_id, version, versions, entity, score, label, i, o in zip(
                self.ids,
                _texts(self.model_version),
                _versions_json(self.model_versions),
                _texts(self.entity_id),
                _floats(self.score),
                _texts(self.label),
                json_objects(self.inputs, n),
                json_objects(self.outputs, n),
                strict=True,
            )
        ]  # fmt: skip


def _versions_json(values: Column) -> list[str]:
    """The `model_versions` documents; a block holds a handful of distinct ones."""
    memo: dict[tuple[tuple[str, str], ...], str] = {}
    return [
        memo.get(key) or memo.setdefault(key, json.dumps(versions))
        for versions in values
        for key in [tuple(versions.items())]
    ]


def _texts(values: Column) -> list[str | None]:
    return [None if v is None else str(plain(v)) for v in values]


def _floats(values: Column) -> list[float | None]:
    return [None if v is None or (v != v) else float(v) for v in values]


def prediction_block(
    *,
    model_name: str,
    request_id: str,
    source: str,
    inputs: Mapping[str, Column],
    outputs: Mapping[str, Column],
    entity_field: str,
    score_field: str,
    label_field: str,
    latency_ms: float,
    primary_model: str | None = None,
) -> PredictionBlock:
    """A block from one request's input and output columns, for any model's contract.

    The outputs name their version as a `model_version` column, or several as `model_versions`
    (one dict per row); then the `primary_model`'s version fills the `model_version` column.
    """
    rows = len(next(iter(outputs.values())))
    lengths = {name: len(values) for name, values in {**inputs, **outputs}.items()}
    if set(lengths.values()) != {rows}:
        raise ValueError(f"every column must have the same number of rows: {lengths}")
    if "model_versions" in outputs:
        versions = list(outputs["model_versions"])
        version: Column = [v[primary_model or model_name] for v in versions]
    else:
        version = outputs["model_version"]
        one_each: dict[str, dict[str, str]] = {}  # one dict per distinct version, shared
        versions = [
            one_each.setdefault(text, {model_name: text}) for text in map(str, map(plain, version))
        ]
    return PredictionBlock(
        request_id=request_id,
        model_name=model_name,
        source=source,
        latency_ms=latency_ms,
        created_at=datetime.now(UTC),
        ids=random_uuids(rows),
        model_version=version,
        model_versions=versions,
        entity_id=outputs.get(entity_field, [None] * rows),
        score=outputs.get(score_field, [None] * rows),
        label=outputs.get(label_field, [None] * rows),
        inputs=inputs,
        outputs=outputs,
    )


def record_columns(records: Sequence[BaseModel]) -> dict[str, list[Any]]:
    """Validated records as JSON-ready columns (what `model_dump(mode="json")` gives per row)."""
    dumped = [r.model_dump(mode="json") for r in records]
    return {name: [d[name] for d in dumped] for name in (dumped[0] if dumped else {})}


@dataclass
class WriterStats:
    rows_written: int = 0
    rows_pending: int = 0
    rows_unwritable: int = 0
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
        self._queue: queue.SimpleQueue[PredictionBlock | None] = queue.SimpleQueue()
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

    def submit(self, block: PredictionBlock) -> None:
        """Queue one request's rows for writing; never blocks on the database."""
        if not len(block):
            return
        with self._lock:
            self._stats.rows_pending += len(block)
        self._queue.put(block)

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
            batch = [first]
            rows = len(first)
            while rows < self._batch_rows:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._stopping.set()
                    break
                batch.append(more)
                rows += len(more)
            self._write_with_retry(batch)

    def _write_with_retry(self, batch: list[PredictionBlock]) -> None:
        backoff = 0.1
        rows: list[Any] | None = None
        while True:
            try:
                if self._engine is None:
                    self._engine = self._engine_factory()
                if rows is None:
                    rows = self._encode(batch, self._engine.dialect.name)
                self._write(self._engine, rows)
            except Exception:
                with self._lock:
                    self._stats.write_failures += 1
                log.exception(
                    "writing %d prediction rows failed; retrying in %.1fs",
                    sum(len(block) for block in batch),
                    backoff,
                )
                if self._stopping.is_set():
                    return
                time.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
                continue
            with self._lock:
                self._stats.rows_written += len(rows)
                self._stats.rows_pending -= len(rows)
                self._lock.notify_all()
            return

    def _encode(self, batch: list[PredictionBlock], dialect: str) -> list[Any]:
        """The batch's rows for `dialect`, encoded once (a retry sends the same rows).

        A block that cannot be encoded is a bug, not an outage: retrying cannot fix it, and
        it must not hold back every row behind it. It is logged with its request id, counted
        as `rows_unwritable`, and dropped.
        """
        rows: list[Any] = []
        for block in batch:
            try:
                rows.extend(block.copy_rows())
            except Exception:
                log.exception(
                    "the %d prediction rows of request %s cannot be encoded; dropped",
                    len(block),
                    block.request_id,
                )
                with self._lock:
                    self._stats.rows_unwritable += len(block)
                    self._stats.rows_pending -= len(block)
                    self._lock.notify_all()
        return rows

    def _write(self, engine: Engine, rows: list[Any]) -> None:
        # One transaction for the whole batch, so a retry never writes a row twice.
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                _copy(connection, rows)
            else:
                dicts = [dict(zip(COLUMNS, row, strict=True)) for row in rows]
                for start in range(0, len(dicts), self._batch_rows):
                    connection.execute(insert(_AS_TEXT), dicts[start : start + self._batch_rows])


#: `predictions` as the writer sends it: documents already JSON text, ids as text. Writing the
#: text is what SQLAlchemy's JSON type would store; encoding once serves COPY and INSERT alike.
_AS_TEXT = table(
    predictions.name,
    *(
        column(
            name,
            Uuid(as_uuid=False)
            if name == "id"
            else Text()
            if name in _DOCUMENTS
            else predictions.c[name].type,
        )
        for name in COLUMNS
    ),
)


def _copy(connection: Connection, rows: list[tuple[Any, ...]]) -> None:
    """PostgreSQL's bulk path: COPY, with the JSON documents sent as text."""
    driver: Any = connection.connection.driver_connection
    statement = f"COPY {predictions.name} ({', '.join(COLUMNS)}) FROM STDIN"
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
