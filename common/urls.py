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


def redacted(url: str) -> str:
    """`url` with any password replaced by `***`: what logs and error messages may show."""
    if "@" not in url or "://" not in url:
        return url
    try:
        parsed = make_url(url)
    except Exception:  # not a database URL (an http(s) tracking server, a path): by hand
        scheme, rest = url.split("://", 1)
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
    return parsed.render_as_string(hide_password=True)
