"""The committed gRPC modules are what the committed .proto generates (grpcio-tools, pinned
with grpcio), so neither can drift from the other."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
PROTO = Path("serving/oip/open_inference_grpc.proto")
GENERATED = (
    "open_inference_grpc_pb2.py",
    "open_inference_grpc_pb2.pyi",
    "open_inference_grpc_pb2_grpc.py",
)


def test_generated_modules_match_the_proto(tmp_path: Path) -> None:
    (tmp_path / PROTO.parent).mkdir(parents=True)
    shutil.copy(ROOT / PROTO, tmp_path / PROTO)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            ".",
            "--python_out=.",
            "--pyi_out=.",
            "--grpc_python_out=.",
            str(PROTO),
        ],
        cwd=tmp_path,
        check=True,
    )
    for name in GENERATED:
        committed = (ROOT / PROTO.parent / name).read_text()
        assert (tmp_path / PROTO.parent / name).read_text() == committed, (
            f"{name} differs from what {PROTO} generates: regenerate it (see the .proto)"
        )


def test_the_service_is_the_specifications() -> None:
    """Checked in a process of its own: tritonclient.grpc registers messages of the same names
    (package `inference`) in the default descriptor pool of any process that imports it."""
    check = """
from serving.oip import open_inference_grpc_pb2 as pb
service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
assert service.full_name == "inference.GRPCInferenceService"
assert [m.name for m in service.methods] == [
    "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
    "ModelStreamInfer"]
stream = service.methods_by_name["ModelStreamInfer"]
assert stream.client_streaming and stream.server_streaming
assert stream.output_type.full_name == "inference.ModelStreamInferResponse"
assert [f.name for f in stream.output_type.fields] == ["error_message", "infer_response"]
assert pb.ModelInferRequest.DESCRIPTOR.fields_by_name["raw_input_contents"].number == 7
assert pb.ModelInferResponse.DESCRIPTOR.fields_by_name["raw_output_contents"].number == 6
"""
    subprocess.run([sys.executable, "-c", check], cwd=ROOT, check=True)
