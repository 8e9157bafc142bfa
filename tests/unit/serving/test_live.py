"""Live reload: swap on an alias move, reuse nothing stale, keep serving when a load fails."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass

from serving.live import LiveModels


@dataclass(frozen=True)
class Bundle:
    versions: Hashable
    built_from: Hashable | None = None


class Registry:
    """Fake aliases: `versions` is what the registry says now; `broken` makes loads fail."""

    def __init__(self) -> None:
        self.versions: Hashable = ("1", None)
        self.broken: str | None = None
        self.loads = 0

    def load(self, previous: Bundle | None) -> Bundle:
        self.loads += 1
        if self.broken:
            raise OSError(self.broken)
        return Bundle(self.versions, previous.versions if previous else None)

    def watch(self) -> Hashable:
        return self.versions


def _live(registry: Registry, interval_s: float = 0) -> LiveModels[Bundle]:
    return LiveModels("churn", load=registry.load, watch=registry.watch, interval_s=interval_s)


def test_nothing_is_loaded_again_while_the_aliases_stay() -> None:
    registry = Registry()
    live = _live(registry)
    first = live.current
    assert live.check() is False and live.check() is False
    assert live.current is first and registry.loads == 1
    assert live.status()["swaps"] == 0 and live.status()["last_check"] is not None


def test_an_alias_move_swaps_the_whole_bundle_built_from_the_previous_one() -> None:
    registry = Registry()
    live = _live(registry)
    registry.versions = ("1", "2")  # a challenger appears
    assert live.check() is True
    assert live.current == Bundle(("1", "2"), ("1", None))
    registry.versions = ("2", None)  # and is promoted
    assert live.check() is True
    assert live.current.versions == ("2", None)
    status = live.status()
    assert status["swaps"] == 2 and status["swapped_at"] and status["last_error"] is None


def test_a_failed_load_keeps_the_current_bundle_and_says_why_until_it_recovers() -> None:
    registry = Registry()
    live = _live(registry)
    serving = live.current
    registry.versions, registry.broken = ("3", None), "model.skops is missing"
    assert live.check() is False and live.check() is False
    assert live.current is serving
    assert live.status()["last_error"] == "OSError: model.skops is missing"
    registry.broken = None
    assert live.check() is True
    assert live.current.versions == ("3", None) and live.status()["last_error"] is None


def test_an_unreachable_registry_keeps_the_current_bundle() -> None:
    registry = Registry()
    live = _live(registry)

    def down() -> Hashable:
        raise ConnectionError("registry down")

    live._watch = down
    assert live.check() is False
    assert live.current.versions == ("1", None)
    assert "registry down" in str(live.status()["last_error"])


def test_the_polling_thread_swaps_while_readers_only_ever_see_whole_bundles() -> None:
    registry = Registry()
    live = _live(registry, interval_s=0.01)
    seen: set[Hashable] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            bundle = live.current
            seen.add(bundle.versions)

    reader = threading.Thread(target=read)
    reader.start()
    live.start()
    try:
        registry.versions = ("2", None)
        deadline = time.monotonic() + 5
        while live.current.versions != ("2", None) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        live.stop()
        stop.set()
        reader.join()
    assert live.current.versions == ("2", None)
    assert seen <= {("1", None), ("2", None)}


def test_interval_zero_turns_polling_off() -> None:
    live = _live(Registry(), interval_s=0)
    live.start()
    assert live._thread is None
