"""`python -m persistence upgrade|downgrade REV|current|prune`: the schema and the retention of
the `predictions` table at DATABASE_URL."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta

from alembic import command

from persistence import migrate, retention
from persistence.db import make_engine
from persistence.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m persistence")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upgrade", help="migrate to a revision (default: head)")
    up.add_argument("revision", nargs="?", default="head")
    down = sub.add_parser("downgrade", help="migrate down to a revision (e.g. base)")
    down.add_argument("revision")
    sub.add_parser("current", help="show the database's revision")
    prune = sub.add_parser("prune", help="delete predictions older than the retention period")
    prune.add_argument(
        "--older-than-days",
        type=int,
        default=get_settings().retention_days,
        help="default: CLIENTINSIGHT_RETENTION_DAYS (730)",
    )
    prune.add_argument("--batch-rows", type=int, default=10_000)
    args = parser.parse_args(argv)
    url = get_settings().database_url
    if args.command == "upgrade":
        migrate.upgrade(url, args.revision)
    elif args.command == "downgrade":
        migrate.downgrade(url, args.revision)
    elif args.command == "prune":
        engine = make_engine(url)
        deleted = retention.prune(engine, timedelta(days=args.older_than_days), args.batch_rows)
        engine.dispose()
        print(f"deleted {deleted} predictions older than {args.older_than_days} days")
    else:
        command.current(migrate.alembic_config(url), verbose=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
