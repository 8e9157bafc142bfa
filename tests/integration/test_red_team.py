"""The service as an attacker meets it: every class of the hardening issue, probed against a
real `bentoml serve` with API keys on.

Each probe asserts its status, that the answer names the problem, and (when the module's server
stops, `tests/support/server.py`) that nothing in the server's log is a 5xx, a traceback or an
ERROR line. Starvation and memory are measured the way the issue describes them: a concurrent
single-record request's latency during a hostile upload, the API worker's resident memory
during a decompression bomb.
"""

from __future__ import annotations

import http.server
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.settings import ModelSettings
from serving.access import hash_key
from serving.keys import new_key
from tests.support.models import mlflow_env
from tests.support.predictions import wait_for_rows
from tests.support.records import APPLICANT, IBM, SNAKE
from tests.support.server import Server, serve

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USER, SLOW, ADMIN = new_key(), new_key(), new_key()
KEY = {"X-API-Key": USER}
#: Small enough to probe in a test, large enough for a real file.
MAX_BODY = 8 * 2**20
#: A customer id no log line may ever carry (logs hold no customer data).
SECRET = "SECRET-CUSTOMER-7f3a"
FILE_ROUTES = ("/churn/predict_file", "/credit/evaluate_file")


@pytest.fixture(scope="module")
def server(
    mlflow_store: ModelSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("red-team")
    env = {
        **mlflow_env(mlflow_store),
        "DATABASE_URL": f"sqlite:///{root / 'predictions.db'}",
        "CLIENTINSIGHT_ENV": "production",
        "CLIENTINSIGHT_API_KEYS": f"crm:{hash_key(USER)},slow:{hash_key(SLOW)}:2",
        "CLIENTINSIGHT_ADMIN_KEYS": f"ops:{hash_key(ADMIN)}",
        "CLIENTINSIGHT_MAX_BODY_BYTES": str(MAX_BODY),
        "CLIENTINSIGHT_RATE_LIMIT_PER_S": "1000",
    }
    with serve(env, root / "server.log", admin_key=ADMIN) as running:
        yield running


def _post(server: Server, path: str, **kwargs: Any) -> httpx.Response:
    headers = {**KEY, **kwargs.pop("headers", {})}
    return httpx.post(f"{server.url}{path}", headers=headers, timeout=60, **kwargs)


def _refused(response: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    """The answer is `status` with our error object, whose message names the problem."""
    assert response.status_code == status, response.text[:1000]
    body = response.json()
    assert isinstance(body, dict) and isinstance(body["error"], str), body
    for word in words:
        assert word in body["error"], (word, body["error"])
    return body


def _telco(rows: int = 20) -> pd.DataFrame:
    frame = pd.DataFrame([IBM] * rows)
    frame["customerID"] = [f"c-{i}" for i in range(rows)]
    return frame


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


# --- 1. A client's mistakes are 4xx that name the problem ----------------------------------


@pytest.mark.parametrize("path", FILE_ROUTES)
def test_multipart_without_a_boundary_is_400(server: Server, path: str) -> None:
    response = _post(server, path, content=b"abc", headers={"Content-Type": "multipart/form-data"})
    _refused(response, 400, "boundary")


@pytest.mark.parametrize("path", FILE_ROUTES)
def test_a_boundary_over_a_body_that_is_not_multipart_is_400(server: Server, path: str) -> None:
    response = _post(
        server,
        path,
        content=b"this is not multipart",
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    _refused(response, 400, "not valid multipart/form-data")


@pytest.mark.parametrize("path", FILE_ROUTES)
def test_a_json_body_on_a_file_route_is_415(server: Server, path: str) -> None:
    _refused(_post(server, path, json={"file": "x"}), 415, "multipart/form-data")


def test_a_latin1_byte_after_64_kib_of_utf8_is_415(server: Server) -> None:
    data = _csv(_telco(600))
    assert len(data) > 65_536
    data += data.splitlines()[1].replace(b"Female", b"F\xe9male") + b"\n"
    response = _post(server, "/churn/predict_file", files={"file": ("x.csv", data)})
    body = _refused(response, 415, "not a CSV (UTF-8 text)")
    assert "UTF-8" in body["detail"][0]["problem"]


def test_a_character_across_byte_65536_is_read_whole(server: Server) -> None:
    frame = _telco(600)
    data = _csv(frame)
    # Give the row holding byte 65,535 a customer id whose 2-byte character starts there.
    row = data[:65_535].count(b"\n") - 1
    start = data.index(frame["customerID"][row].encode(), data.rindex(b"\n", 0, 65_535))
    pad = 65_535 - start
    frame.loc[row, "customerID"] = "x" * pad + "é"
    data = _csv(frame)
    assert data[65_535:65_537] == "é".encode()
    response = _post(server, "/churn/predict_file", files={"file": ("x.csv", data)})
    assert response.status_code == 200, response.text[:500]
    scored = pd.read_csv(io.BytesIO(response.content), dtype=str, keep_default_na=False)
    assert scored["customerID"][row] == "x" * pad + "é"


@pytest.mark.parametrize(
    ("column", "values"),
    [("tenure", [[1, 2]] * 3), ("customerID", [{"a": 1}] * 3), ("MonthlyCharges", [[1.5]] * 3)],
)
def test_parquet_with_nested_values_in_a_contract_column_is_400(
    server: Server, column: str, values: list[Any]
) -> None:
    frame = _telco(3)
    frame[column] = pd.Series(values, dtype=object)
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    response = _post(server, "/churn/predict_file", files={"file": ("x.parquet", sink.getvalue())})
    body = _refused(response, 400, f"column '{column}' holds nested values")
    assert body["detail"] == [{"field": column, "problem": "nested values (lists or structs)"}]


@pytest.mark.parametrize("length", [250, 1000])
def test_a_long_file_name_is_never_used(server: Server, length: int) -> None:
    name = "a" * length + ".csv"
    response = _post(server, "/churn/predict_file", files={"file": (name, _csv(_telco(3)))})
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-disposition"] == 'attachment; filename="churn_scores.csv"'


def test_file_as_a_text_field_is_400(server: Server) -> None:
    response = _post(server, "/churn/predict_file", files={"file": (None, "customerID\nx\n")})
    _refused(response, 400, "sent as a text field")


def test_a_chunked_body_over_the_limit_is_413(server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_BODY // 2**20 + 2):
            yield b"x" * 2**20

    response = _post(
        server,
        "/churn/predict_file",
        content=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    body = _refused(response, 413, f"over the limit of {MAX_BODY} bytes")
    assert body["limit_bytes"] == MAX_BODY


def test_a_client_that_disconnects_mid_body_costs_the_service_nothing(server: Server) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    for path in ("/churn/predict_file", "/churn/predict"):
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {USER}\r\n"
                "Content-Type: multipart/form-data; boundary=xyz\r\n"
                "Content-Length: 1000000\r\n\r\n".encode()
                + b"--xyz\r\n" * 100
            )
            time.sleep(0.3)
    time.sleep(0.5)
    assert _post(server, "/churn/predict", json={"customers": [SNAKE]}).status_code == 200
    assert "client disconnected before sending the whole body" in server.log()


# --- 2. Uploads do not starve the service -------------------------------------------------


def _junk_columns() -> bytes:
    header = ",".join(f"c{i}" for i in range(100_000))
    return f"{header}\n{','.join('1' * 100_000)}\n".encode()


def test_a_file_of_100000_columns_is_413_at_once(server: Server) -> None:
    data = _junk_columns()
    assert 880_000 < len(data) < 900_000
    started = time.monotonic()
    response = _post(server, "/churn/predict_file", files={"file": ("junk.csv", data)})
    _refused(response, 413, "100000 columns is over the limit of 1000")
    assert time.monotonic() - started < 5


def test_a_json_body_over_its_limit_is_413_before_it_is_read(server: Server) -> None:
    body = json.dumps({"customers": [SNAKE] * 10_000}).encode()
    assert len(body) > 4 * 2**20
    _refused(_post(server, "/churn/predict", content=body), 413, "over the limit of 4194304")

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 2**20):
            yield body[start : start + 2**20]

    _refused(_post(server, "/churn/predict", content=chunks()), 413, "more than 4194304 bytes")


def test_too_many_records_are_413_before_they_are_validated(server: Server) -> None:
    response = _post(server, "/churn/predict", json={"customers": [{"x": 1}] * 1001})
    _refused(response, 413, "1001 items is over the limit of 1000")


def _hostile_uploads(server: Server) -> list[Callable[[], httpx.Response]]:
    """Uploads that cost the most to refuse: wide, huge with a bad last row, a bomb."""
    big = _telco(40_000)
    big.loc[len(big) - 1, "tenure"] = "-1"
    big_csv = _csv(big)
    assert len(big_csv) < MAX_BODY
    junk = _junk_columns()
    bomb = _bomb_parquet()
    return [
        lambda: _post(server, "/churn/predict_file", files={"file": ("big.csv", big_csv)}),
        lambda: _post(server, "/churn/predict_file", files={"file": ("junk.csv", junk)}),
        lambda: _post(server, "/credit/evaluate_file", files={"file": ("b.parquet", bomb)}),
        lambda: _post(server, "/churn/predict", json={"customers": [SNAKE] * 1001}),
    ]


def test_single_requests_are_answered_within_a_second_while_uploads_are_refused(
    server: Server,
) -> None:
    hostile = _hostile_uploads(server)
    stop = threading.Event()
    statuses: list[int] = []

    def attack(send: Callable[[], httpx.Response]) -> None:
        while not stop.is_set():
            statuses.append(send().status_code)

    attackers = [threading.Thread(target=attack, args=(send,)) for send in hostile]
    for attacker in attackers:
        attacker.start()
    latencies = []
    try:
        time.sleep(1)
        with httpx.Client(base_url=server.url, headers=KEY, timeout=30) as client:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                started = time.monotonic()
                response = client.post("/churn/predict", json={"customers": [SNAKE]})
                latencies.append(time.monotonic() - started)
                assert response.status_code == 200, response.text
                time.sleep(0.05)
    finally:
        stop.set()
        for attacker in attackers:
            attacker.join()
    assert statuses and set(statuses) <= {400, 413, 503}, set(statuses)
    assert len(latencies) > 20
    assert max(latencies) < 1.0, f"slowest single request {max(latencies):.2f} s"


# --- 3. Uploads do not bloat the service --------------------------------------------------


def _identical_rows(rows: int) -> pa.Table:
    return pa.table(
        {
            "tenure": np.ones(rows, dtype="int64"),
            "MonthlyCharges": np.full(rows, 29.85),
            "TotalCharges": np.full(rows, 29.85),
        }
    )


def _bomb_parquet(rows: int = 10_000_000) -> bytes:
    """Ten million identical rows: under a megabyte as a file, gigabytes once scored."""
    sink = io.BytesIO()
    pq.write_table(_identical_rows(rows), sink, compression="zstd", row_group_size=1_000_000)
    return sink.getvalue()


def _bomb_arrow(rows: int = 10_000_000) -> bytes:
    """The same rows as one compressed Arrow IPC batch."""
    table = _identical_rows(rows)
    sink = io.BytesIO()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_file(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue()


@pytest.mark.parametrize(("name", "make"), [("x.parquet", _bomb_parquet), ("x.arrow", _bomb_arrow)])
def test_a_decompression_bomb_is_413_and_costs_under_200_mb(
    server: Server, name: str, make: Callable[[], bytes]
) -> None:
    data = make()
    assert len(data) < 4 * 2**20
    worker = server.worker("clientinsight")
    before = worker.memory_info().rss
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, worker.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        response = _post(server, "/churn/predict_file", files={"file": (name, data)})
    finally:
        done.set()
        sampler.join()
    _refused(response, 413, "10000000 rows is over the limit")
    assert peak - before < 200 * 2**20, f"resident memory rose {(peak - before) / 2**20:.0f} MB"


# --- 4. The service fetches nothing a caller names -----------------------------------------


class _Listener(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        _Listener.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"customerID\nx\n")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("path", FILE_ROUTES)
def test_a_url_sent_as_the_file_is_never_fetched(server: Server, path: str) -> None:
    listener = http.server.ThreadingHTTPServer(("0.0.0.0", 0), _Listener)
    thread = threading.Thread(target=listener.serve_forever, daemon=True)
    thread.start()
    port = listener.server_address[1]
    names = {"localhost", socket.gethostname()}
    try:
        for name in names:
            url = f"http://{name}:{port}/customers.csv"
            with httpx.Client() as probe:  # the listener is reachable under that name
                assert probe.get(url).status_code == 200
            _Listener.hits.clear()
            response = _post(server, path, files={"file": (None, url)})
            body = _refused(response, 400, "text field", "URLs are not fetched")
            assert isinstance(body, dict)
            response = _post(server, path, data={"file": url})
            _refused(response, 415, "multipart/form-data")
            time.sleep(0.5)
            assert _Listener.hits == [], f"the service fetched {_Listener.hits} from {name}"
    finally:
        listener.shutdown()


# --- 5. Rate limits hold to each key's rate ------------------------------------------------


def test_a_slow_key_gets_its_first_429_where_its_rate_says(server: Server) -> None:
    time.sleep(2.5)  # a full bucket: two seconds of 2 requests/s
    statuses = []
    with httpx.Client(base_url=server.url, headers={"X-API-Key": SLOW}, timeout=30) as client:
        for _ in range(12):
            statuses.append(client.post("/churn/predict", json={"customers": [SNAKE]}).status_code)
    first = statuses.index(429)
    assert 4 <= first <= 5, statuses  # a burst of 4, and at most one token refilled meanwhile
    assert statuses.count(200) <= 6


# --- 6. Metrics are this server's own ------------------------------------------------------


def _rows_written(server: Server) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    values = [
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("clientinsight_rows_written_total")
    ]
    return sum(values)


def test_a_second_server_on_this_machine_leaves_our_metrics_alone(
    server: Server, mlflow_store: ModelSettings, tmp_path: Path
) -> None:
    response = _post(server, "/churn/predict", json={"customers": [SNAKE] * 5})
    assert response.status_code == 200
    assert wait_for_rows(server.database_url, 5, [response.headers["x-request-id"]]) == 5
    deadline = time.monotonic() + 10
    while _rows_written(server) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    before = _rows_written(server)
    assert before >= 5
    env = {**mlflow_env(mlflow_store), "DATABASE_URL": f"sqlite:///{tmp_path / 'other.db'}"}
    with serve(env, tmp_path / "other.log") as other:
        assert httpx.get(f"{other.url}/readyz").status_code == 200
        assert _rows_written(server) >= before


# --- 7. Inputs are strict where sloppiness changes a decision ------------------------------


@pytest.mark.parametrize(
    ("change", "location", "words"),
    [
        ({"monthly_charges": 1e308}, "monthly_charges", "less than or equal to 1000"),
        ({"total_charges": 1e308}, "total_charges", "less than or equal to 600000"),
        ({"tenure": True}, "tenure", "not true or false"),
    ],
)
def test_implausible_or_boolean_numbers_are_400(
    server: Server, change: dict[str, Any], location: str, words: str
) -> None:
    response = _post(server, "/churn/predict", json={"customers": [{**SNAKE, **change}]})
    body = _refused(response, 400)
    assert [d["loc"] for d in body["detail"]] == [["customers", 0, location]]
    assert words in body["detail"][0]["msg"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (json.dumps({"customers": [SNAKE]}).replace('"tenure": 1', '"tenure": NaN'), "NaN"),
        (
            json.dumps({"customers": [SNAKE]}).replace('"tenure": 1', '"tenure": 1, "tenure": 50'),
            "the key 'tenure' appears twice",
        ),
    ],
)
def test_nan_tokens_and_duplicate_keys_are_400(server: Server, body: str, words: str) -> None:
    _refused(_post(server, "/churn/predict", content=body.encode()), 400, words)


def test_a_duplicate_csv_column_is_400_naming_it(server: Server) -> None:
    header, *rows = _csv(_telco(3)).decode().splitlines()
    data = "\n".join([f"{header},tenure", *(f"{row},40" for row in rows)]).encode()
    response = _post(server, "/churn/predict_file", files={"file": ("x.csv", data)})
    body = _refused(response, 400, "column names appear more than once: 'tenure'")
    assert body["detail"][0]["field"] == "tenure"


def test_two_api_keys_in_one_request_are_400_whatever_their_order(server: Server) -> None:
    for headers in (
        [("X-API-Key", "ci_wrong"), ("X-API-Key", USER)],
        [("X-API-Key", USER), ("X-API-Key", "ci_wrong")],
        [("Authorization", "Bearer ci_wrong"), ("X-API-Key", USER)],
    ):
        response = httpx.post(
            f"{server.url}/churn/predict",
            json={"customers": [SNAKE]},
            headers=httpx.Headers(headers),
        )
        _refused(response, 400, "send one API key")


# --- 9. Logs an operator can read ----------------------------------------------------------


def test_a_refusal_is_one_info_line_without_the_values_sent(server: Server) -> None:
    before = len(server.log().splitlines())
    response = _post(
        server,
        "/churn/predict",
        json={"customers": [{**SNAKE, "customer_id": SECRET, "tenure": -7}]},
    )
    _refused(response, 400)
    time.sleep(0.5)
    lines = server.log().splitlines()[before:]
    ours = [line for line in lines if "400 POST /churn/predict" in line and "(scheme=" not in line]
    assert len(ours) == 1 and "[INFO]" in ours[0], lines
    assert ours[0].endswith("invalid_input (customers.0.tenure)")
    assert SECRET not in server.log()


def test_the_log_says_authentication_is_on_and_how_many_keys(server: Server) -> None:
    log = server.log()
    assert "authentication is ON: 2 API keys, 0 history keys and 1 admin keys" in log
    assert USER not in log and SLOW not in log and ADMIN not in log


# --- 10. Honest defaults and documents -----------------------------------------------------


def test_it_listens_on_loopback_unless_told_otherwise(server: Server) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    listening = [
        c.laddr.ip
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    ]
    assert listening and set(listening) == {"127.0.0.1"}, listening


def test_the_api_document_is_ours_and_declares_how_to_send_a_key(server: Server) -> None:
    spec = httpx.get(f"{server.url}/docs.json").json()
    assert spec["info"]["title"] == "ClientInsight" and spec["info"]["version"] != "None"
    assert "BentoML" not in json.dumps(spec["info"])
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert spec["paths"]["/churn/predict"]["post"]["security"]


def test_the_segment_model_shows_its_metrics_and_no_threshold(server: Server) -> None:
    models = httpx.get(f"{server.url}/models", headers={"X-API-Key": ADMIN}).json()["models"]
    [segment] = [m for m in models if m["name"] == "credit-segment"]
    assert segment["decision_threshold"] is None
    assert {"silhouette", "stability_ari"} <= set(segment["metrics"])


# --- Generated probes ----------------------------------------------------------------------

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@given(field=st.sampled_from(sorted(SNAKE)), value=_JSON)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_any_json_value_in_any_field_is_answered_or_refused_never_a_5xx(
    server: Server, field: str, value: Any
) -> None:
    response = _post(server, "/churn/predict", json={"customers": [{**SNAKE, field: value}]})
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        _refused(response, 400)


_PREFIXES = [b"", b"PAR1", b"ARROW1\x00\x00", b"\xff\xff\xff\xff", b"customerID,tenure\n"]


@given(prefix=st.sampled_from(_PREFIXES), tail=st.binary(max_size=600))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_any_bytes_as_a_file_are_refused_with_a_4xx(
    server: Server, prefix: bytes, tail: bytes
) -> None:
    data = prefix + tail + (b"PAR1" if prefix == b"PAR1" else b"")
    response = _post(server, "/credit/evaluate_file", files={"file": ("x.bin", data)})
    assert 400 <= response.status_code < 500, response.text
    _refused(response, response.status_code)


def test_a_credit_applicant_with_a_boolean_count_is_400(server: Server) -> None:
    response = _post(
        server, "/credit/evaluate", json={"applicants": [{**APPLICANT, "reports": True}]}
    )
    body = _refused(response, 400)
    assert body["detail"][0]["loc"] == ["applicants", 0, "reports"]
