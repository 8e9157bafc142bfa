"""The service's own Prometheus metrics, next to BentoML's on `/metrics`.

Created in a worker's `__init__`, never at import: BentoML points `prometheus_client` at its
multiprocess directory only once the worker runs, and metrics made before that would never
reach `/metrics`. Gauges sum over live workers.
"""

from __future__ import annotations

from typing import Any


class WriterMetrics:
    """The persistence writer's counters (`persistence.writer.WriterMetrics`)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge

        described = {
            "written": "Prediction rows written to the database straight from memory",
            "spilled": "Prediction rows appended to the local journal (database unreachable)",
            "replayed": "Prediction rows written to the database from the journal",
            "unwritable": "Prediction rows dropped because they could not be encoded (a bug)",
        }
        self._counters: dict[str, Any] = {
            event: Counter(f"clientinsight_rows_{event}", text) for event, text in described.items()
        }
        self._queue = Gauge(
            "clientinsight_queue_depth",
            "Prediction rows in memory, waiting for the writer",
            multiprocess_mode="livesum",
        )
        self._journal = Gauge(
            "clientinsight_journal_rows",
            "Prediction rows in the local journal, waiting for the database",
            multiprocess_mode="livesum",
        )

    def count(self, event: str, rows: int) -> None:
        self._counters[event].inc(rows)

    def depth(self, queued: int, journaled: int) -> None:
        self._queue.set(queued)
        self._journal.set(journaled)
