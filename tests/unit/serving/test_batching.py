"""The entry service's micro-batcher: coalesces, keeps order, never loses or strands a caller.
Each test runs on asyncio's loop and on uvloop's, which the server runs (their timers differ)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from serving.batching import MicroBatcher

Run = Callable[[Coroutine[Any, Any, None]], None]


def busy_batcher(model: Recorder, *, fill_rows: int, busy_hold_s: float) -> MicroBatcher[int, int]:
    """A batcher whose calls wait for `fill_rows` beside a call in flight (up to 1 s), and
    for `busy_hold_s` after a call that returned with that many outstanding."""
    return MicroBatcher(
        model, max_in_flight=2, fill_rows=fill_rows, max_hold_s=1.0, busy_hold_s=busy_hold_s
    )


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    return asyncio.run if request.param == "asyncio" else uvloop.run


class Recorder:
    """A fake model service: records each call's batch, answers after `delay` seconds."""

    def __init__(self, delay: float = 0.01, fail: BaseException | None = None) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.fail = fail

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return [item * 10 for item in items]


def test_a_lone_request_is_sent_at_once(run: Run) -> None:
    async def main() -> None:
        model = Recorder(delay=0)
        batcher = MicroBatcher(model, max_batch_size=64, max_in_flight=2, fill_rows=32)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await batcher.submit([1, 2]) == [10, 20]
        assert loop.time() - started < 0.05  # no batching timer to wait for
        assert model.batches == [[1, 2]]

    run(main())


def test_concurrent_requests_share_calls_and_get_their_own_answers(run: Run) -> None:
    async def main() -> None:
        model = Recorder(delay=0.02)
        batcher = MicroBatcher(model, max_batch_size=8, max_in_flight=1)
        answers = await asyncio.gather(*(batcher.submit([i]) for i in range(20)))
        assert answers == [[i * 10] for i in range(20)]
        assert len(model.batches) < 20
        assert max(len(b) for b in model.batches) <= 8
        assert sorted(i for b in model.batches for i in b) == list(range(20))
        stats = batcher.stats.as_dict()
        assert stats["requests"] == 20 and stats["rows"] == 20
        assert stats["calls"] == len(model.batches)
        assert stats["in_flight"] == 0 and stats["queued_rows"] == 0

    run(main())


def test_a_request_larger_than_the_batch_size_goes_alone_and_whole(run: Run) -> None:
    async def main() -> None:
        model = Recorder(delay=0.01)
        batcher = MicroBatcher(model, max_batch_size=4, max_in_flight=1)
        big, small = await asyncio.gather(batcher.submit(list(range(10))), batcher.submit([99]))
        assert big == [i * 10 for i in range(10)] and small == [990]
        assert [len(b) for b in model.batches] == [10, 1]

    run(main())


def test_no_more_calls_in_flight_than_allowed(run: Run) -> None:
    async def main() -> None:
        in_flight = 0
        peak = 0

        async def model(items: list[int]) -> list[int]:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.01)
            in_flight -= 1
            return items

        batcher = MicroBatcher(model, max_batch_size=1, max_in_flight=3)
        await asyncio.gather(*(batcher.submit([i]) for i in range(30)))
        assert peak == 3

    run(main())


def test_a_failed_call_fails_every_caller_in_it_and_the_next_batch_still_runs(run: Run) -> None:
    async def main() -> None:
        failing = Recorder(delay=0.01, fail=ConnectionError("worker died"))
        batcher = MicroBatcher(failing, max_batch_size=64, max_in_flight=1)
        results = await asyncio.gather(
            *(batcher.submit([i]) for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, ConnectionError) for r in results)
        failing.fail = None
        assert await batcher.submit([7]) == [70]
        assert batcher.stats.in_flight == 0

    run(main())


def test_a_short_answer_is_an_error_not_a_misaligned_result(run: Run) -> None:
    async def main() -> None:
        async def model(items: list[int]) -> list[int]:
            return items[:-1]

        batcher = MicroBatcher(model)
        with pytest.raises(RuntimeError, match="returned 1 of 2 rows"):
            await batcher.submit([1, 2])

    run(main())


def test_a_caller_that_gives_up_while_queued_is_not_sent(run: Run) -> None:
    async def main() -> None:
        model = Recorder(delay=0.05)
        batcher = MicroBatcher(model, max_batch_size=64, max_in_flight=1)
        first = asyncio.ensure_future(batcher.submit([1]))
        await asyncio.sleep(0)  # the first call is in flight; the next one queues
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(batcher.submit([2]), timeout=0.01)
        third = asyncio.ensure_future(batcher.submit([3]))
        assert await first == [10] and await third == [30]
        assert model.batches == [[1], [3]]
        assert batcher.stats.queued_rows == 0

    run(main())


