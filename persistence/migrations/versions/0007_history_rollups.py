"""Hourly rollups for the history's aggregates (`/graphql`), so a 7-day aggregate reads a few
hundred rollup rows, not every prediction of the week, and stays flat as the table grows.

`prediction_rollups` holds partial sums per hour, model version and grouping value;
`rollup_marks` says up to when each grouping is rolled up. Both are filled at query time by
`persistence/history.py` on PostgreSQL (the hours since the mark, one cheap statement); on
SQLite (the demo) they stay empty and aggregates read `predictions` directly.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prediction_rollups",
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("grouping", sa.String(200), nullable=False),
        sa.Column("value", sa.String(128), nullable=True),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("score_sum", sa.Float, nullable=True),
        sa.Column("score_rows", sa.BigInteger, nullable=False),
        sa.Column("yes_rows", sa.BigInteger, nullable=False),
        sa.Column("latency_sum", sa.Float, nullable=False),
        sa.Column("latency_max", sa.Float, nullable=False),
    )
    op.create_index(
        "ix_prediction_rollups_grouping_hour",
        "prediction_rollups",
        ["model_name", "grouping", "hour"],
    )
    op.create_table(
        "rollup_marks",
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("grouping", sa.String(200), nullable=False),
        sa.Column("rolled_until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "grouping", name="pk_rollup_marks"),
    )


def downgrade() -> None:
    op.drop_table("rollup_marks")
    op.drop_index("ix_prediction_rollups_grouping_hour", table_name="prediction_rollups")
    op.drop_table("prediction_rollups")
