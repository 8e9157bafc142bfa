"""The persistence hook: predictions are queued by the request and written in bulk by a thread.

The request path only appends one `PredictionBlock` (its rows, column by column) to an
in-memory queue; a daemon thread drains it in batches of about `batch_rows` rows, gathering for
`linger_s` after the first arrives: COPY on PostgreSQL, multi-row INSERT (SQLAlchemy's
insertmanyvalues) elsewhere. Rows the database refuses go to a journal on disk
(`persistence/journal.py`) and are replayed, in order and without duplicates, once it answers
again. `close()` writes or journals everything queued (SIGTERM).
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
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel
from sqlalchemy import Connection, Engine, Text, Uuid, column, insert, table

from persistence.encode import json_objects, plain, random_uuids
from persistence.history import stale_hours
from persistence.journal import Journal, UnreadableSegment
from persistence.tables import predictions, stale_rollup_hours

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
    "role",
    "shadow_of",
    "protocol",
)
_CREATED_AT = COLUMNS.index("created_at")
#: What journal rows written before the last columns existed hold there: champion answers
#: (no `shadow_of`) that came by the HTTP API.
_OLD_ROW_DEFAULTS: tuple[Any, ...] = ("champion", None, "http")
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
    #: "champion" (what the caller got) or "challenger" (a shadow score nobody got).
    role: str = "champion"
    #: A challenger block's champion row ids, row by row.
    shadow_of: Sequence[str] | None = None
    #: "http", "oip-rest" or "oip-grpc".
    protocol: str = "http"

    def __len__(self) -> int:
        return len(self.ids)

    def copy_rows(self) -> list[tuple[Any, ...]]:
        """Rows in `COLUMNS` order, the documents as JSON text; fails if a value is not JSON."""
        n = len(self)
        shared = (self.request_id, self.created_at, self.model_name)
        shadow_of = self.shadow_of if self.shadow_of is not None else [None] * n
        return [
            (row_id, *shared, version, versions, self.source, entity, score, label, i, o,
             self.latency_ms, self.role, shadowed, self.protocol)
            for row_id, version, versions, entity, score, label, i, o, shadowed in zip(
                self.ids,
                _texts(self.model_version),
                _versions_json(self.model_versions),
                _texts(self.entity_id),
                _floats(self.score),
                _texts(self.label),
                json_objects(self.inputs, n),
                json_objects(self.outputs, n),
                shadow_of,
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


class Recording(Protocol):
    """How a decision's predictions are stored (each model family declares one): its name in
    `model_name`, which model's version fills `model_version`, and which answer fields index
    the row."""

    @property
    def decision(self) -> str: ...
    @property
    def primary_model(self) -> str: ...
    @property
    def entity_field(self) -> str: ...
    @property
    def score_field(self) -> str: ...
    @property
    def label_field(self) -> str: ...


def prediction_block(
    *,
    recording: Recording,
    request_id: str,
    source: str,
    inputs: Mapping[str, Column],
    outputs: Mapping[str, Column],
    latency_ms: float,
    shadow_of: Sequence[str] | None = None,
    protocol: str = "http",
) -> PredictionBlock:
    """A block from one request's input and output columns, stored as `recording` says.

    The outputs name their version as a `model_version` column, or several as `model_versions`
    (one dict per row); then the `primary_model`'s version fills the `model_version` column.
    With `shadow_of` (the champion block's row ids) the block holds a challenger's shadow
    scores of the same rows.
    """
    model_name = recording.decision
    rows = len(next(iter(outputs.values())))
    lengths = {name: len(values) for name, values in {**inputs, **outputs}.items()}
    if set(lengths.values()) != {rows}:
        raise ValueError(f"every column must have the same number of rows: {lengths}")
    if "model_versions" in outputs:
        versions = list(outputs["model_versions"])
        version: Column = [v[recording.primary_model] for v in versions]
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
        entity_id=outputs.get(recording.entity_field, [None] * rows),
        score=outputs.get(recording.score_field, [None] * rows),
        label=outputs.get(recording.label_field, [None] * rows),
        inputs=inputs,
        outputs=outputs,
        role="champion" if shadow_of is None else "challenger",
        shadow_of=shadow_of,
        protocol=protocol,
    )


def record_columns(records: Sequence[BaseModel]) -> dict[str, list[Any]]:
    """Validated records as JSON-ready columns (what `model_dump(mode="json")` gives per row)."""
    dumped = [r.model_dump(mode="json") for r in records]
    return {name: [d[name] for d in dumped] for name in (dumped[0] if dumped else {})}


@dataclass
class WriterStats:
    """What happened to the rows handed to the writer (this process only)."""

    #: Committed straight from memory.
    rows_written: int = 0
    #: Appended to the journal because the database refused them or the queue was full.
    rows_spilled: int = 0
    #: Committed from the journal.
    rows_replayed: int = 0
    #: Dropped because they could not be encoded (a bug; logged with the request id).
    rows_unwritable: int = 0
    #: In memory, waiting for the writer thread.
    queue_depth: int = 0
    #: In the journal, waiting for the database.
    journal_rows: int = 0
    write_failures: int = 0
    #: Transactions that committed rows from memory (rows_written / writes: rows per write).
    writes: int = 0

    @property
    def rows_pending(self) -> int:
        """Submitted but not yet in the database."""
        return self.queue_depth + self.journal_rows


class WriterMetrics(Protocol):
    """Where the writer reports its counters (Prometheus in the service, nothing in tests)."""

    def count(self, event: str, rows: int) -> None:
        """`event` is written, spilled, replayed or unwritable."""

    def depth(self, queued: int, journaled: int) -> None: ...


class PredictionWriter:
    """Buffered, batched writes of prediction rows off the request path, with a journal.

    Rows go from an in-memory queue to the database. When the database refuses a batch (or
    the queue holds more than `max_queue_rows`), the batch goes to the journal on disk
    instead, and from then on every batch does, so the journal replays in the order it was
    written; the thread retries the journal with back-off and returns to direct writes once
    it is empty. Replay skips rows whose id is already stored. Rows are lost only if the
    process dies while they are in memory: at most one flush interval of rows plus the batch
    being written (docs/persistence.md, "Guarantees").
    """

    def __init__(
        self,
        engine_factory: Callable[[], Engine],
        *,
        journal_dir: Path,
        fsync: bool = True,
        batch_rows: int = 1000,
        flush_interval_s: float = 0.25,
        linger_s: float = 0.0,
        max_backoff_s: float = 5.0,
        max_queue_rows: int = 100_000,
        metrics: WriterMetrics | None = None,
    ) -> None:
        self._engine_factory = engine_factory
        self._engine: Engine | None = None
        self._journal = Journal(journal_dir, fsync=fsync)
        self._batch_rows = batch_rows
        self._flush_interval_s = flush_interval_s
        self._linger_s = min(linger_s, flush_interval_s)
        self._max_backoff_s = max_backoff_s
        self._max_queue_rows = max_queue_rows
        self._metrics = metrics
        self._queue: queue.SimpleQueue[PredictionBlock | None] = queue.SimpleQueue()
        self._stats = WriterStats(journal_rows=self._journal.rows())
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._backoff = 0.0
        self._next_attempt = 0.0
        if self._stats.journal_rows:
            log.warning(
                "%d prediction rows wait in the journal at %s; they are written first",
                self._stats.journal_rows,
                journal_dir,
            )

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
        """Queue one request's rows for writing; never waits for the database.

        Over `max_queue_rows` in memory, the rows go to the journal from here instead.
        """
        rows = len(block)
        if not rows:
            return
        with self._lock:
            overflow = self._stats.queue_depth + rows > self._max_queue_rows
            if not overflow:
                self._stats.queue_depth += rows
        if overflow:
            self._spill(self._encode([block], queued=False))
        else:
            self._queue.put(block)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every submitted row is in the database; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._stats.rows_pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write or journal everything queued, then stop (service shutdown, SIGTERM).

        Does not wait for a database that is down: what it refuses goes to the journal and is
        replayed at the next start.
        """
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout=timeout)
        self._thread = None
        stats = self.stats
        if stats.queue_depth:
            log.error("prediction writer stopped with %d rows in memory", stats.queue_depth)
        if stats.journal_rows:
            log.warning(
                "%d prediction rows left in the journal at %s (written at the next start)",
                stats.journal_rows,
                self._journal.directory,
            )
        if self._engine is not None:
            self._engine.dispose()

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._report_depth()  # at least every flush interval, never on the request path
            batch, last = self._next_batch()
            if batch:
                self._store(self._encode(batch))
            if self._stats.journal_rows and time.monotonic() >= self._next_attempt:
                self._replay()
            if last:
                return

    def _next_batch(self) -> tuple[list[PredictionBlock], bool]:
        """Up to about `batch_rows` queued rows; True once the stop marker is reached."""
        try:
            first = self._queue.get(timeout=self._flush_interval_s)
        except queue.Empty:
            return [], False
        if first is None:
            return [], True
        batch, rows = [first], len(first)
        if self._linger_s and rows < self._batch_rows:
            # Under load, rows arrive a few at a time: a transaction per arrival would cost
            # more than the rows (and hold the GIL the requests need). One sleep gathers them.
            time.sleep(self._linger_s)
        while rows < self._batch_rows:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is None:
                return batch, True
            batch.append(more)
            rows += len(more)
        return batch, False

    def _store(self, rows: list[tuple[Any, ...]]) -> None:
        """Straight to the database when nothing waits in the journal, else to the journal."""
        if not rows:
            return
        if not self._stats.journal_rows and time.monotonic() >= self._next_attempt:
            try:
                self._write(rows)
            except Exception as exc:
                self._failed(exc, len(rows))
            else:
                self._succeeded()
                self._account(queue_depth=-len(rows), rows_written=len(rows), writes=1)
                return
        self._spill(rows, queued=True)

    def _spill(self, rows: list[tuple[Any, ...]], queued: bool = False) -> None:
        while True:
            try:
                self._journal.append(rows)
                break
            except OSError:
                log.exception("cannot append %d rows to the journal; retrying in 1 s", len(rows))
                time.sleep(1)
        self._account(
            queue_depth=-len(rows) if queued else 0,
            journal_rows=len(rows),
            rows_spilled=len(rows),
        )

    def _replay(self) -> None:
        """The journal, oldest segment first, until it is empty or the database refuses."""
        for segment in self._journal.segments():
            try:
                stored = self._journal.read(segment)
            except UnreadableSegment as exc:  # set aside; the other segments still replay
                log.error("journal segment unreadable, set aside for an operator: %s", exc)
                self._account(journal_rows=-exc.lines)
                continue
            rows = [
                (*row, *_OLD_ROW_DEFAULTS[len(row) - len(COLUMNS) :])
                if len(row) < len(COLUMNS)
                else row
                for row in stored
            ]
            try:
                self._write(rows, idempotent=True)
            except Exception as exc:
                self._failed(exc, len(rows))
                return
            self._journal.remove(segment)
            self._account(journal_rows=-len(rows), rows_replayed=len(rows))
        self._succeeded()
        log.info("journal replayed; writing straight to the database again")

    def _failed(self, exc: Exception, rows: int) -> None:
        self._backoff = min(max(self._backoff * 2, 0.1), self._max_backoff_s)
        self._next_attempt = time.monotonic() + self._backoff
        with self._lock:
            self._stats.write_failures += 1
        log.warning(
            "writing %d prediction rows failed (%s: %s); journaling, next try in %.1f s",
            rows,
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
            self._backoff,
        )
        if self._engine is not None:
            self._engine.dispose()  # reconnect from scratch next time

    def _succeeded(self) -> None:
        self._backoff = 0.0
        self._next_attempt = 0.0

    def _account(self, **changes: int) -> None:
        with self._lock:
            for name, delta in changes.items():
                setattr(self._stats, name, getattr(self._stats, name) + delta)
            self._lock.notify_all()
        if self._metrics is not None:
            for name, delta in changes.items():
                if name.startswith("rows_") and delta:
                    self._metrics.count(name.removeprefix("rows_"), delta)
        self._report_depth()

    def _report_depth(self) -> None:
        if self._metrics is not None:
            stats = self.stats
            self._metrics.depth(stats.queue_depth, stats.journal_rows)

    def _encode(self, batch: list[PredictionBlock], queued: bool = True) -> list[tuple[Any, ...]]:
        """The batch's rows, encoded once (a retry or a replay sends the same rows).

        A block that cannot be encoded is a bug, not an outage: retrying cannot fix it, and
        it must not hold back every row behind it. It is logged with its request id, counted
        as `rows_unwritable`, and dropped.
        """
        rows: list[tuple[Any, ...]] = []
        for block in batch:
            try:
                rows.extend(block.copy_rows())
            except Exception:
                log.exception(
                    "the %d prediction rows of request %s cannot be encoded; dropped",
                    len(block),
                    block.request_id,
                )
                self._account(queue_depth=-len(block) if queued else 0, rows_unwritable=len(block))
        return rows

    def _write(self, rows: list[tuple[Any, ...]], idempotent: bool = False) -> None:
        """One transaction for all `rows`; with `idempotent`, ids already stored are skipped."""
        if self._engine is None:
            self._engine = self._engine_factory()
        with self._engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                _copy(connection, rows, idempotent)
                # Rows late for hours the aggregates rolled up (rollups are PostgreSQL's).
                stale = stale_hours((row[_CREATED_AT] for row in rows), datetime.now(UTC))
                if stale:
                    connection.execute(
                        insert(stale_rollup_hours), [{"hour": hour} for hour in sorted(stale)]
                    )
            else:
                dicts = [dict(zip(COLUMNS, row, strict=True)) for row in rows]
                statement = insert(_AS_TEXT)
                if idempotent:
                    statement = statement.prefix_with("OR IGNORE", dialect="sqlite")
                for start in range(0, len(dicts), self._batch_rows):
                    connection.execute(statement, dicts[start : start + self._batch_rows])


