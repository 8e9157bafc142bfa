"""Challenger shadow rows: who produced a row (`role`) and which champion row it shadows.

Existing rows are all champion answers, so `role` defaults to "champion". Challenger rows are
a sample of traffic; a partial index over them keeps the shadow report from reading the rest.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_CHALLENGER_ONLY = sa.text("role = 'challenger'")


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(
            sa.Column("role", sa.String(16), nullable=False, server_default="champion")
        )
        batch.add_column(sa.Column("shadow_of", sa.Uuid(), nullable=True))
    op.create_index(
        "ix_predictions_challenger",
        "predictions",
        ["model_name", "created_at"],
        postgresql_where=_CHALLENGER_ONLY,
        sqlite_where=_CHALLENGER_ONLY,
    )


def downgrade() -> None:
    op.drop_index("ix_predictions_challenger", table_name="predictions")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("shadow_of")
        batch.drop_column("role")
