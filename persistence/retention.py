"""Retention: delete predictions older than a cut-off, in short batches.

Short transactions (`batch_rows` rows each, oldest first, through the `created_at` index) keep
the writer's COPY and the dashboards' reads going while a large backlog is pruned, and let
autovacuum reclaim space as it goes. Run it daily (a Kubernetes CronJob, or cron):
`python -m persistence prune --older-than-days 730`. At very large volumes, monthly
partitions dropped whole are cheaper than deleting rows; see docs/persistence.md, "Retention".
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, func, select

from persistence.tables import predictions, rollup_marks, stale_rollup_hours


def prune(engine: Engine, older_than: timedelta, batch_rows: int = 10_000) -> int:
    """Delete rows created before now - `older_than`; the number deleted."""
    cut_off = datetime.now(UTC) - older_than
    deleted = 0
    while True:
        oldest = (
            select(predictions.c.id)
            .where(predictions.c.created_at < cut_off)
            .order_by(predictions.c.created_at)
            .limit(batch_rows)
        )
        with engine.begin() as connection:
            result = connection.execute(
                delete(predictions).where(predictions.c.id.in_(oldest.scalar_subquery()))
            )
        deleted += result.rowcount
        if result.rowcount < batch_rows:
            return deleted


def forget_stale_hours(engine: Engine) -> int:
    """Delete the records of stale hours (`stale_rollup_hours`) that every grouping has
    rolled up again; the number deleted. A grouping made later starts past them all. The
    newest record stays, so sequence numbers never go back (SQLite reuses a freed top one)."""
    s, m = stale_rollup_hours.c, rollup_marks.c
    newest = select(func.max(s.seq)).scalar_subquery()
    seen_by_all = select(func.coalesce(func.min(m.stale_seen), newest)).scalar_subquery()
    with engine.begin() as connection:
        forget = delete(stale_rollup_hours).where(s.seq <= seen_by_all, s.seq < newest)
        return connection.execute(forget).rowcount