#: `predictions` as the writer sends it: documents already JSON text, ids as text. Writing the
#: text is what SQLAlchemy's JSON type would store; encoding once serves COPY and INSERT alike.
_AS_TEXT = table(
    predictions.name,
    *(
        column(
            name,
            Uuid(as_uuid=False)
            if name in ("id", "shadow_of")
            else Text()
            if name in _DOCUMENTS
            else predictions.c[name].type,
        )
        for name in COLUMNS
    ),
)


def _copy(connection: Connection, rows: list[tuple[Any, ...]], idempotent: bool) -> None:
    """PostgreSQL's bulk path: COPY, with the JSON documents sent as text. COPY cannot skip
    conflicts, so an idempotent write copies into a temporary table first."""
    driver: Any = connection.connection.driver_connection
    columns = ", ".join(COLUMNS)
    target = predictions.name
    with driver.cursor() as cursor:
        if idempotent:
            target = "replayed_predictions"
            cursor.execute(
                f"CREATE TEMP TABLE {target} (LIKE {predictions.name} INCLUDING DEFAULTS) "
                "ON COMMIT DROP"
            )
        with cursor.copy(f"COPY {target} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        if idempotent:
            cursor.execute(
                f"INSERT INTO {predictions.name} ({columns}) SELECT {columns} FROM {target} "
                "ON CONFLICT (id) DO NOTHING"
            )
