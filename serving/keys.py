"""Make an API key: `python -m serving.keys new NAME [--admin] [--rate REQUESTS_PER_S]`.

Prints the key once (hand it to the client; it is stored nowhere) and the entry to add to
`CLIENTINSIGHT_API_KEYS` (or `CLIENTINSIGHT_ADMIN_KEYS`), which holds only its SHA-256.
"""

from __future__ import annotations

import argparse
import secrets
import sys

from serving.access import hash_key, parse_keys

#: Keys start with this, so a leaked one is recognisable (secret scanners, log reviews).
PREFIX = "ci_"


def new_key() -> str:
    """A random key: 256 bits, URL-safe."""
    return PREFIX + secrets.token_urlsafe(32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.keys", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new", help="make a key and print its configuration entry")
    new.add_argument("name", help="who the key is for (shown in 403/429 answers, never the key)")
    new.add_argument("--admin", action="store_true", help="may also call the admin routes")
    new.add_argument("--rate", type=float, help="requests per second per API worker")
    args = parser.parse_args(argv)
    key = new_key()
    entry = f"{args.name}:{hash_key(key)}" + (f":{args.rate:g}" if args.rate else "")
    variable = "CLIENTINSIGHT_ADMIN_KEYS" if args.admin else "CLIENTINSIGHT_API_KEYS"
    parse_keys(entry, admin=args.admin, variable=variable)  # the entry must read back
    print(f"key (give it to {args.name}; it is stored nowhere):\n  {key}")
    print(f"entry for {variable} (comma-separated with the others):\n  {entry}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
