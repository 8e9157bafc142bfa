"""Hours whose rollups went stale: rows written after their hour was rolled up.

A row is normally written within a second of its prediction, long before its hour is rolled
up (`ROLLUP_LAG`). Rows replayed from the journal after an outage, or held in a backed-up
queue, can land in an hour already rolled up, and the aggregates (`/graphql`) would miss them.
The writer records each such hour in `stale_rollup_hours`, in the transaction that writes the
rows; each (scope, grouping) remembers in `rollup_marks.stale_seen` the last record it has
rolled up again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stale_rollup_hours",
        # INTEGER on SQLite, where only it numbers rows by itself (no rollups there anyway).
        sa.Column(
            "seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), sa.Identity(), nullable=False
        ),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_stale_rollup_hours"),
    )
    with op.batch_alter_table("rollup_marks") as batch:
        batch.add_column(sa.Column("stale_seen", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("rollup_marks") as batch:
        batch.drop_column("stale_seen")
    op.drop_table("stale_rollup_hours")
