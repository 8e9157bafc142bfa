"""SQLAlchemy 2.0 table definitions: one generic `predictions` table for every model.

Generic on purpose: a new model adds rows, not columns. `score` and `label` hold each model's
headline output (churn: probability and risk band) so dashboards need no JSON parsing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

#: JSONB on PostgreSQL (indexable, compact), JSON text on SQLite.
JSONDocument: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Prediction(Base):
    """One model output for one input row."""

    __tablename__ = "predictions"

    id: Mapped[object] = mapped_column(Uuid, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    model_name: Mapped[str] = mapped_column(String(64))
    #: The version of the model that made the decision (for a combined decision: the primary one).
    model_version: Mapped[str] = mapped_column(String(32))
    #: Every model version behind this row, e.g. {"credit-segment": "3", "credit-approval": "5"}.
    model_versions: Mapped[Any] = mapped_column(JSONDocument, nullable=True)
    source: Mapped[str] = mapped_column(String(16))
    entity_id: Mapped[str | None] = mapped_column(String(128))
    score: Mapped[float | None] = mapped_column(Float)
    label: Mapped[str | None] = mapped_column(String(32))
    inputs: Mapped[object] = mapped_column(JSONDocument)
    outputs: Mapped[object] = mapped_column(JSONDocument)
    latency_ms: Mapped[float] = mapped_column(Float)
    #: "champion" for the answer the caller got; "challenger" for a shadow score of the same
    #: input by the `@challenger` version, which nobody was answered with.
    role: Mapped[str] = mapped_column(String(16), server_default="champion")
    #: For a challenger row: the id of the champion row it shadows (same request, same input).
    shadow_of: Mapped[object | None] = mapped_column(Uuid, nullable=True)
    #: How the request came: "http" (the JSON and file routes), "oip-rest" or "oip-grpc"
    #: (the Open Inference Protocol).
    protocol: Mapped[str] = mapped_column(String(16), server_default="http")

    __table_args__ = (
        Index("ix_predictions_model_created", "model_name", "created_at"),
        Index("ix_predictions_entity_created", "entity_id", "created_at"),
        Index("ix_predictions_created", "created_at"),
        # History pages: keyset order (created_at, id), overall and per decision (0006).
        Index("ix_predictions_created_id", "created_at", "id"),
        Index("ix_predictions_model_created_id", "model_name", "created_at", "id"),
        # The shadow report reads only challenger rows: a partial index keeps it small.
        Index(
            "ix_predictions_challenger",
            "model_name",
            "created_at",
            postgresql_where=text("role = 'challenger'"),
            sqlite_where=text("role = 'challenger'"),
        ),
    )


predictions: Table = Prediction.__table__  # type: ignore[assignment]


#: Hourly partial sums of champion rows per (model name, version, grouping value), so that an
#: aggregate over days reads a few hundred rollup rows instead of every prediction
#: (PostgreSQL; `persistence/history.py` keeps them fresh at query time, migration 0007).
#: `grouping` names what was grouped: `document.key|band edges|rate key`, or `volume`.
prediction_rollups = Table(
    "prediction_rollups",
    Base.metadata,
    Column("hour", DateTime(timezone=True), nullable=False),
    Column("model_name", String(64), nullable=False),
    Column("model_version", String(32), nullable=False),
    Column("grouping", String(200), nullable=False),
    Column("value", String(128), nullable=True),
    Column("rows", BigInteger, nullable=False),
    Column("score_sum", Float, nullable=True),
    Column("score_rows", BigInteger, nullable=False),
    Column("yes_rows", BigInteger, nullable=False),
    Column("latency_sum", Float, nullable=False),
    Column("latency_max", Float, nullable=False),
    Index("ix_prediction_rollups_grouping_hour", "model_name", "grouping", "hour"),
)

#: Up to when each (scope, grouping) is rolled up: hours before `rolled_until` are in
#: `prediction_rollups`; later ones are read from `predictions`. Scope: a model name, or `*`.
#: `stale_seen`: the last `stale_rollup_hours` record this grouping has rolled up again.
rollup_marks = Table(
    "rollup_marks",
    Base.metadata,
    Column("scope", String(64), primary_key=True),
    Column("grouping", String(200), primary_key=True),
    Column("rolled_until", DateTime(timezone=True), nullable=False),
    Column("stale_seen", BigInteger, nullable=False, server_default="0"),
)

#: Hours that received rows after they may have been rolled up (a journal replayed after an
#: outage): each grouping rolls them up again at its next refresh (migration 0008).
stale_rollup_hours = Table(
    "stale_rollup_hours",
    Base.metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), Identity(), primary_key=True),
    Column("hour", DateTime(timezone=True), nullable=False),
)
