"""Adaptive batching in front of the model-service hop.

Each API request's records are queued; a model-service call takes everything queued so far (up
to `max_batch_size` records) as soon as one of `max_in_flight` call slots is free. One client
never waits for a timer; under load, batches grow by themselves to what arrived while the
previous call ran. So the hop, and BentoML's per-request cost on the model side, is paid once
per batch instead of once per request.

Why not BentoML's own `batchable=True` on the model service: its dispatcher sheds load by
cancelling queued requests (a 503 to the caller) whenever its latency estimate exceeds
`max_latency_ms`, which happens under ordinary CPU contention on a 2-core machine, and it still
costs one HTTP request on the model side per API request (bench/README.md has the figures).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class _Job(Generic[In, Out]):
    items: list[In]
    future: asyncio.Future[list[Out]]


@dataclass
class CallStats:
    """How many batch calls were made and how large they were (kept by both sides of the hop)."""

    calls: int = 0
    rows: int = 0
    largest_batch: int = 0

    def add(self, rows: int) -> None:
        self.calls += 1
        self.rows += rows
        self.largest_batch = max(self.largest_batch, rows)

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class BatchStats(CallStats):
    """What the batcher has done in this API worker, for `GET /models`."""

    requests: int = 0
    queued_rows: int = 0
    in_flight: int = 0


@dataclass
class MicroBatcher(Generic[In, Out]):
    """Coalesce concurrent requests' records into few calls of `call` (which keeps order)."""

    call: Callable[[list[In]], Awaitable[Sequence[Out]]]
    max_batch_size: int = 64
    max_in_flight: int = 2
    stats: BatchStats = field(default_factory=BatchStats)
    _queue: deque[_Job[In, Out]] = field(default_factory=deque)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def submit(self, items: Sequence[In]) -> list[Out]:
        """The outputs for `items`, in order, once the batch holding them has been scored.

        Cancelling the caller (a timeout) drops its records if they have not been sent yet.
        """
        job: _Job[In, Out] = _Job(list(items), asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self.stats.queued_rows += len(job.items)
        self._dispatch()
        return await job.future

    def _dispatch(self) -> None:
        while self.stats.in_flight < self.max_in_flight and self._queue:
            batch = self._take()
            if not batch:
                continue
            self.stats.in_flight += 1
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[_Job[In, Out]]:
        """Queued jobs up to max_batch_size records; a larger single job goes alone."""
        batch: list[_Job[In, Out]] = []
        rows = 0
        while self._queue:
            job = self._queue[0]
            if batch and rows + len(job.items) > self.max_batch_size:
                break
            self._queue.popleft()
            self.stats.queued_rows -= len(job.items)
            if job.future.done():  # its caller gave up while it was queued
                continue
            batch.append(job)
            rows += len(job.items)
        return batch

    async def _run(self, batch: list[_Job[In, Out]]) -> None:
        items = [item for job in batch for item in job.items]
        try:
            outputs = list(await self.call(items))
            if len(outputs) != len(items):
                raise RuntimeError(f"model service returned {len(outputs)} of {len(items)} rows")
        except BaseException as exc:  # every waiting caller gets the failure, nothing hangs
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            self.stats.add(len(items))
            self.stats.requests += len(batch)
            start = 0
            for job in batch:
                end = start + len(job.items)
                if not job.future.done():
                    job.future.set_result(outputs[start:end])
                start = end
        finally:
            self.stats.in_flight -= 1
            self._dispatch()
