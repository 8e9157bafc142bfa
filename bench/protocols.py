"""`make bench-protocols`: single-record churn over the JSON API, the Open Inference Protocol
over REST (binary tensors, as tritonclient sends them) and over gRPC, against one server, in
one run, at each client count.

The server is `bentoml serve service:ClientInsight` as shipped, persisting to a throwaway
PostgreSQL. Load comes from two generators:
- C generators: `wrk` for the two HTTP protocols, and `h2load` (Debian's nghttp2-client)
  for gRPC, sending the same gRPC frame over HTTP/2 on one connection per client. h2load sees
  HTTP statuses only (a gRPC error is an HTTP 200 with a status in its trailers), so its
  successes are checked against the rows the server stored with `protocol = 'oip-grpc'`;
- Python generators of the same cost for all three (aiohttp, and bounded `grpc.aio` ones),
  each in its own process, so every protocol is also compared under the same client. gRPC
  runs twice under them: unary ModelInfer calls, and ModelStreamInfer (Triton's streaming
  extension), where each client keeps one request outstanding on its one stream.
On 2 cores the generator shares the machine with the server: the C ones take far less of it.
Results go to bench/results/<timestamp>-protocols.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import parse_wrk, publish, server  # noqa: E402
from models import churn  # noqa: E402
from tests.support.postgres import free_port, throwaway_cluster  # noqa: E402
from tests.support.records import SNAKE  # noqa: E402


def _columns() -> dict[str, Any]:
    record = churn.Customer.model_validate(SNAKE).model_dump()
    return {name: value for name, value in record.items() if value is not None}


def oip_rest_body() -> tuple[bytes, int]:
    """The binary request tritonclient.http sends for one customer, and its JSON size."""
    import numpy as np
    import tritonclient.http as triton_http

    from serving.oip.tensors import datatype_of

    inputs = []
    for name, value in _columns().items():
        datatype = datatype_of(churn.Customer.model_fields[name].annotation)
        array = (
            np.array([str(value).encode()], dtype=object)
            if datatype == "BYTES"
            else np.array([value], dtype={"BOOL": bool, "INT64": np.int64}.get(datatype, float))
        )
        tensor = triton_http.InferInput(name, [1], datatype)
        tensor.set_data_from_numpy(array, binary_data=True)
        inputs.append(tensor)
    body, json_size = triton_http.InferenceServerClient.generate_request_body(inputs)
    return body, int(json_size or 0)


def grpc_request() -> Any:
    """The ModelInferRequest for one customer, raw contents as tritonclient.grpc sends them."""
    from serving.oip import open_inference_grpc_pb2 as pb
    from serving.oip.tensors import datatype_of, to_binary

    request = pb.ModelInferRequest(model_name="churn")
    for name, value in _columns().items():
        datatype = datatype_of(churn.Customer.model_fields[name].annotation)
        request.inputs.add(name=name, datatype=datatype, shape=[1])
        request.raw_input_contents.append(to_binary(datatype, [value]))
    return request


def _lua_string(data: bytes) -> str:
    return '"' + "".join(f"\\{b}" for b in data) + '"'


def wrk_run(
    url: str,
    path: str,
    clients: int,
    seconds: int,
    body: bytes,
    headers: dict[str, str],
    work: Path,
) -> dict[str, float]:
    script = work / f"wrk-{time.monotonic_ns()}.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body)}"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        ["wrk", f"-t{min(2, clients)}", f"-c{clients}", f"-d{seconds}s", "--latency",
         "--timeout", "10s", "-s", str(script), f"{url}{path}"],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout  # fmt: skip
    return parse_wrk(out)


def h2load_grpc(
    target: str, clients: int, seconds: int, work: Path, database_url: str
) -> dict[str, float]:
    """gRPC ModelInfer from `clients` HTTP/2 connections for `seconds` (h2load), its p50/p99
    from the per-request log; successes not stored as rows count as errors."""
    import psycopg

    message = grpc_request().SerializeToString()
    frame = work / "grpc-frame.bin"
    frame.write_bytes(b"\0" + len(message).to_bytes(4, "big") + message)
    log = work / f"h2load-{time.monotonic_ns()}.log"

    def stored() -> int:
        with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as db:
            query = "select count(*) from predictions where protocol = 'oip-grpc'"
            row = db.execute(query).fetchone()
        return int(row[0]) if row else 0

    before = stored()
    out = subprocess.run(
        ["h2load", f"-c{clients}", "-m1", f"-D{seconds}", "-d", str(frame),
         "-H", "content-type: application/grpc", "-H", "te: trailers",
         "--log-file", str(log),
         f"http://{target}/inference.GRPCInferenceService/ModelInfer"],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout  # fmt: skip
    (work / f"{log.stem}.txt").write_text(out)
    latencies = []
    bad = 0
    for line in log.read_text().splitlines():
        _, status, duration_us = line.split("\t")
        if status == "200":
            latencies.append(int(duration_us) / 1000)
        else:
            bad += 1
    time.sleep(2)  # the writer flushes every 0.25 s
    unstored = max(0, len(latencies) - (stored() - before))
    result = _summary(latencies, bad + unstored, float(seconds))
    result["ok_rps"] = (len(latencies) - unstored) / seconds
    return result


def _summary(latencies: list[float], errors: int, seconds: float) -> dict[str, float]:
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    return {
        "ok_rps": len(latencies) / seconds,
        "p50_ms": at(0.50),
        "p99_ms": at(0.99),
        "non_2xx": errors,
    }


async def _grpc_load(
    target: str, clients: int, seconds: float, stream: bool = False
) -> dict[str, float]:
    """Unary ModelInfer calls, or (`stream`) one ModelStreamInfer stream per client, each
    client sending its next request when its last is answered: bounded either way."""
    import grpc.aio

    from serving.oip import open_inference_grpc_pb2_grpc as pb_grpc

    request = grpc_request()
    # A channel (one HTTP/2 connection) per client, as each tritonclient.grpc client has, and
    # as wrk and h2load open one connection per client.
    channels = [grpc.aio.insecure_channel(target) for _ in range(clients)]
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def calls(stub: Any) -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            started = time.perf_counter()
            try:
                await stub.ModelInfer(request, timeout=10)
                latencies.append((time.perf_counter() - started) * 1000)
            except grpc.aio.AioRpcError:
                errors += 1

    async def streams(stub: Any) -> None:
        nonlocal errors
        call = stub.ModelStreamInfer(timeout=seconds + 60)
        while time.perf_counter() < stop:
            started = time.perf_counter()
            await call.write(request)
            reply = await call.read()
            if reply is grpc.aio.EOF or reply.error_message:
                errors += 1
            else:
                latencies.append((time.perf_counter() - started) * 1000)
        await call.done_writing()

    client = streams if stream else calls
    began = time.perf_counter()
    await asyncio.gather(*(client(pb_grpc.GRPCInferenceServiceStub(c)) for c in channels))
    elapsed = time.perf_counter() - began
    for channel in channels:
        await channel.close()
    return _summary(latencies, errors, elapsed)


async def _http_load(
    url: str, clients: int, seconds: float, body: bytes, headers: dict[str, str]
) -> dict[str, float]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def caller() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        ok = response.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - started) * 1000)
                else:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(clients)))
        elapsed = time.perf_counter() - began
    return _summary(latencies, errors, elapsed)


def requests_for(url: str) -> dict[str, tuple[str, bytes, dict[str, str]]]:
    """Path, body and headers of one single-record churn request per HTTP protocol."""
    body, json_size = oip_rest_body()
    return {
        "json": (
            "/churn/predict",
            json.dumps({"customers": [SNAKE]}).encode(),
            {"Content-Type": "application/json"},
        ),
        "oip-rest": (
            "/v2/models/churn/infer",
            body,
            {
                "Inference-Header-Content-Length": str(json_size),
                "Content-Type": "application/octet-stream",
            },
        ),
    }


def python_load(protocol: str, url: str, grpc_target: str, clients: int, seconds: int) -> Any:
    """The Python generator, in a process of its own (it must not share the driver's GIL)."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.protocols", "--load", protocol, url, grpc_target,
         str(clients), str(seconds)],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=seconds + 120,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def _load_main(protocol: str, url: str, grpc_target: str, clients: int, seconds: int) -> int:
    if protocol == "grpc":
        result = asyncio.run(_grpc_load(grpc_target, clients, seconds))
    elif protocol == "grpc-stream":
        result = asyncio.run(_grpc_load(grpc_target, clients, seconds, stream=True))
    else:
        path, body, headers = requests_for(url)[protocol]
        result = asyncio.run(_http_load(f"{url}{path}", clients, seconds, body, headers))
    print(json.dumps(result))
    return 0


