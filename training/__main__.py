"""`python -m training ...`: the data scientist's entry point.

python -m training churn [--data PATH.csv] [--sample N] [--seed S] [--C C]
                                                           train, log, register (first -> @champion)
python -m training ensure                                  train only models with no champion yet
python -m training list                                    versions, aliases, key metrics
python -m training promote MODEL --version N [--alias A] [--force]
                                                           move @champion (gated) or another alias
python -m training drop-alias MODEL ALIAS                  e.g. stop shadowing @challenger
python -m training shadow-report DECISION [--hours H]      champion vs challenger on live traffic
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.table import Table

#: Training entry for every served registered model: what `ensure` (and `make up`) checks.
SERVED_MODELS = {"churn": "churn", "credit-segment": "credit", "credit-approval": "credit"}


def _train_churn(data: Path | None, sample: int | None, seed: int, C: float = 0.3) -> int:
    from training import churn as churn_training
    from training.data import load_churn
    from training.progress import Steps
    from training.registration import summary

    steps = Steps.to_terminal()
    with steps.step("load and validate churn data"):
        dataset = load_churn(data, sample=sample, seed=seed)
    console = Console(stderr=True)
    console.print(f"data: {dataset.source} ({dataset.rows} rows, sha256 {dataset.sha256[:12]})")
    config = churn_training.TrainingConfig(seed=seed, C=C)
    result = churn_training.train(dataset, config, steps=steps)
    table = Table(title=f"churn run {result.run_id}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary(result).items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)
    return 0


def _train_credit(data: Path | None, seed: int) -> int:
    from training import credit as credit_training
    from training.data import load_credit
    from training.progress import Steps
    from training.registration import summary

    steps = Steps.to_terminal()
    with steps.step("load and validate credit data"):
        dataset = load_credit(data)
    console = Console(stderr=True)
    console.print(
        f"data: {dataset.source} ({dataset.rows} rows, {len(dataset.rejected)} rejected, "
        f"sha256 {dataset.sha256[:12]})"
    )
    for reason in dataset.rejected:
        console.print(f"  rejected {reason}")
    result = credit_training.train(dataset, credit_training.CreditConfig(seed=seed), steps=steps)
    k_table = Table(title="number of segments: evidence")
    for column in ("k", "silhouette", "stability (ARI)", "smallest segment"):
        k_table.add_column(column, justify="right")
    for row in result.k_selection:
        k_table.add_row(
            f"{row['k']:.0f}",
            f"{row['silhouette']:.3f}",
            f"{row['stability']:.3f}",
            f"{row['smallest_segment']:.0f}",
        )
    Console().print(k_table)
    for name, part in (("credit-segment", result.segment), ("credit-approval", result.approval)):
        table = Table(title=f"{name} run {part.run_id}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in summary(part).items():
            if key.startswith(("silhouette_k", "stability_ari_k")):
                continue
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
        Console().print(table)
    return 0


def _ensure() -> int:
    from models.registry import has_alias
    from models.settings import get_settings

    alias = get_settings().serving_alias
    todo: list[str] = []
    for name, command in SERVED_MODELS.items():
        if has_alias(name, alias):
            print(f"{name}@{alias} exists: not retraining (use `make train` to retrain)")
        elif command not in todo:
            print(f"{name}@{alias} missing: training `{command}` now")
            todo.append(command)
    for command in todo:
        if command == "churn":
            _train_churn(None, None, 42)
        else:
            _train_credit(None, 42)
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
    forced = " (forced)" if done.forced and (done.delta or 0) < 0 else ""
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
    train = commands.add_parser("churn", help="train, evaluate, log and register the churn model")
    train.add_argument("--data", type=Path, help="IBM Telco CSV in its original schema")
    train.add_argument("--sample", type=int, help="train on a stratified sample of N rows")
    train.add_argument("--seed", type=int, default=42)
    train.add_argument(
        "--C",
        type=float,
        default=0.3,
        help="inverse regularisation strength of the logistic regression (default 0.3)",
    )
    credit = commands.add_parser(
        "credit", help="train, evaluate, log and register credit-segment and credit-approval"
    )
    credit.add_argument("--data", type=Path, help="AER CreditCard CSV in its original schema")
    credit.add_argument("--seed", type=int, default=42)
    commands.add_parser("ensure", help="train each served model that has no champion yet")
    commands.add_parser("list", help="every version of the served models, aliases and metrics")
    promote = commands.add_parser(
        "promote", help="point @champion at a version if it is at least as good (or --alias)"
    )
    promote.add_argument("model", choices=list(SERVED_MODELS))
    promote.add_argument("--version", required=True, type=_version)
    promote.add_argument(
        "--alias", type=_alias, help="default: the serving alias (champion), which is gated"
    )
    promote.add_argument("--force", action="store_true", help="promote even if worse (recorded)")
    drop = commands.add_parser("drop-alias", help="remove an alias (not the serving one)")
    drop.add_argument("model", choices=list(SERVED_MODELS))
    drop.add_argument("alias", type=_alias)
    shadow = commands.add_parser(
        "shadow-report", help="agreement and score deltas, champion vs challenger, live traffic"
    )
    shadow.add_argument("decision", choices=["churn", "credit-evaluation"])
    shadow.add_argument("--hours", type=float, help="only the last H hours (default: all)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING)
    from mlflow.exceptions import MlflowException

    from training.data import DataError

    try:
        if args.command == "churn":
            return _train_churn(args.data, args.sample, args.seed, args.C)
        if args.command == "credit":
            return _train_credit(args.data, args.seed)
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
