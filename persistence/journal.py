"""The writer's local append-only journal: rows the database could not take yet.

Each spilled batch becomes one segment file, written to a temporary name, fsynced, renamed into
place and the directory fsynced: a segment is either whole on disk or absent, so a crash while
spilling never leaves half a batch to replay. Segments are named by a monotonically increasing
sequence and replayed in that order; a replayed segment is deleted only after its rows are
committed, and replay skips rows whose id is already stored, so replaying twice writes nothing
twice.

A segment that cannot be read back (truncated by power loss with fsync off, or edited by hand)
is set aside as `<name>.unreadable` for an operator, never deleted and never allowed to stop
the replay of the others; files that are not segments are ignored.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Position of `created_at` in an encoded row (`writer.COLUMNS`): stored as ISO 8601 text.
_CREATED_AT = 2
_SUFFIX = ".jsonl"
_SEGMENT = re.compile(r"\d+-\d+" + re.escape(_SUFFIX))
UNREADABLE = ".unreadable"


class UnreadableSegment(ValueError):
    """A segment's content is not the rows that were appended (it was set aside); `lines`
    is how many lines it held (what `rows()` had counted for it)."""

    def __init__(self, message: str, lines: int) -> None:
        super().__init__(message)
        self.lines = lines


class Journal:
    """Segments of encoded rows under `directory`, oldest first."""

    def __init__(self, directory: Path, *, fsync: bool = True) -> None:
        self.directory = directory
        self.fsync = fsync
        self._lock = threading.Lock()  # the writer thread and an overflowing request both append
        directory.mkdir(parents=True, exist_ok=True)
        for partial in directory.glob("*.tmp"):  # a spill cut off before its rename
            partial.unlink(missing_ok=True)
        self._sequence = max((self._number(p) for p in self.segments()), default=0)

    @staticmethod
    def _number(segment: Path) -> int:
        return int(segment.name.split("-", 1)[0])

    def segments(self) -> list[Path]:
        """Whole segments, in the order they were written (other files are not segments)."""
        found = (p for p in self.directory.glob(f"*{_SUFFIX}") if _SEGMENT.fullmatch(p.name))
        return sorted(found, key=self._number)

    def rows(self) -> int:
        """Rows waiting in the journal (counts lines; used at start-up and in tests)."""
        total = 0
        for segment in self.segments():
            with segment.open("rb") as handle:
                total += sum(1 for _ in handle)
        return total

    def append(self, rows: Iterable[tuple[Any, ...]]) -> Path | None:
        """Write `rows` as one new segment, durably (see the module docstring)."""
        lines = [json.dumps(_to_json(row)) for row in rows]
        if not lines:
            return None
        with self._lock:
            self._sequence += 1
            name = f"{self._sequence:012d}-{time.time_ns()}{_SUFFIX}"
            return self._write_segment(name, lines)

    def _write_segment(self, name: str, lines: list[str]) -> Path:
        partial = self.directory / (name + ".tmp")
        with partial.open("w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
            handle.flush()
            if self.fsync:
                os.fsync(handle.fileno())
        final = self.directory / name
        partial.rename(final)
        if self.fsync:
            descriptor = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        return final

    @staticmethod
    def read(segment: Path) -> list[tuple[Any, ...]]:
        """The encoded rows of one segment, as they were appended; an unreadable one is
        renamed `<name>.unreadable` and raises `UnreadableSegment` naming it."""
        try:
            with segment.open(encoding="utf-8") as handle:
                return [_from_json(json.loads(line)) for line in handle if line.strip()]
        except (ValueError, TypeError, IndexError, AttributeError) as exc:  # JSON, UTF-8, shape
            with segment.open("rb") as handle:
                lines = sum(1 for _ in handle)
            segment.rename(segment.with_name(segment.name + UNREADABLE))
            reason = f"{segment.name} ({lines} lines): {type(exc).__name__}: {exc}"
            raise UnreadableSegment(reason, lines) from exc

    @staticmethod
    def remove(segment: Path) -> None:
        segment.unlink(missing_ok=True)


def _to_json(row: tuple[Any, ...]) -> list[Any]:
    values = list(row)
    values[_CREATED_AT] = values[_CREATED_AT].isoformat()
    return values


def _from_json(values: list[Any]) -> tuple[Any, ...]:
    values[_CREATED_AT] = datetime.fromisoformat(values[_CREATED_AT])
    return tuple(values)
