"""Run Alembic migrations programmatically (no alembic.ini to keep in sync)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from common.locks import exclusive
from persistence.db import normalise_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate to `revision`, one migrator at a time: API workers start together, and two
    creating the version table at once failed one worker's start. PostgreSQL serialises them
    with an advisory lock (migrations/env.py, across machines too); a SQLite file, which only
    this machine's processes can reach, with a lock file beside it."""
    parsed = make_url(normalise_url(url))
    file = parsed.database if parsed.get_backend_name() == "sqlite" else None
    with exclusive(Path(file)) if file and file != ":memory:" else nullcontext():
        command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)
