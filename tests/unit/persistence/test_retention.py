"""Retention deletes what is past the cut-off, in batches, and nothing else."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from persistence import retention
from persistence.__main__ import main
from persistence.db import make_engine
from persistence.tables import rollup_marks, stale_rollup_hours
from persistence.writer import PredictionWriter
from tests.support.predictions import count_rows, numbered_block, sqlite_database


def test_prune_deletes_only_rows_past_the_cut_off_in_batches(tmp_path: Path) -> None:
    url = sqlite_database(tmp_path)
    now = datetime.now(UTC)
    writer = PredictionWriter(lambda: make_engine(url), journal_dir=tmp_path / "journal")
    writer.start()
    for age_days, rows in ((800, 25), (731, 5), (10, 7), (0, 3)):
        block = numbered_block(rows, request_id=f"age-{age_days}")
        writer.submit(dataclasses.replace(block, created_at=now - timedelta(days=age_days)))
    assert writer.flush(10)
    writer.close()
    engine = make_engine(url)
    assert retention.prune(engine, timedelta(days=730), batch_rows=7) == 30
    assert count_rows(engine) == 10
    assert retention.prune(engine, timedelta(days=730)) == 0


def test_stale_hour_records_go_once_every_grouping_has_rolled_them_up(tmp_path: Path) -> None:
    engine = make_engine(sqlite_database(tmp_path))
    hour = datetime(2026, 1, 1, tzinfo=UTC)

    def remaining() -> list[int]:
        with engine.connect() as connection:
            query = stale_rollup_hours.select().order_by(stale_rollup_hours.c.seq)
            return [row.seq for row in connection.execute(query)]

    with engine.begin() as connection:
        connection.execute(stale_rollup_hours.insert(), [{"hour": hour}] * 5)
    assert retention.forget_stale_hours(engine) == 4  # no grouping needs them; 5 stays
    with engine.begin() as connection:
        connection.execute(stale_rollup_hours.insert(), [{"hour": hour}] * 5)  # seq 6 to 10
        connection.execute(
            rollup_marks.insert(),
            [
                {"scope": "churn", "grouping": "a", "rolled_until": hour, "stale_seen": 8},
                {"scope": "*", "grouping": "b", "rolled_until": hour, "stale_seen": 7},
            ],
        )
    assert retention.forget_stale_hours(engine) == 3  # both have seen 5 to 7
    assert remaining() == [8, 9, 10]
    with engine.begin() as connection:
        connection.execute(rollup_marks.update().values(stale_seen=10))
    assert retention.forget_stale_hours(engine) == 2
    assert remaining() == [10]


def test_prune_command_reads_the_database_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = sqlite_database(tmp_path)
    monkeypatch.setenv("DATABASE_URL", url)
    from persistence.settings import get_settings

    get_settings.cache_clear()
    try:
        assert main(["prune", "--older-than-days", "1", "--yes"]) == 0
    finally:
        get_settings.cache_clear()
    assert "deleted 0 predictions older than 1 days" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--batch-rows", "0"], "--batch-rows '0' must be a whole number from 1"),
        (["--older-than-days", "0"], "--older-than-days '0' must be a whole number from 1"),
        (["--older-than-days", "-1"], "--older-than-days '-1' must be a whole number from 1"),
        (["--older-than-days", "-100000000"], "must be a whole number from 1 to 36500"),
        (["--older-than-days", "99999999"], "must be a whole number from 1 to 36500"),
        (["--older-than-days", "10"], "would delete rows newer than the retention period"),
    ],
)
def test_prune_refuses_a_dangerous_or_impossible_cut_off_with_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    words: str,
) -> None:
    url = sqlite_database(tmp_path)
    monkeypatch.setenv("DATABASE_URL", url)
    from persistence.settings import get_settings

    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as exit_:
            main(["prune", *argv])
    finally:
        get_settings.cache_clear()
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert words in line