class Meter:
    """Where one scenario's work went: CPU microseconds per answered request in the API worker
    and in the churn model worker (all their threads) and in the load generator (the child
    processes the run waited for: wrk, h2load or a Python generator), and rows per
    model-service call (the batcher's counters in `GET /models`). The same work costs more when
    batches are small; a generator that takes a core leaves the server less of the machine."""

    def __init__(self, url: str, process: Any) -> None:
        import psutil

        self.url = url
        self.workers: dict[str, Any] = {}
        for child in psutil.Process(process.pid).children(recursive=True):
            command = child.cmdline()
            if "--service-name" in command:
                name = command[command.index("--service-name") + 1]
                if name in ("clientinsight", "churn_model"):
                    self.workers.setdefault(name, []).append(child)

    def _cpu(self) -> dict[str, float]:
        return {
            name: sum(sum(p.cpu_times()[:2]) for p in processes)
            for name, processes in self.workers.items()
        }

    def _batching(self) -> tuple[int, int]:
        import httpx

        for model in httpx.get(f"{self.url}/models", timeout=30).json()["models"]:
            if model["name"] == "churn" and model["alias"] == "champion":
                return model["batching"]["calls"], model["batching"]["rows"]
        return 0, 0

    @staticmethod
    def _generator_cpu() -> float:
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        return used.ru_utime + used.ru_stime

    def start(self) -> None:
        self.cpu, self.batching = self._cpu(), self._batching()
        self.generator = self._generator_cpu()

    def measure(self, result: dict[str, float], seconds: int) -> dict[str, float]:
        """`result` with the scenario's api_us, model_us and rows_per_call added."""
        cpu, (calls, rows) = self._cpu(), self._batching()
        answered = max(result["ok_rps"] * seconds, 1.0)
        return {
            **result,
            "api_us": (cpu["clientinsight"] - self.cpu["clientinsight"]) / answered * 1e6,
            "model_us": (cpu["churn_model"] - self.cpu["churn_model"]) / answered * 1e6,
            "rows_per_call": (rows - self.batching[1]) / max(calls - self.batching[0], 1),
            "generator_us": (self._generator_cpu() - self.generator) / answered * 1e6,
        }