def test_beside_a_call_in_flight_records_wait_to_fill_the_next(run: Run) -> None:
    """Twelve single records arriving while a call runs go in one call when it returns, not
    in a second call of one record each (with fill_rows above what arrives)."""

    async def main() -> None:
        model = Recorder(delay=0.05)
        batcher = MicroBatcher(model, max_in_flight=2, fill_rows=32, max_hold_s=1.0)
        first = asyncio.ensure_future(batcher.submit([0]))
        await asyncio.sleep(0.01)  # the first call is in flight
        rest = [asyncio.ensure_future(batcher.submit([i])) for i in range(1, 13)]
        await asyncio.sleep(0)
        assert model.batches == [[0]] and batcher.stats.in_flight == 1
        assert await first == [0] and [await r for r in rest] == [[i * 10] for i in range(1, 13)]
        assert model.batches == [[0], list(range(1, 13))]

    run(main())


def test_enough_waiting_records_start_the_second_call_at_once(run: Run) -> None:
    async def main() -> None:
        model = Recorder(delay=0.05)
        batcher = MicroBatcher(model, max_in_flight=2, fill_rows=4, max_hold_s=1.0)
        first = asyncio.ensure_future(batcher.submit([0]))
        await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(batcher.submit([i])) for i in range(1, 5)]
        await asyncio.sleep(0.01)
        assert model.batches == [[0], [1, 2, 3, 4]] and batcher.stats.in_flight == 2
        await asyncio.gather(first, *rest)

    run(main())


def test_a_stuck_call_holds_the_others_no_longer_than_the_hold(run: Run) -> None:
    """A call that hangs must not hold light traffic until the model timeout: after
    max_hold_s the waiting record gets the second slot."""

    async def main() -> None:
        model = Recorder(delay=5.0)
        batcher = MicroBatcher(model, max_in_flight=2, fill_rows=32, max_hold_s=0.05)
        stuck = asyncio.ensure_future(batcher.submit([0]))
        await asyncio.sleep(0.01)
        model.delay = 0.0
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await batcher.submit([1]) == [10]
        assert 0.04 <= loop.time() - started < 1.0
        stuck.cancel()

    run(main())


def test_under_load_that_fills_calls_the_next_call_waits_to_fill(run: Run) -> None:
    """A call returns with `fill_rows` records outstanding (its own and the queued): the
    queued do not start at once; with those arriving within `busy_hold_s`, one full call."""

    async def main() -> None:
        model = Recorder(delay=0.02)
        batcher = busy_batcher(model, fill_rows=6, busy_hold_s=1.0)
        first = asyncio.ensure_future(batcher.submit([0, 1, 2, 3]))
        await asyncio.sleep(0.005)
        queued = [asyncio.ensure_future(batcher.submit([i])) for i in range(4, 6)]
        await first
        await asyncio.sleep(0.01)  # the first call has returned with 6 outstanding
        assert model.batches == [[0, 1, 2, 3]] and batcher.stats.in_flight == 0
        late = [asyncio.ensure_future(batcher.submit([i])) for i in range(6, 10)]
        await asyncio.gather(*queued, *late)
        assert model.batches == [[0, 1, 2, 3], list(range(4, 10))]

    run(main())


def test_after_a_full_call_a_lone_record_waits_no_longer_than_the_busy_hold(run: Run) -> None:
    async def main() -> None:
        model = Recorder(delay=0.0)
        batcher = busy_batcher(model, fill_rows=4, busy_hold_s=0.05)
        await batcher.submit([0, 1, 2, 3])
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await batcher.submit([9]) == [90]
        assert 0.03 <= loop.time() - started < 0.5
        await asyncio.sleep(0.06)  # that call returned with one outstanding: no hold
        started = loop.time()
        assert await batcher.submit([8]) == [80]
        assert loop.time() - started < 0.02

    run(main())


def test_load_that_cannot_fill_a_call_never_waits(run: Run) -> None:
    """Sixteen clients where calls take 32: a call of 8 returns with 8 more queued, and the
    next starts at once (a hold there only added latency and cost throughput)."""

    async def main() -> None:
        model = Recorder(delay=0.02)
        batcher = busy_batcher(model, fill_rows=32, busy_hold_s=1.0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = asyncio.ensure_future(batcher.submit(list(range(8))))
        await asyncio.sleep(0.005)
        queued = [asyncio.ensure_future(batcher.submit([i])) for i in range(8, 16)]
        await asyncio.gather(first, *queued)
        assert model.batches == [list(range(8)), list(range(8, 16))]
        assert loop.time() - started < 0.5

    run(main())


def test_a_hold_under_a_millisecond_then_another_record() -> None:
    """uvloop answers `call_later` under a millisecond with a plain Handle (no `when()`): a
    record arriving during such a hold joined the 503s of a bench run."""

    async def main() -> None:
        model = Recorder(delay=0.0)
        batcher = MicroBatcher(model, max_in_flight=2, fill_rows=32, busy_hold_s=0.001)
        # As a call that returns under load leaves it, 0.4 ms before the hold ends (uvloop's
        # clock moves in milliseconds, so a real call cannot pin the remainder).
        batcher._busy_until = asyncio.get_running_loop().time() + 0.0004
        assert await asyncio.gather(batcher.submit([2]), batcher.submit([3])) == [[20], [30]]

    uvloop.run(main())
