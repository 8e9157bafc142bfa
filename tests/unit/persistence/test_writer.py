"""The buffered writer: rows land in bulk, failures are retried without loss, close drains."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

from models import churn
from persistence.db import make_engine
from persistence.journal import Journal
from persistence.tables import predictions
from persistence.writer import (
    COLUMNS,
    PredictionBlock,
    PredictionWriter,
    prediction_block,
    record_columns,
)
from tests.support.predictions import count_rows, numbered_block, sqlite_database
from tests.support.records import SNAKE, recording


def _writer(
    tmp_path: Path, engine_factory: Callable[[], Engine], **options: Any
) -> PredictionWriter:
    options.setdefault("flush_interval_s", 0.01)
    options.setdefault("max_backoff_s", 0.05)
    return PredictionWriter(engine_factory, journal_dir=tmp_path / "journal", **options)


class Switchable:
    """An engine factory whose database can be taken down and brought back."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.down = False

    def __call__(self) -> Engine:
        if self.down:
            raise ConnectionError("database is down")
        engine = make_engine(self.url)
        outer = self

        @event.listens_for(engine, "before_cursor_execute")
        def _refuse(*_: Any) -> None:
            if outer.down:
                raise ConnectionError("database went away")

        return engine


def _ids(url: str) -> list[str]:
    with make_engine(url).connect() as conn:
        return [str(i) for i in conn.execute(select(predictions.c.id)).scalars()]


def test_rows_are_written_in_bulk(tmp_path: Path) -> None:
    url = sqlite_database(tmp_path)
    writer = _writer(tmp_path, lambda: make_engine(url), batch_rows=50)
    writer.start()
    for i in range(10):
        writer.submit(numbered_block(30, request_id=f"r{i}"))
    assert writer.flush(10)
    writer.close()
    assert count_rows(make_engine(url)) == 300
    stats = writer.stats
    assert stats.rows_written == 300 and stats.rows_pending == 0 and stats.rows_spilled == 0


def test_an_outage_journals_rows_and_replays_each_exactly_once(tmp_path: Path) -> None:
    url = sqlite_database(tmp_path)
    database = Switchable(url)
    writer = _writer(tmp_path, database)
    writer.start()
    writer.submit(numbered_block(5, request_id="before"))
    assert writer.flush(10)
    database.down = True
    blocks = [numbered_block(10, request_id=f"during-{i}") for i in range(4)]
    for block in blocks:
        writer.submit(block)
    deadline = time.monotonic() + 10
    while writer.stats.journal_rows < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.stats.journal_rows == 40 and writer.stats.rows_spilled == 40
    assert not writer.flush(0.2)  # nothing reaches a database that is down
    database.down = False
    writer.submit(numbered_block(3, request_id="after"))
    assert writer.flush(10)
    writer.close()
    stats = writer.stats
    assert stats.rows_replayed >= 40 and stats.journal_rows == 0 and stats.write_failures >= 1
    ids = _ids(url)
    assert len(ids) == len(set(ids)) == 5 + 40 + 3
    assert set(ids) >= {row_id for block in blocks for row_id in block.ids}
    assert not list((tmp_path / "journal").iterdir())


def test_replaying_rows_already_stored_writes_nothing_twice(tmp_path: Path) -> None:
    """A commit whose acknowledgement was lost gets journaled too; replay must skip it."""
    url = sqlite_database(tmp_path)
    block = numbered_block(6, request_id="twice")
    writer = _writer(tmp_path, lambda: make_engine(url))
    writer.start()
    writer.submit(block)
    assert writer.flush(10)
    writer.close()
    Journal(tmp_path / "journal").append(block.copy_rows())
    again = _writer(tmp_path, lambda: make_engine(url))
    assert again.stats.journal_rows == 6
    again.start()
    assert again.flush(10)
    again.close()
    assert sorted(_ids(url)) == sorted(block.ids)


