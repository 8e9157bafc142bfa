"""The Open Inference Protocol with clients nobody here wrote: `tritonclient.http` (binary
data on and off) and `tritonclient.grpc`, unchanged, against a real server, for every model
the catalog serves. Each output must equal the JSON API's answer for the same rows."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import psutil
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.utils import InferenceServerException

from models import catalog
from models.settings import ModelSettings
from tests.support import oip
from tests.support.models import mlflow_env
from tests.support.server import ROOT, Server, serve

pytestmark = [pytest.mark.integration]

#: Every model the protocol serves: each family's decision, and each model of a family that
#: decides with several.
MODELS = [
    name
    for family in catalog.FAMILIES
    for name in dict.fromkeys([family.recording.decision, *family.views])
]


def _host(server: Server) -> str:
    return server.url.removeprefix("http://")


def _json_answers(server: Server, model: str) -> tuple[list[dict[str, Any]], list[dict]]:
    family = oip.family_of(model)
    rows = oip.ROWS[family.name]
    answer = httpx.post(
        f"{server.url}{family.route}", json={family.records_field: rows}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    answers = answer.json()
    if model != family.recording.decision:
        answers = oip.view_answers(family, model, rows, answers)
    return rows, answers


def _compare(got: dict[str, list[Any]], answers: list[dict[str, Any]]) -> None:
    names = list(answers[0])
    want = oip.expected(answers, names)
    for name in names:
        assert got[name] == want[name], name


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("model", MODELS)
def test_tritonclient_http_gets_the_json_apis_answers(
    sqlite_server: Server, model: str, binary: bool
) -> None:
    client = triton_http.InferenceServerClient(_host(sqlite_server))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(model)
    metadata = client.get_model_metadata(model)
    rows, answers = _json_answers(sqlite_server, model)
    columns = oip.typed_columns(oip.family_of(model), rows)
    outputs = [
        triton_http.InferRequestedOutput(o["name"], binary_data=binary) for o in metadata["outputs"]
    ]
    for _ in range(2):  # the second from the layout the first left (serving/oip/layouts.py)
        result = client.infer(
            model, oip.http_inputs(metadata, columns, binary), outputs=outputs, request_id="r-1"
        )
        response = result.get_response()
        assert response["model_name"] == model and response["id"] == "r-1"
        assert response["model_version"] == "1"
        _compare(oip.read(result, [o["name"] for o in metadata["outputs"]]), answers)


@pytest.mark.parametrize("model", MODELS)
def test_tritonclient_grpc_gets_the_json_apis_answers(sqlite_server: Server, model: str) -> None:
    client = triton_grpc.InferenceServerClient(sqlite_server.grpc)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(model)
    metadata = client.get_model_metadata(model)
    assert list(metadata.versions) == ["1"]
    rows, answers = _json_answers(sqlite_server, model)
    columns = oip.typed_columns(oip.family_of(model), rows)
    for _ in range(2):  # the second from the layout the first left
        result = client.infer(model, oip.grpc_inputs(metadata, columns))
        assert result.get_response().model_version == "1"
        _compare(oip.read(result, [o.name for o in metadata.outputs]), answers)


@pytest.mark.parametrize("model", MODELS)
def test_tritonclient_grpc_streams_get_the_json_apis_answers(
    sqlite_server: Server, model: str
) -> None:
    """Triton's streaming extension (ModelStreamInfer), as tritonclient.grpc streams: each
    request answered once, with its id, and the same outputs as the JSON API's."""
    client = triton_grpc.InferenceServerClient(sqlite_server.grpc)
    rows, answers = _json_answers(sqlite_server, model)
    columns = oip.typed_columns(oip.family_of(model), rows)
    names = [o.name for o in client.get_model_metadata(model).outputs]
    with oip.Stream(client) as stream:
        for request_id in ("s-1", "s-2", "s-3"):  # sent together: they batch together
            stream.send(model, columns, request_id)
        got = stream.take(3)
    assert [error for _, error in got] == [None] * 3
    assert sorted(result.get_response().id for result, _ in got) == ["s-1", "s-2", "s-3"]
    for result, _ in got:
        assert result.get_response().model_version == "1"
        _compare(oip.read(result, names), answers)


def test_a_refused_request_on_a_stream_does_not_end_it(sqlite_server: Server) -> None:
    """A stream's refusal is that request's answer (error_message, with its id); the requests
    after it are answered as usual."""
    client = triton_grpc.InferenceServerClient(sqlite_server.grpc)
    columns = oip.typed_columns(oip.family_of("churn"), oip.ROWS["churn"])
    bad = {**columns, "tenure": [1, -5, 3]}
    metadata = client.get_model_metadata("churn")
    with oip.Stream(client) as stream:
        stream.send("churn", bad, "bad")
        [(result, error)] = stream.take(1)
        assert result is None and "input 'tenure' element 1" in error.message()
        client.async_stream_infer("nope", oip.grpc_inputs(metadata, columns), request_id="lost")
        [(result, error)] = stream.take(1)
        assert result is None and "unknown model 'nope'" in error.message()
        stream.send("churn", columns, "good")
        [(result, error)] = stream.take(1)
    assert error is None and result.get_response().id == "good"
    assert len(result.as_numpy("churn_probability")) == 3


