"""`python -m persistence upgrade|downgrade REV|current`: schema migrations for DATABASE_URL."""

from __future__ import annotations

import argparse
import sys

from alembic import command

from persistence import migrate
from persistence.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m persistence")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upgrade", help="migrate to a revision (default: head)")
    up.add_argument("revision", nargs="?", default="head")
    down = sub.add_parser("downgrade", help="migrate down to a revision (e.g. base)")
    down.add_argument("revision")
    sub.add_parser("current", help="show the database's revision")
    args = parser.parse_args(argv)
    url = get_settings().database_url
    if args.command == "upgrade":
        migrate.upgrade(url, args.revision)
    elif args.command == "downgrade":
        migrate.downgrade(url, args.revision)
    else:
        command.current(migrate.alembic_config(url), verbose=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
