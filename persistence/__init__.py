"""Where every prediction is kept: tables, engine factory, buffered writer, Alembic migrations."""
