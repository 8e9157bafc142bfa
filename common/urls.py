"""Database URLs as operators write them, made usable by the drivers this project ships."""

from __future__ import annotations

from sqlalchemy.engine import make_url


def psycopg_url(url: str) -> str:
    """`postgresql://` and `postgres://` (what operators and Secrets usually hold) use psycopg 3,
    which the project ships; SQLAlchemy's and MLflow's default would be psycopg2. Any other URL
    is returned unchanged."""
    if not url.startswith(("postgresql://", "postgres://")):
        return url  # also MLflow's file paths and http(s) servers, which are no database URLs
    parsed = make_url(url)
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
