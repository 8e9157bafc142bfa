"""Live reload: a model worker follows the registry's aliases without a restart.

Each model worker holds what it serves as one immutable bundle (champion, and challenger if
any) behind `LiveModels.current`. A daemon thread asks the registry every `interval_s` which
versions the aliases point to; when that differs from the bundle's, it loads the new bundle
beside the old one (requests keep being served meanwhile) and swaps the reference. A request
reads `current` once and uses that bundle throughout, so the version it reports is the version
that scored it. Every worker process polls on its own: each swaps within one interval.

A failed poll or load keeps the current bundle serving; the error is logged once per cause
and shown in `GET /models` (`reload.last_error`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from serving import errors

log = logging.getLogger("clientinsight.reload")


class Bundle(Protocol):
    """What a model worker serves; `versions` is compared with what the registry says."""

    @property
    def versions(self) -> Hashable: ...


B = TypeVar("B", bound=Bundle)


class LiveModels(Generic[B]):
    """The current bundle, swapped whole when the registry's aliases move."""

    def __init__(
        self,
        label: str,
        *,
        load: Callable[[B | None], B],
        watch: Callable[[], Hashable],
        interval_s: float,
    ) -> None:
        """`load(previous)` builds a bundle from what the aliases point to now (reusing what
        `previous` already holds); `watch()` says cheaply which versions that would be."""
        self.label = label
        self._load = load
        self._watch = watch
        self.interval_s = interval_s
        self.current: B = load(None)
        self.swaps = 0
        self.swapped_at: datetime | None = None
        self.last_check: datetime | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start polling (not when `interval_s` is 0: reload is then off)."""
        if self.interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"reload-{self.label}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def check(self) -> bool:
        """One poll: swap if the aliases moved; True if a new bundle now serves."""
        try:
            wanted = self._watch()
            self.last_check = datetime.now(UTC)
            if wanted == self.current.versions:
                self._recovered()
                return False
            previous = self.current
            fresh = self._load(previous)
        except Exception as exc:  # the registry or a model artifact; keep serving what we have
            reason = errors.reason(exc)
            if reason != self.last_error:
                log.warning(
                    "%s: reload failed, still serving %s (%s)",
                    self.label,
                    self.current.versions,
                    reason,
                )
            self.last_error = reason
            return False
        self.current = fresh  # one reference assignment: atomic for every reader
        self.swaps += 1
        self.swapped_at = datetime.now(UTC)
        self._recovered()
        log.info("%s: now serving %s (was %s)", self.label, fresh.versions, previous.versions)
        return True

    def status(self) -> dict[str, Any]:
        """JSON-ready reload state for `GET /models`."""
        return {
            "interval_s": self.interval_s,
            "swaps": self.swaps,
            "swapped_at": self.swapped_at.isoformat() if self.swapped_at else None,
            "last_check": self.last_check.isoformat() if self.last_check else None,
            "last_error": self.last_error,
        }

    def _recovered(self) -> None:
        if self.last_error is not None:
            log.info("%s: registry answers again", self.label)
            self.last_error = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check()