RATIOS = (
    ("gRPC (h2load) / JSON (wrk)", ("grpc", "h2load"), ("json", "wrk")),
    ("gRPC unary / JSON (python)", ("grpc", "python"), ("json", "python")),
    ("gRPC stream / JSON (python)", ("grpc-stream", "python"), ("json", "python")),
    ("OIP REST / JSON (wrk)", ("oip-rest", "wrk"), ("json", "wrk")),
    ("OIP REST / JSON (python)", ("oip-rest", "python"), ("json", "python")),
)


def ratios(
    runs: dict[tuple[str, str, int], list[dict[str, float]]], n: int
) -> list[tuple[str, list[float]]]:
    """Each ratio of `RATIOS` at `n` clients, one per round: the two scenarios of a round ran
    within a minute of each other, so the machine's drift between rounds cancels out."""
    found = []
    for label, (p, g), (bp, bg) in RATIOS:
        top, bottom = runs.get((p, g, n), []), runs.get((bp, bg, n), [])
        found.append((
            label,
            [a["ok_rps"] / b["ok_rps"] for a, b in zip(top, bottom, strict=False) if b["ok_rps"]],
        ))  # fmt: skip
    return found


def render(runs: dict[tuple[str, str, int], list[dict[str, float]]], args: Any) -> str:
    results = {
        key: {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        for key, rounds in runs.items()
    }
    clients = sorted({n for (_, _, n) in results})
    lines = [
        f"# Protocols, single-record churn ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"One ClientInsight server ({args.workers} API worker(s), PostgreSQL persistence), "
        f"{args.seconds} s per scenario, {os.cpu_count()} cores; rounds: {args.rounds} "
        "(median shown; a round runs its scenarios forward, the next backward).",
        "",
        "CPU per request: the API worker's, the churn model worker's (every thread) and the "
        "load generator's CPU time over the requests answered; rows per call: the churn "
        "batcher's.",
        "",
        "| protocol | generator | clients | ok req/s | p50 ms | p99 ms | errors | "
        "API worker CPU us/req | model worker CPU us/req | generator CPU us/req | "
        "rows per model call |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (protocol, generator, n), r in sorted(results.items(), key=lambda kv: (kv[0][2], kv[0])):
        lines.append(
            f"| {protocol} | {generator} | {n} | {r['ok_rps']:,.0f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['non_2xx']:.0f} | {r['api_us']:,.0f} | "
            f"{r['model_us']:,.0f} | {r['generator_us']:,.0f} | {r['rows_per_call']:.1f} |"
        )
    lines += [
        "",
        "Ratios of ok req/s, each taken within a round and then the median over rounds "
        "(lowest to highest round in brackets):",
        "",
        "| clients | " + " | ".join(label for label, _, _ in RATIOS) + " |",
        "|---|" + "---|" * len(RATIOS),
    ]
    for n in clients:
        cells = []
        for _, per_round in ratios(runs, n):
            if not per_round:
                cells.append("-")
                continue
            cell = f"{statistics.median(per_round):.2f}x"
            if len(per_round) > 1:
                cell += f" [{min(per_round):.2f}-{max(per_round):.2f}]"
            cells.append(cell)
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.protocols", description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument(
        "--rounds", type=int, default=4, help="scenarios repeated, forward then backward"
    )
    parser.add_argument("--workers", type=int, default=1, help="CLIENTINSIGHT_API_WORKERS")
    parser.add_argument(
        "--python-load",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also drive every protocol with the Python generators",
    )
    parser.add_argument("--load", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load:
        protocol, url, target, clients, seconds = args.load
        return _load_main(protocol, url, target, int(clients), int(seconds))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    work = Path(tempfile.mkdtemp(prefix="clientinsight-protocols-"))
    runs: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    grpc_port = free_port()
    with throwaway_cluster() as cluster:
        env = {
            "DATABASE_URL": cluster.create_database(),
            "CLIENTINSIGHT_GRPC_PORT": str(grpc_port),
            "CLIENTINSIGHT_API_WORKERS": str(args.workers),
        }
        with server("clientinsight", env, work) as (url, _, process):
            target = f"127.0.0.1:{grpc_port}"
            requests = requests_for(url)
            meter = Meter(url, process)

            def run(key: tuple[str, str, int], scenario: Any) -> None:
                print(f"{key[0]} {key[1]} {key[2]} clients ...", flush=True)
                meter.start()
                runs.setdefault(key, []).append(meter.measure(scenario(), args.seconds))

            for round_ in range(args.rounds):
                for n in [int(c) for c in args.clients.split(",")]:
                    # JSON, the baseline, between the two it is compared with (each ratio is
                    # of neighbours), the C generators then the Python ones.
                    scenarios: list[tuple[tuple[str, str, int], Any]] = []
                    for protocol in ("oip-rest", "json"):
                        path, body, headers = requests[protocol]
                        scenarios.append((
                            (protocol, "wrk", n),
                            partial(wrk_run, url, path, n, args.seconds, body, headers, work),
                        ))  # fmt: skip
                    scenarios.append((
                        ("grpc", "h2load", n),
                        partial(h2load_grpc, target, n, args.seconds, work, env["DATABASE_URL"]),
                    ))  # fmt: skip
                    python = ("oip-rest", "grpc-stream", "json", "grpc")
                    for protocol in python if args.python_load else ():
                        scenarios.append((
                            (protocol, "python", n),
                            partial(python_load, protocol, url, target, n, args.seconds),
                        ))  # fmt: skip
                    # Forward, then backward: a machine that slows down (or speeds up) during a
                    # round favours neither side of a ratio over two rounds (so an even number).
                    for key, scenario in scenarios if round_ % 2 == 0 else scenarios[::-1]:
                        run(key, scenario)
    publish(render(runs, args), "protocols")
    return 0


if __name__ == "__main__":
    sys.exit(main())
