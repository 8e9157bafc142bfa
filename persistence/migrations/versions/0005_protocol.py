"""Which protocol a prediction came by: our HTTP API, or the Open Inference Protocol over REST
or gRPC.

Existing rows all came by the HTTP API (JSON or file routes), so `protocol` defaults to "http".

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(
            sa.Column("protocol", sa.String(16), nullable=False, server_default="http")
        )


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("protocol")
