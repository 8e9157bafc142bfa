"""Challenger rows: written beside the champion's, paired exactly, compared per version pair;
journal rows from before the columns existed still replay."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from persistence import migrate
from persistence.db import make_engine
from persistence.journal import Journal
from persistence.shadow import compare
from persistence.tables import predictions
from persistence.writer import COLUMNS, PredictionBlock, PredictionWriter, prediction_block
from tests.support.records import recording


def _block(
    scores: list[float], bands: list[str], version: str, champion: PredictionBlock | None = None
) -> PredictionBlock:
    n = len(scores)
    return prediction_block(
        recording=recording(
            "churn",
            entity_field="customer_id",
            score_field="churn_probability",
            label_field="risk_band",
        ),
        request_id=champion.request_id if champion else f"r-{version}-{scores[0]}",
        source="api",
        inputs={} if champion else {"i": list(range(n))},
        outputs={
            "customer_id": [f"c{i}" for i in range(n)],
            "churn_probability": scores,
            "risk_band": bands,
            "model_version": [version] * n,
        },
        latency_ms=1.0,
        shadow_of=champion.ids if champion else None,
    )


def _write(tmp_path: Path, blocks: list[PredictionBlock]) -> str:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    migrate.upgrade(url)
    writer = PredictionWriter(
        lambda: make_engine(url), journal_dir=tmp_path / "journal", flush_interval_s=0.01
    )
    writer.start()
    for block in blocks:
        writer.submit(block)
    assert writer.flush(10)
    writer.close()
    return url


def test_challenger_rows_point_at_the_champion_rows_they_shadow(tmp_path: Path) -> None:
    champion = _block([0.2, 0.7], ["low", "high"], "1")
    challenger = _block([0.4, 0.65], ["medium", "high"], "2", champion)
    assert challenger.role == "challenger" and champion.role == "champion"
    url = _write(tmp_path, [champion, challenger])
    engine = make_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(
            select(predictions.c.id, predictions.c.role, predictions.c.shadow_of)
        ).all()
    pairs = {str(r.shadow_of): r.role for r in rows if r.role == "challenger"}
    assert set(pairs) == set(champion.ids)
    assert {r.role for r in rows if str(r.id) in champion.ids} == {"champion"}

    [found] = compare(engine, "churn")
    engine.dispose()
    assert (found.champion_version, found.challenger_version, found.rows) == ("1", "2", 2)
    assert found.label_agreement == 0.5  # low -> medium, high -> high
    assert found.mean_score_delta == pytest.approx((0.2 - 0.05) / 2)
    assert found.mean_abs_score_delta == pytest.approx((0.2 + 0.05) / 2)
    assert found.max_abs_score_delta == pytest.approx(0.2)


def test_each_version_pair_is_reported_apart(tmp_path: Path) -> None:
    first = _block([0.1], ["low"], "1")
    second = _block([0.9], ["high"], "3")
    url = _write(
        tmp_path,
        [first, _block([0.1], ["low"], "2", first), second, _block([0.8], ["high"], "4", second)],
    )
    engine = make_engine(url)
    found = {(c.champion_version, c.challenger_version): c for c in compare(engine, "churn")}
    assert compare(engine, "credit-evaluation") == []
    engine.dispose()
    assert set(found) == {("1", "2"), ("3", "4")}
    assert found[("1", "2")].label_agreement == 1.0


@pytest.mark.parametrize("missing", [1, 3], ids=["before-0005", "before-0004"])
def test_journal_rows_from_before_a_migration_replay_as_http_champion_rows(
    tmp_path: Path, missing: int
) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    migrate.upgrade(url)
    old = _block([0.3], ["medium"], "1").copy_rows()[0][: len(COLUMNS) - missing]
    Journal(tmp_path / "journal", fsync=False).append([old])
    writer = PredictionWriter(
        lambda: make_engine(url), journal_dir=tmp_path / "journal", flush_interval_s=0.01
    )
    writer.start()
    assert writer.flush(10)
    writer.close()
    engine = make_engine(url)
    with engine.connect() as connection:
        [row] = connection.execute(
            select(predictions.c.role, predictions.c.shadow_of, predictions.c.protocol)
        ).all()
    engine.dispose()
    assert (row.role, row.shadow_of, row.protocol) == ("champion", None, "http")