def test_metadata_lists_the_contracts_tensors(sqlite_server: Server) -> None:
    server = httpx.get(f"{sqlite_server.url}/v2").json()
    assert server["name"] == "clientinsight" and "binary_tensor_data" in server["extensions"]
    churn = httpx.get(f"{sqlite_server.url}/v2/models/churn").json()
    inputs = {t["name"]: t["datatype"] for t in churn["inputs"]}
    assert inputs["tenure"] == "INT64" and inputs["monthly_charges"] == "FP64"
    assert inputs["contract"] == "BYTES" and inputs["senior_citizen"] == "BOOL"
    assert all(t["shape"] == [-1] for t in churn["inputs"])
    outputs = {t["name"]: t["datatype"] for t in churn["outputs"]}
    assert outputs["churn_probability"] == "FP64" and outputs["churn"] == "BOOL"
    segment = httpx.get(f"{sqlite_server.url}/v2/models/credit-segment/versions/1").json()
    assert segment["versions"] == ["1"]
    assert {t["name"] for t in segment["outputs"]} >= {"applicant_id", "segment", "segment_name"}


def _oip_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert isinstance(message, str)
    for word in words:
        assert word in message


def _infer(server: Server, model: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=30, **kwargs)


def _body(**changes: Any) -> dict[str, Any]:
    """A JSON (no binary) churn request of the shared rows, with `changes` per input."""
    columns = oip.typed_columns(oip.family_of("churn"), oip.ROWS["churn"])
    metadata = {t.name: t.datatype for t in _specs("churn")}
    inputs = []
    for name, values in columns.items():
        values = changes.pop(name, values)
        if values is None:
            continue
        inputs.append(
            {"name": name, "datatype": metadata[name], "shape": [len(values)], "data": values}
        )
    return {"inputs": inputs, **changes}


def _specs(model: str) -> Any:
    from serving.oip.dataplane import inference_models

    return inference_models(catalog.FAMILIES)[model].inputs


