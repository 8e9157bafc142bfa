"""Indexes for the history queries and for retention.

- `(entity_id, created_at)` replaces `(entity_id)`: "this customer's predictions, newest first"
  reads the index in order instead of sorting;
- `(created_at)` lets the retention job (`python -m persistence prune`) and time-range
  dashboards find old rows without scanning the table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_predictions_entity_created", "predictions", ["entity_id", "created_at"])
    op.drop_index("ix_predictions_entity", table_name="predictions")
    op.create_index("ix_predictions_created", "predictions", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_predictions_created", table_name="predictions")
    op.create_index("ix_predictions_entity", "predictions", ["entity_id"])
    op.drop_index("ix_predictions_entity_created", table_name="predictions")
