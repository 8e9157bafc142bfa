"""Make an API key: `python -m serving.keys new NAME [--admin | --history] [--rate R]`.

Prints the key once (hand it to the client; it is stored nowhere) and the entry to add to
`CLIENTINSIGHT_API_KEYS` (or `CLIENTINSIGHT_ADMIN_KEYS`, `CLIENTINSIGHT_HISTORY_KEYS`), which
holds only its SHA-256. A
mistake (a name with a space or a colon, a rate that is not a positive number) is refused with
one line saying what is allowed.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from typing import NoReturn

from serving.access import check_name, check_rate, format_rate, hash_key, parse_keys

#: Keys start with this, so a leaked one is recognisable (secret scanners, log reviews).
PREFIX = "ci_"


def new_key() -> str:
    """A random key: 256 bits, URL-safe."""
    return PREFIX + secrets.token_urlsafe(32)


class _Parser(argparse.ArgumentParser):
    """Refusals as one line on stderr and exit status 2 (argparse adds a usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _name(text: str) -> str:
    try:
        return check_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"rate {text!r} is not a number of requests per second (e.g. 50 or 0.5)"
        ) from None
    try:
        return check_rate(rate)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _burst(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"burst {text!r} is not a whole number of at least 1")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m serving.keys", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new", help="make a key and print its configuration entry")
    new.add_argument(
        "name",
        type=_name,
        help="who the key is for: 1-64 letters, digits, _ . @ - (shown in 403/429 answers, "
        "never the key)",
    )
    scope = new.add_mutually_exclusive_group()
    scope.add_argument("--admin", action="store_true", help="may also call the admin routes")
    scope.add_argument(
        "--history",
        action="store_true",
        help="may also read prediction history (/graphql), which holds customers' inputs",
    )
    new.add_argument("--rate", type=_rate, help="requests per second per API worker")
    new.add_argument(
        "--burst", type=_burst, help="requests it may send at once (default: 2 s of its rate)"
    )
    args = parser.parse_args(argv)
    if args.burst is not None and args.rate is None:
        parser.error("--burst needs --rate (a burst belongs to a key's own rate)")
    key = new_key()
    entry = f"{args.name}:{hash_key(key)}"
    if args.rate is not None:
        entry += f":{format_rate(args.rate)}"
    if args.burst is not None:
        entry += f":{args.burst}"
    variable = (
        "CLIENTINSIGHT_ADMIN_KEYS"
        if args.admin
        else "CLIENTINSIGHT_HISTORY_KEYS"
        if args.history
        else "CLIENTINSIGHT_API_KEYS"
    )
    # the entry must read back
    parse_keys(entry, admin=args.admin, history=args.history, variable=variable)
    print(f"key (give it to {args.name}; it is stored nowhere):\n  {key}")
    print(f"entry for {variable} (comma-separated with the others):\n  {entry}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
