"""The writer's journal on a real directory: each append is one whole segment, read back as it
was written and in the order written, across restarts and a stepped-back clock; a spill cut
off before it was whole is never replayed; fsync makes a segment durable before it counts."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from persistence.journal import UNREADABLE, Journal, UnreadableSegment
from tests.support.predictions import numbered_block


def _rows(n: int, request_id: str) -> list[tuple[Any, ...]]:
    """`n` encoded prediction rows of one request, as the writer spills them."""
    return numbered_block(n, request_id=request_id).copy_rows()


def _request_ids(journal: Journal) -> list[str]:
    """The request of each segment, oldest segment first."""
    return [Journal.read(segment)[0][1] for segment in journal.segments()]


def test_an_append_reads_back_as_written(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    rows = _rows(5, "r1")
    segment = journal.append(rows)
    assert segment is not None and journal.segments() == [segment]
    again = Journal.read(segment)
    assert again == rows
    assert all(isinstance(row, tuple) for row in again)
    created_at = again[0][2]
    assert isinstance(created_at, datetime) and created_at.utcoffset() == timedelta(0)
    assert journal.rows() == 5


def test_values_of_every_kind_survive(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    created_at = datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=UTC)
    row = ("id-1", "req", created_at, None, 0.1 + 0.2, -7, True, 'naïve ✓ "quoted"\nline')
    segment = journal.append(iter([row]))  # any iterable, read once
    assert segment is not None
    assert Journal.read(segment) == [row]


def test_nothing_to_append_writes_no_segment(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    assert journal.append([]) is None
    assert journal.segments() == [] and journal.rows() == 0
    assert list(tmp_path.iterdir()) == []


def test_the_directory_is_created(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b" / "journal"
    journal = Journal(directory)
    assert directory.is_dir() and journal.segments() == []


def test_segments_come_back_in_the_order_they_were_written(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    written = [f"req-{i}" for i in range(15)]
    for i, request_id in enumerate(written):
        journal.append(_rows(i % 3 + 1, request_id))
    assert _request_ids(journal) == written
    assert journal.rows() == sum(i % 3 + 1 for i in range(15))


def test_a_clock_stepped_back_does_not_reorder_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path)
    journal.append(_rows(1, "first"))
    monkeypatch.setattr(time, "time_ns", lambda: 1)  # NTP stepped the wall clock far back
    journal.append(_rows(1, "second"))
    journal.append(_rows(1, "third"))
    assert _request_ids(journal) == ["first", "second", "third"]
    assert _request_ids(Journal(tmp_path)) == ["first", "second", "third"]


def test_removed_segments_are_gone_and_the_rest_keep_their_order(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    first, second, third = (journal.append(_rows(2, f"r{i}")) for i in range(3))
    assert first is not None and second is not None and third is not None
    journal.remove(first)
    assert journal.segments() == [second, third] and journal.rows() == 4
    journal.remove(first)  # removing twice is harmless (a replay retried after a crash)
    journal.remove(third)
    assert journal.segments() == [second] and journal.rows() == 2
    journal.remove(second)
    assert journal.segments() == [] and journal.rows() == 0


def test_a_new_process_finds_what_the_previous_one_left(tmp_path: Path) -> None:
    before = Journal(tmp_path)
    spilled = [_rows(4, f"old-{i}") for i in range(3)]
    for rows in spilled:
        before.append(rows)
    after = Journal(tmp_path)  # the restarted worker
    assert after.segments() == before.segments() and after.rows() == 12
    assert [Journal.read(segment) for segment in after.segments()] == spilled


def test_a_new_process_appends_after_what_it_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = Journal(tmp_path)
    for i in range(3):
        before.append(_rows(1, f"old-{i}"))
    before.remove(before.segments()[0])  # part of it was replayed before the process stopped
    monkeypatch.setattr(time, "time_ns", lambda: 1)  # and the new one's clock is behind
    after = Journal(tmp_path)
    after.append(_rows(1, "new"))
    assert _request_ids(after) == ["old-1", "old-2", "new"]


def test_a_spill_cut_off_before_it_was_whole_is_never_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path)
    journal.append(_rows(2, "whole"))

    def crash(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        journal.append(_rows(3, "cut-off"))
    # Neither this process nor the next one sees the cut-off spill as a segment.
    assert _request_ids(journal) == ["whole"] and journal.rows() == 2
    monkeypatch.undo()
    restarted = Journal(tmp_path)
    assert _request_ids(restarted) == ["whole"] and restarted.rows() == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [journal.segments()[0].name]
    # The same process goes on spilling after the failure (the writer retries).
    journal.append(_rows(1, "retried"))
    assert _request_ids(journal) == ["whole", "retried"]


def test_a_partial_file_left_by_a_crash_is_discarded_at_start(tmp_path: Path) -> None:
    Journal(tmp_path).append(_rows(2, "whole"))
    partial = tmp_path / "000000000002-1700000000000000000.jsonl.tmp"
    partial.write_text('["id", "req", "2024-01-01T00:00:00+00:00", "chu')  # torn mid-row
    journal = Journal(tmp_path)
    assert not partial.exists()
    assert _request_ids(journal) == ["whole"] and journal.rows() == 2


def test_concurrent_appends_each_make_one_whole_segment(tmp_path: Path) -> None:
    """The writer thread and an overflowing request may spill at the same time."""
    journal = Journal(tmp_path, fsync=False)
    start = threading.Barrier(4)

    def spill(thread: int) -> None:
        start.wait()
        for i in range(25):
            journal.append(_rows(2, f"t{thread}-{i}"))

    threads = [threading.Thread(target=spill, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    segments = journal.segments()
    assert len(segments) == len({s.name for s in segments}) == 100
    assert journal.rows() == 200
    found = _request_ids(journal)
    assert sorted(found) == sorted(f"t{t}-{i}" for t in range(4) for i in range(25))
    for t in range(4):  # each thread's spills stay in the order it made them
        assert [r for r in found if r.startswith(f"t{t}-")] == [f"t{t}-{i}" for i in range(25)]


class FsyncRecorder:
    """Stands in for `os.fsync`: records what was synced and which segments were visible."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.real = os.fsync
        self.synced: list[tuple[int, list[str]]] = []  # (inode, segment names visible then)

    def __call__(self, fd: int) -> None:
        visible = sorted(p.name for p in self.directory.glob("*.jsonl"))
        self.synced.append((os.fstat(fd).st_ino, visible))
        self.real(fd)


