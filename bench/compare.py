"""`make bench-compare AGAINST=<git ref>`: this checkout against an earlier commit, side by side.

Both are served as shipped (`bentoml serve service:ClientInsight`, persistence to a throwaway
PostgreSQL database each), from the same virtualenv and the same MLflow store, in alternating
rounds (new, old, new, old, ...) so that the machine's drift falls on both alike. Each round
sends single-record `/churn/predict` load with `wrk` at every client count. The earlier commit
is exported with `git archive` into a temporary directory (nothing in the checkout changes).
The report gives each side's median over the rounds and the ratio new / old.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tarfile
import tempfile
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

from bench.run import ROOT, SNAKE, publish, server, wrk
from models.settings import get_settings
from tests.support.postgres import throwaway_cluster


def short(ref: str) -> str:
    """`ref`'s short commit id."""
    done = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=ROOT, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def export(ref: str, into: Path) -> str:
    """The tree of `ref` in `into`; its short commit id."""
    commit = short(ref)
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True, capture_output=True)
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return commit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("--against", required=True, help="the git ref to compare with")
    parser.add_argument("--seconds", type=int, default=10, help="per load scenario")
    parser.add_argument("--clients", default="16,64")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",")]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    work = Path(tempfile.mkdtemp(prefix="clientinsight-compare-"))
    old_tree = work / "old"
    old_tree.mkdir()
    old = export(args.against, old_tree)
    new = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    body = work / "body.json"
    body.write_text(json.dumps({"customers": [SNAKE]}))
    settings = get_settings()
    # Both sides read this checkout's registry (the old tree has no `.mlflow` of its own).
    store = {
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "CLIENTINSIGHT_MLFLOW_ARTIFACT_ROOT": str(settings.mlflow_artifact_root),
    }
    sides = {f"new ({new})": ROOT, f"old ({old})": old_tree}
    figures: dict[tuple[str, int], list[dict[str, float]]] = {}
    with throwaway_cluster() as cluster:
        for round_ in range(1, args.rounds + 1):
            for label, tree in sides.items():
                env = {**store, "DATABASE_URL": cluster.create_database()}
                with server(f"clientinsight@{label}", env, work, cwd=tree) as (url, _, _):
                    for n in clients:
                        print(f"round {round_}: {label}, {n} clients ...", flush=True)
                        figures.setdefault((label, n), []).append(wrk(url, n, args.seconds, body))
    publish(render(figures, sides, clients, args), "compare")
    return 0


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def render(
    figures: dict[tuple[str, int], list[dict[str, float]]],
    sides: dict[str, Any],
    clients: list[int],
    args: argparse.Namespace,
) -> str:
    new, old = list(sides)
    lines = [
        f"# Comparison {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {new} vs {old}",
        "",
        f"Single-record /churn/predict, {args.rounds} alternating rounds of {args.seconds} s "
        f"per client count, {os.cpu_count()} CPUs; medians over the rounds.",
        "",
        "| clients | side | ok req/s (each round) | median ok req/s | median p99 ms | non-2xx |",
        "|---|---|---|---|---|---|",
    ]
    for n in clients:
        for side in (new, old):
            runs = figures[(side, n)]
            each = ", ".join(f"{r['ok_rps']:.0f}" for r in runs)
            lines.append(
                f"| {n} | {side} | {each} | {_median(runs, 'ok_rps'):.0f} | "
                f"{_median(runs, 'p99_ms'):.1f} | {sum(r['non_2xx'] for r in runs):.0f} |"
            )
    lines += ["", "| clients | new / old, ok req/s |", "|---|---|"]
    for n in clients:
        ratio = _median(figures[(new, n)], "ok_rps") / _median(figures[(old, n)], "ok_rps")
        lines.append(f"| {n} | {ratio:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
