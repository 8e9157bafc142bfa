"""Adaptive batching in front of the model-service hop.

Each API request's records are queued; a model-service call takes everything queued so far (up
to `max_batch_size` records) as soon as a call slot is free. With no call in flight that is at
once: one client never waits for a timer. While a call is in flight, the next one starts only
when `fill_rows` records wait, or when the oldest has waited `max_hold_s`; otherwise the call
in flight takes them when it returns. Under load batches grow to what arrived while the
previous call ran. So the hop, and BentoML's per-request cost on the model side, is paid once
per batch instead of once per request. (Starting every free slot at once split the queue into
half-empty calls: the model worker paid per call what it could have paid per batch.)

Under load enough to fill calls, the same holds right after a call: when a call returns
while `fill_rows` records are outstanding (in the calls and queued), the next waits up to
`busy_hold_s` for `fill_rows` instead of starting at once with what queued during it; fewer,
fuller calls leave the event loop, the bottleneck then, more time for requests. Load that
cannot fill a call (a client alone, or 16 where calls take 32) never waits: there a hold only
added latency and cost throughput.

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
    #: Records that must wait before a call starts beside one in flight (0: at once).
    fill_rows: int = 0
    #: The longest a record waits for `fill_rows` while a call is in flight (a stuck call
    #: must not hold light traffic up to the model timeout).
    max_hold_s: float = 0.01
    #: When a call returns with `fill_rows` records outstanding (in calls and queued), how
    #: long the next waits for `fill_rows` (0: it starts at once, with what is queued).
    busy_hold_s: float = 0.0
    stats: BatchStats = field(default_factory=BatchStats)
    _queue: deque[_Job[In, Out]] = field(default_factory=deque)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _hold: asyncio.Handle | None = None
    _hold_until: float = 0.0
    _rows_in_flight: int = 0
    #: Until when (loop time) the load seen as the last call returned says to wait for a fill.
    _busy_until: float = 0.0

    async def submit(self, items: Sequence[In]) -> list[Out]:
        """The outputs for `items`, in order, once the batch holding them has been scored.

        Cancelling the caller (a timeout) drops its records if they have not been sent yet.
        """
        job: _Job[In, Out] = _Job(list(items), asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self.stats.queued_rows += len(job.items)
        self._dispatch()
        return await job.future

    def _dispatch(self, held_long_enough: bool = False) -> None:
        fill = min(self.fill_rows, self.max_batch_size)
        while self.stats.in_flight < self.max_in_flight and self._queue:
            if self.stats.queued_rows < fill and not held_long_enough:
                loop = asyncio.get_running_loop()
                # Beside a call in flight, or just after a large one: wait to fill.
                wait = self.max_hold_s if self.stats.in_flight else self._busy_until - loop.time()
                if wait > 0:
                    if self._hold is None or self._hold_until > loop.time() + wait:
                        if self._hold is not None:
                            self._hold.cancel()
                        # The deadline is ours: uvloop answers a delay under a millisecond
                        # with a plain Handle, which has no `when()`.
                        self._hold_until = loop.time() + wait
                        self._hold = loop.call_later(wait, self._held)
                    return
            held_long_enough = False
            if self._hold is not None:  # what it waited for is in this call
                self._hold.cancel()
                self._hold = None
            batch = self._take()
            if not batch:
                continue
            self.stats.in_flight += 1
            self._rows_in_flight += sum(len(job.items) for job in batch)
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _held(self) -> None:
        self._hold = None
        self._dispatch(held_long_enough=True)

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
            outstanding = self._rows_in_flight + self.stats.queued_rows
            self._rows_in_flight -= len(items)
            if self.busy_hold_s and outstanding >= min(self.fill_rows, self.max_batch_size):
                self._busy_until = asyncio.get_running_loop().time() + self.busy_hold_s
            self._dispatch()