def test_an_unreadable_segment_is_set_aside_and_the_rest_still_replay(tmp_path: Path) -> None:
    url = sqlite_database(tmp_path)
    journal = Journal(tmp_path / "journal", fsync=False)
    torn = journal.append(numbered_block(3, request_id="torn").copy_rows())
    assert torn is not None
    torn.write_text(torn.read_text()[:-9])  # power loss with fsync off
    kept = numbered_block(4, request_id="kept")
    journal.append(kept.copy_rows())
    writer = _writer(tmp_path, lambda: make_engine(url))
    assert writer.stats.journal_rows == 7
    writer.start()
    assert writer.flush(10)  # the writer keeps going: it did not die on the torn segment
    writer.submit(numbered_block(2, request_id="after"))
    assert writer.flush(10)
    writer.close()
    assert writer.stats.journal_rows == 0 and writer.stats.rows_replayed == 4
    assert count_rows(make_engine(url)) == 6
    assert [p.name for p in (tmp_path / "journal").iterdir()] == [torn.name + ".unreadable"]


def test_close_with_the_database_down_journals_for_the_next_start(tmp_path: Path) -> None:
    url = sqlite_database(tmp_path)
    database = Switchable(url)
    database.down = True
    writer = _writer(tmp_path, database, flush_interval_s=5)
    writer.start()
    writer.submit(numbered_block(7, request_id="at-shutdown"))
    writer.close(timeout=10)
    assert writer.stats.journal_rows == 7 and count_rows(make_engine(url)) == 0
    database.down = False
    restarted = _writer(tmp_path, database)
    restarted.start()
    assert restarted.flush(10)
    restarted.close()
    assert count_rows(make_engine(url)) == 7 and restarted.stats.rows_replayed == 7


def test_close_drains_what_was_queued(tmp_path: Path) -> None:
    url = sqlite_database(tmp_path)
    writer = _writer(tmp_path, lambda: make_engine(url), flush_interval_s=5)
    writer.start()
    writer.submit(numbered_block(7))
    writer.close()
    assert count_rows(make_engine(url)) == 7


def test_a_full_queue_spills_to_the_journal_and_loses_nothing(tmp_path: Path) -> None:
    url = sqlite_database(tmp_path)
    writer = _writer(tmp_path, lambda: make_engine(url), max_queue_rows=10)
    for i in range(5):  # the thread is not running yet: everything past 10 rows overflows
        writer.submit(numbered_block(4, request_id=f"r{i}"))
    assert writer.stats.queue_depth == 8 and writer.stats.rows_spilled == 12
    writer.start()
    assert writer.flush(10)
    writer.close()
    assert count_rows(make_engine(url)) == 20


def test_counters_reach_the_metrics_hook(tmp_path: Path) -> None:
    url = sqlite_database(tmp_path)
    database = Switchable(url)
    seen: dict[str, int] = {}
    depths: list[tuple[int, int]] = []

    class Recorder:
        def count(self, name: str, rows: int) -> None:
            seen[name] = seen.get(name, 0) + rows

        def depth(self, queued: int, journaled: int) -> None:
            depths.append((queued, journaled))

    writer = _writer(tmp_path, database, metrics=Recorder())
    writer.start()
    writer.submit(numbered_block(2))
    assert writer.flush(10)
    database.down = True
    writer.submit(numbered_block(3))
    deadline = time.monotonic() + 10
    while writer.stats.journal_rows < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    database.down = False
    assert writer.flush(10)
    writer.close()
    assert seen == {"written": 2, "spilled": 3, "replayed": 3}
    assert depths[-1] == (0, 0) and (0, 3) in depths


def _block_for_one_customer() -> PredictionBlock:
    customer = churn.Customer.model_validate(SNAKE)
    answer = churn.ChurnPrediction(
        customer_id="7590-VHVEG",
        churn_probability=0.7,
        churn=True,
        risk_band="high",
        model_version="3",
    )
    return prediction_block(
        recording=recording(
            "churn",
            entity_field="customer_id",
            score_field="churn_probability",
            label_field="risk_band",
        ),
        request_id="abc",
        source="file",
        inputs=record_columns([customer]),
        outputs=record_columns([answer]),
        latency_ms=2.5,
    )


def _written(tmp_path: Path, block: PredictionBlock) -> list[dict[str, Any]]:
    """The block written through the writer to SQLite and read back through SQLAlchemy."""
    url = sqlite_database(tmp_path)
    writer = _writer(tmp_path, lambda: make_engine(url))
    writer.start()
    writer.submit(block)
    writer.close()
    with make_engine(url).connect() as conn:
        return [dict(row._mapping) for row in conn.execute(select(predictions))]


