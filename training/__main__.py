"""`python -m training ...`: the data scientist's entry point.

python -m training FAMILY [--data PATH.csv] [--seed S] ...  train a catalog family's models, log,
                                                           register (first -> @champion)
python -m training all                                     train every family with its defaults
python -m training ensure                                  train only models with no champion yet
python -m training list                                    versions, aliases, key metrics
python -m training promote MODEL --version N [--alias A] [--force]
                                                           move @champion (gated) or another alias
python -m training drop-alias MODEL ALIAS                  e.g. stop shadowing @challenger
python -m training shadow-report DECISION [--hours H]      champion vs challenger on live traffic
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from typing import Any, NoReturn

from rich.console import Console
from rich.table import Table

from models import catalog
from models.family import Family


def _training(family: Family) -> Any:
    """The family's training module (`add_arguments`, `run`), imported when it is used."""
    assert family.training is not None  # Family.check
    return importlib.import_module(family.training.module)


def _train(family: Family, args: argparse.Namespace) -> int:
    return int(_training(family).run(args))


def _train_with_defaults(family: Family) -> int:
    defaults = _Parser(prog=f"python -m training {family.name}")
    _training(family).add_arguments(defaults)
    return _train(family, defaults.parse_args([]))


def _ensure() -> int:
    from models.registry import has_alias
    from models.settings import get_settings

    alias = get_settings().serving_alias
    for family in catalog.current():
        missing = [name for name in family.models if not has_alias(name, alias)]
        for name in family.models:
            if name not in missing:
                print(f"{name}@{alias} exists: not retraining (use `make train` to retrain)")
        if missing:
            names = ", ".join(f"{name}@{alias}" for name in missing)
            print(f"{names} missing: training `{family.name}` now")
            _train_with_defaults(family)
    return 0


def _all() -> int:
    for family in catalog.current():
        _train_with_defaults(family)
    return 0


def _list() -> int:
    from training.promotion import versions_table

    table = Table(title="registered models")
    for column in ("model", "version", "aliases", "created (UTC)", "key metrics"):
        table.add_column(column)
    for row in versions_table():
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in row["metrics"].items())
        table.add_row(
            row["name"],
            row["version"],
            " ".join(f"@{a}" for a in row["aliases"]),
            f"{row['created']:%Y-%m-%d %H:%M}",
            metrics,
        )
    Console().print(table)
    return 0


def _promote(name: str, version: str, alias: str | None, force: bool) -> int:
    from training.promotion import PromotionRefused, promote

    try:
        done = promote(name, version, alias=alias, force=force)
    except PromotionRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 3
    figures = ""
    if done.delta is not None:
        figures = (
            f": {done.metric} {done.candidate_score:.4f} vs {done.previous_score:.4f} "
            f"(delta {done.delta:+.4f}, {done.evaluation_rows} shared hold-out rows)"
        )
    forced = " (forced)" if done.forced and done.worse else ""
    print(
        f"{name}@{done.alias} -> version {version}{forced}, was {done.previous or 'unset'}{figures}"
    )
    if done.cleared_challenger:
        print(f"{name}@challenger removed: version {version} now serves (shadowing stops)")
    return 0


def _drop_alias(name: str, alias: str) -> int:
    from training.promotion import drop_alias

    try:
        version = drop_alias(name, alias)
    except ValueError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    print(f"{name}@{alias} removed (was version {version})" if version else f"no {name}@{alias}")
    return 0


def _shadow_report(decision: str, hours: float | None) -> int:
    from training.shadow import report

    console = Console()
    tables = report(decision, hours)
    if not tables:
        console.print(
            f"no challenger rows for {decision} yet: set one with "
            "`python -m training promote MODEL --version N --alias challenger` and send traffic"
        )
        return 1
    for table in tables:
        console.print(table)
    return 0


class _Parser(argparse.ArgumentParser):
    """Refusals as one line on stderr and exit status 2 (argparse adds a usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _version(text: str) -> str:
    """A registered model version: MLflow numbers them 1, 2, 3, ..."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(
            f"version {text!r} is not a version number (1, 2, ...; `list` shows them)"
        )
    return str(int(text))


#: MLflow's rules for an alias: letters, digits, '_' and '-'; `latest` and `v<number>` are
#: taken by version references.
_ALIAS = re.compile(r"[A-Za-z0-9_-]{1,255}")


def _alias(text: str) -> str:
    if _ALIAS.fullmatch(text) is None or text.lower() == "latest" or re.fullmatch(r"v\d+", text):
        raise argparse.ArgumentTypeError(
            f"alias {text!r}: use letters, digits, '_' and '-' (not 'latest' or 'v<number>'), "
            "e.g. champion or challenger"
        )
    return text


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    parser = _Parser(
        prog="python -m training",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    served = [name for family in catalog.current() for name in family.models]
    for family in catalog.current():
        assert family.training is not None
        sub = commands.add_parser(
            family.name,
            help=f"{family.training.help} (data: {family.training.default_data})",
        )
        _training(family).add_arguments(sub)
        sub.set_defaults(family=family)
    commands.add_parser("ensure", help="train each served model that has no champion yet")
    commands.add_parser("all", help="train every family in the catalog with its defaults")
    commands.add_parser("list", help="every version of the served models, aliases and metrics")
    promote = commands.add_parser(
        "promote", help="point @champion at a version if it is at least as good (or --alias)"
    )
    promote.add_argument("model", choices=served)
    promote.add_argument("--version", required=True, type=_version)
    promote.add_argument(
        "--alias", type=_alias, help="default: the serving alias (champion), which is gated"
    )
    promote.add_argument("--force", action="store_true", help="promote even if worse (recorded)")
    drop = commands.add_parser("drop-alias", help="remove an alias (not the serving one)")
    drop.add_argument("model", choices=served)
    drop.add_argument("alias", type=_alias)
    shadow = commands.add_parser(
        "shadow-report", help="agreement and score deltas, champion vs challenger, live traffic"
    )
    shadow.add_argument(
        "decision", choices=[family.recording.decision for family in catalog.current()]
    )
    shadow.add_argument("--hours", type=float, help="only the last H hours (default: all)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING)
    from mlflow.exceptions import MlflowException

    from training.data import DataError

    try:
        if getattr(args, "family", None) is not None:
            return _train(args.family, args)
        if args.command == "all":
            return _all()
        if args.command == "list":
            return _list()
        if args.command == "promote":
            return _promote(args.model, args.version, args.alias, args.force)
        if args.command == "drop-alias":
            return _drop_alias(args.model, args.alias)
        if args.command == "shadow-report":
            return _shadow_report(args.decision, args.hours)
        return _ensure()
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MlflowException as exc:  # a version or model the registry does not have, ...
        message = str(exc.message).strip().splitlines()[0]
        print(f"error: {message} (python -m training list shows what exists)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
