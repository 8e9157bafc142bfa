"""Progress for long CLI steps: a rich spinner per step on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console


@dataclass
class Steps:
    """Announce each step, show it running, and report how long it took."""

    console: Console | None

    @classmethod
    def quiet(cls) -> Steps:
        return cls(console=None)

    @classmethod
    def to_terminal(cls) -> Steps:
        return cls(console=Console(stderr=True))

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        if self.console is None:
            yield
            return
        started = time.perf_counter()
        with self.console.status(f"[bold]{title}[/bold] ..."):
            yield
        self.console.print(f"[green]done[/green] {title} ({time.perf_counter() - started:.1f} s)")
