"""Indexes for history pages (`/graphql`): keyset order `(created_at, id)`.

A history page is "the newest rows before this cursor", ordered by `(created_at, id)`; with
these indexes PostgreSQL and SQLite read exactly one page's entries from the index, whatever
the page's depth and the table's size:
- `(created_at, id)` for pages over every decision;
- `(model_name, created_at, id)` for one family's (or model's) pages.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_predictions_created_id", "predictions", ["created_at", "id"])
    op.create_index(
        "ix_predictions_model_created_id", "predictions", ["model_name", "created_at", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_predictions_model_created_id", table_name="predictions")
    op.drop_index("ix_predictions_created_id", table_name="predictions")
