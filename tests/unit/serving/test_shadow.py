"""Shadowing in the API worker: sampled, off the request path, bounded, failure-proof."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from serving.shadow import Shadow


class Challenger:
    """A fake model service's shadow endpoint: `None` means there is no challenger."""

    def __init__(self, delay: float = 0.0, fail: bool = False, present: bool = True) -> None:
        self.calls: list[list[int]] = []
        self.delay, self.fail, self.present = delay, fail, present

    async def __call__(self, batch: list[int]) -> list[int]:
        self.calls.append(batch)
        await asyncio.sleep(self.delay)
        if self.fail:
            raise ConnectionError("model service restarting")
        return [i * 100 for i in batch] if self.present else []


class Stored:
    def __init__(self) -> None:
        self.blocks: list[tuple[list[int], list[int], Any]] = []

    def __call__(
        self, items: Sequence[int], outputs: Sequence[int], champion: Any, _: float
    ) -> None:
        self.blocks.append((list(items), list(outputs), champion))


def _shadow(challenger: Challenger, stored: Stored, **options: Any) -> Shadow[int, int]:
    options.setdefault("sample", 1.0)
    options.setdefault("max_pending", 100)
    return Shadow("churn", challenger, stored, **options)


def test_sampled_requests_are_scored_and_stored_with_their_champion_rows() -> None:
    async def main() -> None:
        challenger, stored = Challenger(), Stored()
        shadow = _shadow(challenger, stored)
        assert shadow.offer([1, 2], "block-a") and shadow.offer([3], "block-b")
        await shadow.drain()
        assert sorted(stored.blocks) == [([1, 2], [100, 200], "block-a"), ([3], [300], "block-b")]
        assert shadow.stats.as_dict() == {
            "sampled": 3, "scored": 3, "skipped": 0, "failed": 0, "pending": 0
        }  # fmt: skip

    asyncio.run(main())


def test_offer_never_waits_for_the_challenger() -> None:
    async def main() -> None:
        shadow = _shadow(Challenger(delay=0.5), Stored())
        loop = asyncio.get_running_loop()
        started = loop.time()
        shadow.offer([1], "block")
        assert loop.time() - started < 0.05
        assert shadow.stats.pending == 1
        await shadow.drain()

    asyncio.run(main())


def test_the_sample_rate_is_respected() -> None:
    async def main() -> None:
        draws = iter([0.05, 0.5, 0.09, 0.95])
        challenger = Challenger()
        shadow = _shadow(challenger, Stored(), sample=0.1, chance=lambda: next(draws))
        offered = [shadow.offer([i], i) for i in range(4)]
        await shadow.drain()
        assert offered == [True, False, True, False]
        assert sorted(i for call in challenger.calls for i in call) == [0, 2]
        never = _shadow(Challenger(), Stored(), sample=0.0)
        assert not any(never.offer([i], i) for i in range(100))

    asyncio.run(main())


def test_beyond_max_pending_samples_are_skipped_not_queued() -> None:
    async def main() -> None:
        stored = Stored()
        shadow = _shadow(Challenger(delay=0.05), stored, max_pending=3)
        results = [shadow.offer([i, i], i) for i in range(3)]
        await shadow.drain()
        assert results == [True, False, False]
        assert shadow.stats.skipped == 4 and shadow.stats.scored == 2 and len(stored.blocks) == 1

    asyncio.run(main())


def test_no_challenger_stores_nothing_and_a_failure_is_only_counted() -> None:
    async def main() -> None:
        absent, stored = _shadow(Challenger(present=False), Stored()), Stored()
        absent.offer([1], "block")
        await absent.drain()
        assert absent.stats.scored == 0 and stored.blocks == []
        failing = _shadow(Challenger(fail=True), stored)
        failing.offer([1, 2], "block")
        await failing.drain()
        assert failing.stats.failed == 2 and failing.stats.pending == 0 and stored.blocks == []

    asyncio.run(main())


def test_without_a_challenger_nothing_is_sampled_for_one_reload_interval() -> None:
    async def main() -> None:
        challenger, stored = Challenger(present=False), Stored()
        shadow = _shadow(challenger, stored, idle_s=0.2)
        assert shadow.offer([1], "a")
        await shadow.drain()
        assert not shadow.offer([2], "b") and len(challenger.calls) == 1
        await asyncio.sleep(0.25)
        challenger.present = True  # a challenger was promoted meanwhile
        assert shadow.offer([3], "c")
        await shadow.drain()
        assert stored.blocks == [([3], [300], "c")]
        assert shadow.offer([4], "d")  # answered: sampling goes on without pause

    asyncio.run(main())
