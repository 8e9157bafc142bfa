"""The entry service's micro-batcher: coalesces, keeps order, never loses or strands a caller."""

from __future__ import annotations

import asyncio

import pytest

from serving.batching import MicroBatcher


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


def test_a_lone_request_is_sent_at_once() -> None:
    async def main() -> None:
        model = Recorder(delay=0)
        batcher = MicroBatcher(model, max_batch_size=64, max_in_flight=2, fill_rows=32)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await batcher.submit([1, 2]) == [10, 20]
        assert loop.time() - started < 0.05  # no batching timer to wait for
        assert model.batches == [[1, 2]]

    asyncio.run(main())


def test_concurrent_requests_share_calls_and_get_their_own_answers() -> None:
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

    asyncio.run(main())


def test_a_request_larger_than_the_batch_size_goes_alone_and_whole() -> None:
    async def main() -> None:
        model = Recorder(delay=0.01)
        batcher = MicroBatcher(model, max_batch_size=4, max_in_flight=1)
        big, small = await asyncio.gather(batcher.submit(list(range(10))), batcher.submit([99]))
        assert big == [i * 10 for i in range(10)] and small == [990]
        assert [len(b) for b in model.batches] == [10, 1]

    asyncio.run(main())


def test_no_more_calls_in_flight_than_allowed() -> None:
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

    asyncio.run(main())


def test_a_failed_call_fails_every_caller_in_it_and_the_next_batch_still_runs() -> None:
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

    asyncio.run(main())


def test_a_short_answer_is_an_error_not_a_misaligned_result() -> None:
    async def main() -> None:
        async def model(items: list[int]) -> list[int]:
            return items[:-1]

        batcher = MicroBatcher(model)
        with pytest.raises(RuntimeError, match="returned 1 of 2 rows"):
            await batcher.submit([1, 2])

    asyncio.run(main())


def test_a_caller_that_gives_up_while_queued_is_not_sent() -> None:
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

    asyncio.run(main())


def test_beside_a_call_in_flight_records_wait_to_fill_the_next() -> None:
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

    asyncio.run(main())


def test_enough_waiting_records_start_the_second_call_at_once() -> None:
    async def main() -> None:
        model = Recorder(delay=0.05)
        batcher = MicroBatcher(model, max_in_flight=2, fill_rows=4, max_hold_s=1.0)
        first = asyncio.ensure_future(batcher.submit([0]))
        await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(batcher.submit([i])) for i in range(1, 5)]
        await asyncio.sleep(0.01)
        assert model.batches == [[0], [1, 2, 3, 4]] and batcher.stats.in_flight == 2
        await asyncio.gather(first, *rest)

    asyncio.run(main())


def test_a_stuck_call_holds_the_others_no_longer_than_the_hold() -> None:
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

    asyncio.run(main())
