"""Persistence settings: `DATABASE_URL` (standard name) and the writer's batching knobs."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.paths import PROJECT_ROOT


class PersistenceSettings(BaseSettings):
    """Read from the environment once, on first use."""

    model_config = SettingsConfigDict(extra="ignore")

    #: SQLite under `.data/` when unset, so `make up` needs no database server.
    database_url: str = Field(
        default_factory=lambda: f"sqlite:///{PROJECT_ROOT / '.data' / 'clientinsight.db'}",
        validation_alias="DATABASE_URL",
    )
    #: Run `alembic upgrade head` when the API starts (one API worker: safe; see docs).
    auto_migrate: bool = Field(default=True, validation_alias="CLIENTINSIGHT_DB_AUTO_MIGRATE")
    writer_batch_rows: int = Field(
        default=1000, ge=1, validation_alias="CLIENTINSIGHT_WRITER_BATCH_ROWS"
    )
    writer_flush_interval_s: float = Field(
        default=0.25, gt=0, validation_alias="CLIENTINSIGHT_WRITER_FLUSH_INTERVAL_S"
    )
    #: How long the writer gathers rows after the first before it writes them (at most the
    #: flush interval): fewer, larger transactions under load; 0 writes each arrival at once.
    writer_linger_s: float = Field(
        default=0.05, ge=0, validation_alias="CLIENTINSIGHT_WRITER_LINGER_S"
    )
    #: Rows held in memory before new ones go straight to the journal.
    writer_max_queue_rows: int = Field(
        default=100_000, ge=1, validation_alias="CLIENTINSIGHT_WRITER_MAX_QUEUE_ROWS"
    )
    #: Where rows wait while the database is unreachable: on a volume that outlives the
    #: process (a PersistentVolume in Kubernetes), one subdirectory per API worker.
    journal_dir: Path = Field(
        default_factory=lambda: PROJECT_ROOT / ".data" / "journal",
        validation_alias="CLIENTINSIGHT_JOURNAL_DIR",
    )
    #: `python -m persistence prune` deletes predictions older than this by default.
    retention_days: int = Field(default=730, ge=1, validation_alias="CLIENTINSIGHT_RETENTION_DAYS")
    #: fsync every journal segment (and its directory) before counting it as spilled.
    journal_fsync: bool = Field(default=True, validation_alias="CLIENTINSIGHT_JOURNAL_FSYNC")


@lru_cache(maxsize=1)
def get_settings() -> PersistenceSettings:
    """The process-wide persistence settings."""
    return PersistenceSettings()