def test_a_block_pairs_inputs_and_outputs(tmp_path: Path) -> None:
    block = _block_for_one_customer()
    [row] = _written(tmp_path, block)
    assert str(row["id"]) == block.ids[0] and row["request_id"] == "abc"
    assert row["model_version"] == "3" and row["entity_id"] == "7590-VHVEG"
    assert row["model_versions"] == {"churn": "3"}
    assert row["score"] == 0.7 and row["label"] == "high" and row["source"] == "file"
    assert row["inputs"] == churn.Customer.model_validate(SNAKE).model_dump(mode="json")
    assert row["outputs"]["churn"] is True and row["latency_ms"] == 2.5
    assert row["created_at"].replace(tzinfo=UTC) == block.created_at


def test_copy_rows_carry_each_document_as_json_text() -> None:
    block = _block_for_one_customer()
    [as_copy] = block.copy_rows()
    by_name = dict(zip(COLUMNS, as_copy, strict=True))
    assert json.loads(by_name["inputs"]) == churn.Customer.model_validate(SNAKE).model_dump(
        mode="json"
    )
    assert json.loads(by_name["model_versions"]) == {"churn": "3"}
    assert by_name["score"] == 0.7 and by_name["label"] == "high"


def test_several_versions_fill_model_version_from_the_primary_model(tmp_path: Path) -> None:
    versions = {"credit-segment": "2", "credit-approval": "5"}
    block = prediction_block(
        recording=recording(
            "credit-evaluation",
            entity_field="applicant_id",
            score_field="approval_probability",
            label_field="eligible",
            primary_model="credit-approval",
        ),
        request_id="r",
        source="api",
        inputs={"age": [30.0]},
        outputs={"eligible": [True], "model_versions": [versions]},
        latency_ms=1.0,
    )
    [row] = _written(tmp_path, block)
    assert row["model_version"] == "5" and row["model_versions"] == versions
    assert row["label"] == "True" and row["entity_id"] is None and row["score"] is None


def test_rows_must_pair_up() -> None:
    with pytest.raises(ValueError, match="rows"):
        prediction_block(
            recording=recording(
                "churn",
                entity_field="id",
                score_field="p",
                label_field="band",
            ),
            request_id="r",
            source="api",
            inputs={"i": [1, 2]},
            outputs={"p": [0.5], "model_version": ["1"]},
            latency_ms=1.0,
        )


def test_a_block_that_cannot_be_encoded_does_not_hold_back_the_others(tmp_path: Path) -> None:
    url = sqlite_database(tmp_path)
    writer = _writer(tmp_path, lambda: make_engine(url))
    broken = dataclasses.replace(
        numbered_block(3, request_id="broken"), inputs={"i": [object()] * 3}
    )
    writer.start()
    writer.submit(numbered_block(5, request_id="before"))
    writer.submit(broken)
    writer.submit(numbered_block(4, request_id="after"))
    assert writer.flush(10)
    writer.close()
    assert count_rows(make_engine(url)) == 9
    assert writer.stats.rows_unwritable == 3 and writer.stats.rows_pending == 0


def test_the_linger_gathers_rows_arriving_one_by_one_into_one_write(tmp_path: Path) -> None:
    url = sqlite_database(tmp_path)
    writer = _writer(tmp_path, lambda: make_engine(url), flush_interval_s=1, linger_s=0.5)
    writer.start()
    for i in range(5):  # arrivals 20 ms apart, all within the linger of the first
        writer.submit(numbered_block(2, request_id=f"r{i}"))
        time.sleep(0.02)
    assert writer.flush(10)
    writer.close()
    stats = writer.stats
    assert (stats.rows_written, stats.writes) == (10, 1)
    assert count_rows(make_engine(url)) == 10


def test_without_a_linger_each_arrival_is_written_at_once(tmp_path: Path) -> None:
    url = sqlite_database(tmp_path)
    writer = _writer(tmp_path, lambda: make_engine(url), flush_interval_s=1)
    writer.start()
    for i in range(3):
        writer.submit(numbered_block(2, request_id=f"r{i}"))
        assert writer.flush(10)
    writer.close()
    assert (writer.stats.rows_written, writer.stats.writes) == (6, 3)
