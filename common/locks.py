"""One process at a time on this machine: an exclusive lock on a file beside what it guards."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(guarded: Path) -> Iterator[None]:
    """Hold `<guarded>.lock` (created with its directory) while the block runs; other
    processes entering the same block wait. Released when the block ends or the process dies."""
    guarded.parent.mkdir(parents=True, exist_ok=True)
    with guarded.with_name(f"{guarded.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
