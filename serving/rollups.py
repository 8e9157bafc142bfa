"""Roll up the history now: `python -m serving.rollups`.

On PostgreSQL each aggregate `/graphql` offers (every family's groupings, and the hourly
volume) reads whole hours from `prediction_rollups`, and the first aggregate of a grouping
rolls up every hour not rolled up yet (`persistence/history.py`). After a restore, a bulk
load or a migration that empties the rollups, that first query pays for all of history
(seconds to a minute at millions of rows). This command pays it ahead, for every grouping of
the catalog; run it after such a change, or from a CronJob. Rolling up is idempotent: a
grouping already fresh costs one index read. On SQLite (the demo) aggregates read
`predictions` directly and there is nothing to roll up.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from models.family import Family
from persistence import history
from persistence.db import make_engine
from persistence.settings import get_settings
from serving.graphql import grouping_query


def roll_up(connection: Connection, families: Sequence[Family], now: datetime) -> int:
    """Bring every grouping's rollups up to `now`; the number of groupings looked at."""
    since = now - timedelta(hours=1)  # the query itself is a formality: the refresh is the work
    done = 0
    for family in families:
        for by in family.groupings:
            history.groups(
                connection, **grouping_query(family, by), since=since, until=now, now=now
            )
            done += 1
    history.hourly(connection, since=since, until=now, now=now)
    return done + 1


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m serving.rollups", description=__doc__).parse_args(argv)
    from models.catalog import FAMILIES

    engine = make_engine(get_settings().database_url)
    try:
        if engine.dialect.name != "postgresql":
            print(
                "the history is on SQLite: aggregates read predictions directly, nothing to roll up"
            )
            return 0
        started = time.monotonic()
        with engine.connect() as connection:
            done = roll_up(connection, FAMILIES, datetime.now(UTC))
        took = time.monotonic() - started
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        print(f"error: the database at DATABASE_URL refused: {reason}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    print(f"rolled up {done} groupings (the hourly volume among them) in {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
