"""A real `bentoml serve service:ClientInsight` process on a free port.

Its log is read when it stops: a 5xx answer, a traceback or an ERROR line fails the test that
started it, unless the test injects faults itself (a killed worker, a stopped database).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from tests.support.postgres import free_port

ROOT = Path(__file__).resolve().parents[2]
#: What a healthy server never logs: an answer of 500 or more, a traceback, an ERROR line.
FAULTS = re.compile(r"status=5\d\d|Traceback \(most recent call last\)|\[ERROR\]")


@dataclass
class Server:
    url: str
    database_url: str
    log_path: Path
    process: subprocess.Popen[bytes]
    #: host:port of its gRPC (Open Inference Protocol) server.
    grpc: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def faults(self) -> list[str]:
        """The log's lines that show a server fault (`FAULTS`)."""
        return [line for line in self.log().splitlines() if FAULTS.search(line)]

    def worker(self, service_name: str) -> psutil.Process:
        """The worker process of one service (`clientinsight`, `churn_model`, ...)."""
        for child in psutil.Process(self.process.pid).children(recursive=True):
            if f"--service-name {service_name}" in " ".join(child.cmdline()):
                return child
        raise AssertionError(f"no {service_name} worker process found")


def server_env(env: dict[str, str], directory: Path) -> dict[str, str]:
    """The environment of a test server: `env` over ours, and a BentoML home of its own (its
    Prometheus files, which `bentoml serve` wipes at start, are then no other server's)."""
    home = Path(tempfile.mkdtemp(prefix="bentoml-home-", dir=directory))
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "BENTOML_DO_NOT_TRACK": "True",
        "BENTOML_HOME": str(home),
        **env,
    }


def _bentoml() -> str:
    return str(Path(sys.executable).with_name("bentoml"))


@contextmanager
def serve(
    env: dict[str, str],
    log_path: Path,
    timeout: float = 90,
    admin_key: str | None = None,
    faults_expected: bool = False,
) -> Iterator[Server]:
    """Start the service with `env` added; wait until the model answers; SIGTERM on exit, then
    fail if the log shows a fault (`FAULTS`) and the test did not say it causes some.

    `admin_key`: for a service that requires keys (readiness is read from `/models`).
    """
    port = free_port()
    grpc_port = env.get("CLIENTINSIGHT_GRPC_PORT") or str(free_port())
    full_env = server_env({"CLIENTINSIGHT_GRPC_PORT": grpc_port, **env}, log_path.parent)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [_bentoml(), "serve", "service:ClientInsight", "--port", str(port)],
            cwd=ROOT,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(
        f"http://127.0.0.1:{port}",
        env.get("DATABASE_URL", ""),
        log_path,
        process,
        f"127.0.0.1:{grpc_port}",
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"bentoml serve exited early:\n{server.log()[-5000:]}")
            try:
                ready = httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200
                headers = {"X-API-Key": admin_key} if admin_key else {}
                models = httpx.get(f"{server.url}/models", headers=headers, timeout=5).json()
                models = models["models"]
                if ready and all("version" in m for m in models):
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"service not ready in {timeout}s:\n{server.log()[-5000:]}")
            time.sleep(0.5)
        yield server
    finally:
        stop(process)
    found = server.faults()
    if found and not faults_expected:
        shown = "\n".join(found[:20])
        raise AssertionError(f"the server logged {len(found)} fault lines ({log_path}):\n{shown}")


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM the whole process group (graceful shutdown flushes the writer), then SIGKILL."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