def test_with_fsync_a_segment_is_durable_before_it_becomes_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path, fsync=True)
    recorder = FsyncRecorder(tmp_path)
    monkeypatch.setattr(os, "fsync", recorder)
    segment = journal.append(_rows(3, "durable"))
    assert segment is not None
    inodes = [inode for inode, _ in recorder.synced]
    # The rows (under a name no reader takes for a segment), then the directory entry.
    assert inodes == [segment.stat().st_ino, tmp_path.stat().st_ino]
    assert recorder.synced[0][1] == []  # not yet a segment when its data was synced
    assert recorder.synced[1][1] == [segment.name]


def test_without_fsync_nothing_is_synced_and_segments_read_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = FsyncRecorder(tmp_path)
    monkeypatch.setattr(os, "fsync", recorder)
    journal = Journal(tmp_path, fsync=False)
    rows = _rows(3, "fast")
    segment = journal.append(rows)
    assert recorder.synced == []
    assert segment is not None and Journal.read(segment) == rows
    assert Journal(tmp_path).rows() == 3


def test_an_unreadable_segment_is_set_aside_and_named(tmp_path: Path) -> None:
    journal = Journal(tmp_path, fsync=False)
    first = journal.append(_rows(1, "torn"))
    assert first is not None
    first.write_text(first.read_text()[:-7])  # torn: power loss with fsync off
    with pytest.raises(UnreadableSegment, match=first.name) as refused:
        Journal.read(first)
    assert refused.value.lines == 1
    assert not first.exists() and (tmp_path / (first.name + UNREADABLE)).exists()
    assert journal.segments() == []


def test_files_that_are_not_segments_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "notes.jsonl").write_text("an operator's notes\n")
    journal = Journal(tmp_path, fsync=False)
    segment = journal.append(_rows(1, "kept"))
    assert journal.segments() == [segment]
