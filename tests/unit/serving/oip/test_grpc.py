"""The gRPC servers' port claim. Run in a child process: `serving.oip.grpc` registers the
`inference.*` protobuf messages, which clash with tritonclient.grpc's in the test process."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from common.paths import PROJECT_ROOT


def _claim(port: int) -> subprocess.CompletedProcess[str]:
    code = f"from serving.oip.grpc import claim; claim('127.0.0.1', {port})"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60
    )


@pytest.mark.parametrize("shares", [False, True], ids=["plain", "reuseport"])
def test_a_port_someone_listens_on_is_refused_in_one_line(shares: bool) -> None:
    """Also when the other listener shares with SO_REUSEPORT, as our own servers do: a second
    ClientInsight on the port would otherwise take half the connections."""
    with socket.socket() as listener:
        if shares:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        refused = _claim(port)
    assert refused.returncode != 0
    last = refused.stderr.strip().splitlines()[-1]
    assert f"cannot listen on 127.0.0.1:{port}" in last and "CLIENTINSIGHT_GRPC_PORT" in last


def test_a_free_port_is_claimed_even_with_connections_in_time_wait() -> None:
    """A restarted server's port: its last connections wait in TIME_WAIT (gRPC, like every
    server, listens with SO_REUSEADDR, which is what lets a new listener bind beside them)."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            accepted, _ = listener.accept()
            accepted.close()  # the server side closes first: its end waits in TIME_WAIT
    assert _claim(port).returncode == 0


@pytest.mark.parametrize(
    "check",
    [
        "a_repeated_layout_reads_as_the_first",
        "a_bad_value_in_a_known_layout_is_the_same_400",
        "layouts_differ_by_shape_and_names_and_stay_bounded",
    ],
)
def test_the_layout_cache(check: str) -> None:
    """A layout a client repeats is read once; its values are checked on every call, with the
    messages of the uncached path (tests/unit/serving/oip/grpc_layouts.py)."""
    code = f"from tests.unit.serving.oip.grpc_layouts import {check}; {check}()"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "check",
    [
        "a_stream_answers_at_most_its_bound_at_once",
        "an_unexpected_failure_is_answered_and_the_stream_goes_on",
        "a_cancelled_stream_cancels_the_work_it_started",
    ],
)
def test_streams(check: str) -> None:
    """ModelStreamInfer against a stand-in data plane (tests/unit/serving/oip/grpc_streams.py)."""
    code = f"from tests.unit.serving.oip.grpc_streams import {check}; {check}()"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
