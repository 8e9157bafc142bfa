"""`python -m persistence upgrade|downgrade REV|current|prune`: the schema and the retention of
the `predictions` table at DATABASE_URL.

`prune` deletes rows; a cut-off shorter than the configured retention (rows the policy says to
keep) needs `--yes`. Every refusal is one line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import NoReturn

from alembic import command
from sqlalchemy.exc import SQLAlchemyError

from persistence import migrate, retention
from persistence.db import make_engine
from persistence.settings import get_settings

#: The longest cut-off `prune` takes: a hundred years (beyond, the date arithmetic overflows).
MAX_DAYS = 36_500
#: Most rows deleted per transaction.
MAX_BATCH_ROWS = 1_000_000


class _Parser(argparse.ArgumentParser):
    """Refusals as one line on stderr and exit status 2 (argparse adds a usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _bounded(what: str, low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(
                f"{what} {text!r} must be a whole number from {low} to {high}"
            )
        return int(text)

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m persistence")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upgrade", help="migrate to a revision (default: head)")
    up.add_argument("revision", nargs="?", default="head")
    down = sub.add_parser("downgrade", help="migrate down to a revision (e.g. base)")
    down.add_argument("revision")
    sub.add_parser("current", help="show the database's revision")
    prune = sub.add_parser("prune", help="delete predictions older than the retention period")
    retention_days = get_settings().retention_days
    prune.add_argument(
        "--older-than-days",
        type=_bounded("--older-than-days", 1, MAX_DAYS),
        default=retention_days,
        help=f"default: CLIENTINSIGHT_RETENTION_DAYS ({retention_days})",
    )
    prune.add_argument(
        "--batch-rows", type=_bounded("--batch-rows", 1, MAX_BATCH_ROWS), default=10_000
    )
    prune.add_argument(
        "--yes",
        action="store_true",
        help="confirm a cut-off shorter than the retention period (deletes rows it keeps)",
    )
    args = parser.parse_args(argv)
    if args.command == "prune" and args.older_than_days < retention_days and not args.yes:
        parser.error(
            f"--older-than-days {args.older_than_days} would delete rows newer than the "
            f"retention period of {retention_days} days (CLIENTINSIGHT_RETENTION_DAYS); "
            "add --yes to delete them"
        )
    url = get_settings().database_url
    try:
        if args.command == "upgrade":
            migrate.upgrade(url, args.revision)
        elif args.command == "downgrade":
            migrate.downgrade(url, args.revision)
        elif args.command == "prune":
            engine = make_engine(url)
            try:
                days = args.older_than_days
                deleted = retention.prune(engine, timedelta(days=days), args.batch_rows)
                forgotten = retention.forget_stale_hours(engine)
            finally:
                engine.dispose()
            print(f"deleted {deleted} predictions older than {days} days")
            if forgotten:
                print(f"forgot {forgotten} stale-hour records every rollup has caught up with")
        else:
            command.current(migrate.alembic_config(url), verbose=True)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        print(f"error: the database at DATABASE_URL refused: {reason}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
