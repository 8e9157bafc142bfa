"""Alembic environment: the URL comes from the caller (persistence.migrate) or DATABASE_URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from persistence.db import make_engine, normalise_url
from persistence.settings import get_settings
from persistence.tables import Base

config = context.config
target_metadata = Base.metadata
#: The advisory lock every ClientInsight migrator of a PostgreSQL database takes.
MIGRATION_LOCK = 0x434C49  # "CLI"


def _url() -> str:
    return normalise_url(config.get_main_option("sqlalchemy.url") or get_settings().database_url)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Held to the end of the migration's transaction: a second migrator waits here, then
            # finds the schema at head (persistence.migrate.upgrade).
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        engine = make_engine(_url())
        with engine.connect() as conn:
            _run(conn)
        engine.dispose()
