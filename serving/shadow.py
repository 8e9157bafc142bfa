"""Challenger shadowing in the API worker: a sample of requests is scored again by the
`@challenger` version after the caller has been answered.

The shadow call goes through its own batcher with one call in flight, so it never takes a
call slot from live traffic, and at most `max_pending` records wait for it: beyond that,
samples are skipped (counted), never queued without bound. A failed shadow call is logged and
counted; the caller was answered long before. What the challenger said is stored by `store`
next to the champion's rows (same request id, `shadow_of` the champion row).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from serving import errors
from serving.batching import MicroBatcher

log = logging.getLogger("clientinsight.shadow")

In = TypeVar("In")
Out = TypeVar("Out")
#: Seconds between two log lines about failing shadow calls.
_LOG_EVERY_S = 60.0


@dataclass
class ShadowStats:
    """Records, not requests (this API worker only)."""

    sampled: int = 0
    scored: int = 0
    #: Sampled while `max_pending` records were already waiting.
    skipped: int = 0
    failed: int = 0
    pending: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Shadow(Generic[In, Out]):
    """Sample, score with the challenger off the request path, hand the answers to `store`."""

    def __init__(
        self,
        family: str,
        call: Callable[[list[In]], Awaitable[Sequence[Out]]],
        store: Callable[[Sequence[In], Sequence[Out], Any, float], None],
        *,
        sample: float,
        max_pending: int,
        max_batch_size: int = 256,
        idle_s: float = 0.0,
        chance: Callable[[], float] = random.random,
    ) -> None:
        """`call(batch)` returns the challenger's outputs, or an empty list when there is no
        challenger; `store(items, outputs, champion, started)` persists them. After an empty
        answer nothing is sampled for `idle_s` (the model workers' reload interval: a new
        challenger cannot appear sooner), so a service without one pays for no shadow calls."""
        self.family = family
        self.sample = sample
        self.max_pending = max_pending
        self.stats = ShadowStats()
        self._store = store
        self._chance = chance
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_log = 0.0
        self._idle_s = idle_s
        self._idle_until = 0.0
        self._batcher: MicroBatcher[In, Out | None] = MicroBatcher(
            lambda batch: self._padded(call, batch), max_batch_size=max_batch_size, max_in_flight=1
        )

    @staticmethod
    async def _padded(
        call: Callable[[list[In]], Awaitable[Sequence[Out]]], batch: list[In]
    ) -> Sequence[Out | None]:
        outputs = await call(batch)
        return outputs if outputs else [None] * len(batch)

    def offer(self, items: Sequence[In], champion: Any) -> bool:
        """Maybe shadow this request (`champion`: its stored rows); never waits."""
        if self.sample <= 0 or self._chance() >= self.sample:
            return False
        if self._idle_until and time.monotonic() < self._idle_until:
            return False
        self.stats.sampled += len(items)
        if self.stats.pending + len(items) > self.max_pending:
            self.stats.skipped += len(items)
            return False
        self.stats.pending += len(items)
        task = asyncio.get_running_loop().create_task(self._run(list(items), champion))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(self, items: list[In], champion: Any) -> None:
        started = time.perf_counter()
        try:
            outputs = await self._batcher.submit(items)
            if outputs and outputs[0] is not None:
                self._idle_until = 0.0
                self._store(items, [o for o in outputs if o is not None], champion, started)
                self.stats.scored += len(items)
            else:  # no challenger right now
                self._idle_until = time.monotonic() + self._idle_s
        except Exception as exc:
            self.stats.failed += len(items)
            now = time.monotonic()
            if now - self._last_log > _LOG_EVERY_S:
                self._last_log = now
                log.warning("%s shadow scoring failed: %s", self.family, errors.reason(exc))
        finally:
            self.stats.pending -= len(items)

    async def drain(self) -> None:
        """Wait for the shadow calls in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