def test_bad_tensors_get_the_protocols_errors(sqlite_server: Server) -> None:
    _oip_error(_infer(sqlite_server, "nope", _body()), 404, "unknown model 'nope'", "churn")
    _oip_error(
        httpx.post(f"{sqlite_server.url}/v2/models/churn/versions/99/infer", json=_body()),
        404,
        "version '99' is not loaded",
        "loaded versions: 1",
    )
    _oip_error(_infer(sqlite_server, "churn", _body(tenure=None)), 400, "input 'tenure' is missing")
    _oip_error(
        _infer(sqlite_server, "churn", _body(tenure=[1, -5, 3])),
        400,
        "input 'tenure' element 1",
        "greater than or equal to 0",
    )
    _oip_error(
        _infer(sqlite_server, "churn", _body(tenure=[1, 2])), 400, "input 'tenure'", "2 rows"
    )
    _oip_error(
        _infer(sqlite_server, "churn", _body(parameters={"content_type": "np"})),
        400,
        "content_type 'np'",
    )
    extra = _body()
    extra["inputs"].append(
        {"name": "shoe_size", "datatype": "INT64", "shape": [3], "data": [1, 2, 3]}
    )
    _oip_error(_infer(sqlite_server, "churn", extra), 400, "input 'shoe_size' is not an input")
    _oip_error(
        _infer(sqlite_server, "churn", _body(outputs=[{"name": "mood"}])), 400, "output 'mood'"
    )
    # A binary tensor whose size does not fit its shape.
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "tenure",
                    "datatype": "INT64",
                    "shape": [3],
                    "parameters": {"binary_data_size": 8},
                }
            ]
        }
    ).encode()
    short = httpx.post(
        f"{sqlite_server.url}/v2/models/churn/infer",
        content=header + np.array([1], dtype="<i8").tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    _oip_error(short, 400, "input 'tenure'", "8 bytes of INT64 data", "3 elements")
    # '²' is a digit to str.isdigit, not to int (it was a 500).
    superscript = httpx.post(
        f"{sqlite_server.url}/v2/models/churn/infer",
        content=header,
        headers={b"Inference-Header-Content-Length": b"\xb2"},
    )
    _oip_error(superscript, 400, "Inference-Header-Content-Length")
    _oip_error(
        httpx.post(f"{sqlite_server.url}/v2/models/churn/infer", content=b"{"),
        400,
        "not valid JSON",
    )
    _oip_error(
        httpx.get(f"{sqlite_server.url}/v2/models/churn/versions/99/ready"), 404, "version '99'"
    )


def test_mlservers_pandas_codec_is_read_as_columns(sqlite_server: Server) -> None:
    body = _body(parameters={"content_type": "pd"})
    for tensor in body["inputs"]:
        tensor["shape"] = [len(tensor["data"]), 1]
        if tensor["datatype"] == "BYTES":
            tensor["parameters"] = {"content_type": "str"}
    answer = _infer(sqlite_server, "churn", body)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert document["parameters"] == {"content_type": "pd"}
    assert [o["shape"] for o in document["outputs"]] == [[3]] * len(document["outputs"])


def test_grpc_refusals_carry_the_status_and_the_problem(sqlite_server: Server) -> None:
    client = triton_grpc.InferenceServerClient(sqlite_server.grpc)
    with pytest.raises(InferenceServerException) as unknown:
        client.get_model_metadata("nope")
    assert unknown.value.status() == "StatusCode.NOT_FOUND"
    assert "unknown model 'nope'" in unknown.value.message()
    metadata = client.get_model_metadata("churn")
    columns = oip.typed_columns(oip.family_of("churn"), oip.ROWS["churn"])
    columns["tenure"] = [1, -5, 3]
    with pytest.raises(InferenceServerException) as bad:
        client.infer("churn", oip.grpc_inputs(metadata, columns))
    assert bad.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input 'tenure' element 1" in bad.value.message()
    with pytest.raises(InferenceServerException) as pinned:
        client.infer(
            "churn",
            oip.grpc_inputs(metadata, oip.typed_columns(oip.family_of("churn"), oip.ROWS["churn"])),
            model_version="99",
        )
    assert pinned.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as not_loaded:
        client.is_model_ready("churn", "99")
    assert not_loaded.value.status() == "StatusCode.NOT_FOUND"
    pinned_ok = client.infer(
        "churn",
        oip.grpc_inputs(metadata, oip.typed_columns(oip.family_of("churn"), oip.ROWS["churn"])),
        model_version="1",
    )
    assert pinned_ok.get_response().model_version == "1"


def _grpc_calls(server: Server) -> dict[tuple[str, str], float]:
    """`clientinsight_grpc_requests_total` from `/metrics`, by (method, code)."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    found = re.findall(
        r'^clientinsight_grpc_requests_total\{code="(\w+)",method="(\w+)"\} ([0-9.e+]+)$',
        text,
        flags=re.MULTILINE,
    )
    return {(method, code): float(value) for code, method, value in found}


def test_grpc_calls_are_counted_by_method_and_code_on_metrics(sqlite_server: Server) -> None:
    """BentoML's request metrics see HTTP only: gRPC calls have counters of their own."""
    client = triton_grpc.InferenceServerClient(sqlite_server.grpc)
    before = _grpc_calls(sqlite_server)
    assert client.is_server_live()
    metadata = client.get_model_metadata("churn")
    columns = oip.typed_columns(oip.family_of("churn"), oip.ROWS["churn"])
    client.infer("churn", oip.grpc_inputs(metadata, columns))
    columns["tenure"] = [1, -5, 3]
    with pytest.raises(InferenceServerException):
        client.infer("churn", oip.grpc_inputs(metadata, columns))
    with oip.Stream(client) as stream:  # a stream counts each request it carries
        stream.send("churn", columns, "bad")
        stream.take(1)
        columns["tenure"] = [1, 5, 3]
        stream.send("churn", columns, "good")
        stream.take(1)
    after = _grpc_calls(sqlite_server)
    counted = (
        ("ModelInfer", "OK"),
        ("ModelInfer", "INVALID_ARGUMENT"),
        ("ModelStreamInfer", "OK"),
        ("ModelStreamInfer", "INVALID_ARGUMENT"),
        ("ServerLive", "OK"),
    )
    for key in counted:
        assert after.get(key, 0) - before.get(key, 0) == 1, (key, before, after)
    assert after[("ModelMetadata", "OK")] - before.get(("ModelMetadata", "OK"), 0) == 3
    text = httpx.get(f"{sqlite_server.url}/metrics", timeout=10).text
    assert 'clientinsight_grpc_request_duration_seconds_count{method="ModelInfer"}' in text


def test_a_nan_in_a_nullable_number_is_null_as_in_files(sqlite_server: Server) -> None:
    """A tensor cannot hold null: NaN stands for it where the contract allows null (as a
    blank does in a CSV), and is refused where it does not."""
    row = {**oip.ROWS["churn"][0], "total_charges": None}
    [want] = httpx.post(f"{sqlite_server.url}/churn/predict", json={"customers": [row]}).json()
    client = triton_grpc.InferenceServerClient(sqlite_server.grpc)
    metadata = client.get_model_metadata("churn")
    columns = oip.typed_columns(oip.family_of("churn"), [oip.ROWS["churn"][0]])
    columns["total_charges"] = [float("nan")]
    result = client.infer("churn", oip.grpc_inputs(metadata, columns))
    assert result.as_numpy("churn_probability")[0] == want["churn_probability"]
    columns["monthly_charges"] = [float("nan")]
    with pytest.raises(InferenceServerException) as refused:
        client.infer("churn", oip.grpc_inputs(metadata, columns))
    assert "input 'monthly_charges' element 0" in refused.value.message()


def test_grpc_health_and_reflection_are_standard(sqlite_server: Server) -> None:
    with grpc.insecure_channel(sqlite_server.grpc) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        [answer] = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = {s.name for s in answer.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names


def test_stored_rows_say_which_protocol_they_came_by(sqlite_server: Server) -> None:
    """One request by each protocol, so the test stands alone under any `-k` selection."""
    _json_answers(sqlite_server, "card-balance")
    assert _infer(sqlite_server, "churn", _body()).status_code == 200
    client = triton_grpc.InferenceServerClient(sqlite_server.grpc)
    metadata = client.get_model_metadata("card-balance")
    columns = oip.typed_columns(oip.family_of("card-balance"), oip.ROWS["balance"])
    client.infer("card-balance", oip.grpc_inputs(metadata, columns))
    path = sqlite_server.database_url.removeprefix("sqlite:///")
    deadline = time.monotonic() + 10
    found: dict[str, int] = {}
    while not {"http", "oip-rest", "oip-grpc"} <= set(found) and time.monotonic() < deadline:
        time.sleep(0.5)  # the writer flushes in the background
        with sqlite3.connect(path) as db:
            query = "SELECT protocol, count(*) FROM predictions GROUP BY protocol"
            found = dict(db.execute(query).fetchall())
    assert {"http", "oip-rest", "oip-grpc"} <= set(found), found


def test_the_documented_tritonclient_example_works_as_written(
    sqlite_server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/api.md's tritonclient examples, run as written (only the ports differ here): the
    calls, then the stream that continues them."""
    text = (ROOT / "docs" / "api.md").read_text()
    namespace: dict[str, Any] = {}
    for name in ("oip", "oip-stream"):
        example = text.split(f"<!-- example: {name} -->\n```python\n", 1)[1].split("```", 1)[0]
        example = example.replace("localhost:3000", _host(sqlite_server))
        example = example.replace("localhost:8001", sqlite_server.grpc)
        exec(compile(example, "docs/api.md", "exec"), namespace)
    http_line, grpc_line, *streamed = capsys.readouterr().out.strip().splitlines()
    [want] = httpx.post(
        f"{sqlite_server.url}/churn/predict", json={"customers": [oip.ROWS["churn"][0]]}
    ).json()
    assert http_line.split("]")[0] == grpc_line.split("]")[0]
    assert f"{want['churn_probability']:.8f}"[:6] in http_line
    assert grpc_line.endswith(" 1")
    assert sorted(line.split(" ", 1)[0] for line in streamed) == ["row-0", "row-1", "row-2"]
    assert {line.split(" ", 1)[1] for line in streamed} == {http_line.split(" ", 1)[0]}


@pytest.fixture(scope="module")
def two_workers(
    mlflow_store: ModelSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("serve-two-workers")
    env = {
        **mlflow_env(mlflow_store),
        "DATABASE_URL": f"sqlite:///{root / 'predictions.db'}",
        "CLIENTINSIGHT_API_WORKERS": "2",
    }
    with serve(env, root / "server.log") as server:
        yield server


def test_several_api_workers_share_the_grpc_port(two_workers: Server) -> None:
    port = int(two_workers.grpc.rsplit(":", 1)[1])
    workers = [
        child
        for child in psutil.Process(two_workers.process.pid).children(recursive=True)
        if "--service-name clientinsight" in " ".join(child.cmdline())
    ]

    def listening() -> list[int]:
        return [
            w.pid
            for w in workers
            if any(c.laddr.port == port and c.status == "LISTEN" for c in w.net_connections())
        ]

    deadline = time.monotonic() + 30  # /readyz answers once one worker is up
    while len(listening()) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(workers) == 2 and len(listening()) == 2, (workers, listening())
    client = triton_grpc.InferenceServerClient(two_workers.grpc)
    metadata = client.get_model_metadata("churn")
    columns = oip.typed_columns(oip.family_of("churn"), oip.ROWS["churn"])
    for _ in range(4):
        assert (
            client.infer("churn", oip.grpc_inputs(metadata, columns)).as_numpy("churn") is not None
        )
