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


class GrpcMetrics:
    """gRPC calls by method and status code, and their durations: what BentoML's
    `bentoml_service_request_*` count for HTTP, which the gRPC servers do not pass through."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self._calls = Counter(
            "clientinsight_grpc_requests",
            "gRPC calls answered, by method and status code",
            ["method", "code"],
        )
        self._seconds = Histogram(
            "clientinsight_grpc_request_duration_seconds",
            "Seconds from a gRPC call's start to its answer, by method",
            ["method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
        )

    def observe(self, method: str, code: str, seconds: float) -> None:
        self._calls.labels(method, code).inc()
        self._seconds.labels(method).observe(seconds)
