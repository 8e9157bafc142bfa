"""The Open Inference Protocol over gRPC: `inference.GRPCInferenceService` on port 8001, with
standard health checking (`grpc.health.v1`, for Kubernetes' gRPC probes) and reflection.

BentoML's new-style services cannot serve gRPC, so each API worker runs `grpc.aio` servers
of its own in its event loop, beside its HTTP server. Several of them: a `grpc.aio` server
accepts one new call per pass of the event loop (its serving loop awaits each call before it
asks for the next), so under load one server hands calls to the batcher one by one and
batches stay small; servers on the same port accept side by side. They, and the API workers,
share the port with SO_REUSEPORT (the kernel spreads connections over them). Anyone else
already listening there stops the start with one line, instead of taking half the connections.
The work is the data plane's (`serving/oip/dataplane.py`), the keys and rate limits the front
door's policy (`serving/access.py`): the same path as REST and the JSON API. Responses always
fill `raw_output_contents`, the one place `tritonclient.grpc` reads outputs from.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pydantic import BaseModel

from serving.access import AccessPolicy
from serving.errors import ApiError
from serving.metrics import GrpcMetrics
from serving.oip import open_inference_grpc_pb2 as pb
from serving.oip import open_inference_grpc_pb2_grpc as pb_grpc
from serving.oip.dataplane import (
    DataPlane,
    InferRequest,
    InferResponse,
    RequestedOutput,
    Serving,
)
from serving.oip.layouts import Layouts
from serving.oip.tensors import (
    Tensor,
    check_datatype,
    element_count,
    from_binary,
    invalid,
    text,
    to_binary,
)

log = logging.getLogger("clientinsight")
PROTOCOL = "oip-grpc"
SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
#: Seconds between two looks at readiness for the health service.
HEALTH_INTERVAL_S = 2.0
#: Requests of one stream answered at once; the stream's next ones wait in gRPC's flow
#: control, so a client that sends without reading cannot pile up work.
STREAM_IN_FLIGHT = 128
Reply = TypeVar("Reply")

#: Our statuses as gRPC's codes.
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
#: Where typed contents hold each datatype (FP16 and BF16 only travel raw).
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _parameters(parameters: Any) -> dict[str, Any]:
    if not len(parameters):  # the usual case, and the cheap question to a protobuf map
        return {}
    out = {}
    for key, value in parameters.items():
        choice = value.WhichOneof("parameter_choice")
        out[key] = None if choice is None else getattr(value, choice)
    return out


def decode(request: pb.ModelInferRequest, raw: Sequence[bytes] | None = None) -> InferRequest:
    """The request's tensors, from raw contents (one per input, in order; `raw` when they have
    been taken out of the request already) or typed ones. A layout a client repeats is decoded
    once (`read`)."""
    given = request.inputs
    if raw is None:
        raw = request.raw_input_contents
    if raw and len(raw) != len(given):
        raise invalid(
            f"raw_input_contents holds {len(raw)} tensors for {len(given)} inputs",
            "raw_input_contents",
        )
    inputs = []
    for position, tensor in enumerate(given):
        name = tensor.name
        datatype = check_datatype(name, tensor.datatype)
        shape = list(tensor.shape)
        count = element_count(name, shape)
        if raw:
            data = from_binary(name, datatype, count, raw[position])
        else:
            where = CONTENTS.get(datatype)
            if where is None:
                raise invalid(f"input '{name}': {datatype} travels only in raw contents", name)
            data = list(getattr(tensor.contents, where))
            if datatype == "BYTES":
                data = [text(name, value, i) for i, value in enumerate(data)]
            if len(data) != count:
                raise invalid(
                    f"input '{name}': {len(data)} elements, but shape {shape} holds {count}", name
                )
        inputs.append(Tensor(name, datatype, shape, data, _parameters(tensor.parameters)))
    outputs = [RequestedOutput(o.name, _parameters(o.parameters)) for o in request.outputs]
    return InferRequest(inputs, request.id, _parameters(request.parameters), outputs)


def read(
    layouts: Layouts, plane: DataPlane, request: pb.ModelInferRequest
) -> tuple[InferRequest, list[BaseModel] | None]:
    """The request's tensors and, where its layout is known or kept, its validated records.

    The key is the request without its raw contents and id (`serving/oip/layouts.py`): takes
    both out of `request` (the caller does not need them again).
    """
    raw = list(request.raw_input_contents)
    if not raw:  # typed contents: the values are in the layout
        return decode(request), None
    request_id = request.id
    request.ClearField("raw_input_contents")
    request.ClearField("id")
    key = request.SerializeToString(deterministic=True)
    layout = layouts.get(key)
    if layout is None:
        decoded = decode(request, raw)
        decoded.id = request_id
        model = plane.model(request.model_name)
        return decoded, layouts.learn(key, len(key), model, decoded)
    if len(raw) != len(layout.readers):
        decode(request, raw)  # the error that names the mismatch
    known = layout.request
    return InferRequest([], request_id, known.parameters, known.outputs), layout.records(raw)


@functools.lru_cache(maxsize=256)
def _output_metadata(
    outputs: tuple[tuple[str, str, tuple[int, ...]], ...],
) -> list[pb.ModelInferResponse.InferOutputTensor]:
    """The outputs' metadata messages, made once per answer layout (names, datatypes, shapes)."""
    return [
        pb.ModelInferResponse.InferOutputTensor(name=name, datatype=datatype, shape=shape)
        for name, datatype, shape in outputs
    ]


def encode(response: InferResponse) -> pb.ModelInferResponse:
    tensors = response.outputs
    metadata = _output_metadata(tuple((t.name, t.datatype, tuple(t.shape)) for t in tensors))
    reply = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id,
        outputs=metadata,
        raw_output_contents=[to_binary(t.datatype, t.data) for t in tensors],
    )
    for key, value in response.parameters.items():
        reply.parameters[key].string_param = str(value)
    return reply


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The six methods, each answering through `_answer` (keys, limits, errors in one place)."""

    def __init__(
        self,
        plane: DataPlane,
        serving: Serving,
        policy: AccessPolicy,
        metrics: GrpcMetrics | None = None,
    ) -> None:
        self.plane = plane
        self.serving = serving
        self.policy = policy
        self.metrics = metrics
        self.layouts = Layouts()

    async def _answer(
        self,
        context: aio.ServicerContext,
        method: str,
        work: Callable[[], Awaitable[Reply]],
        needs_key: bool = True,
    ) -> Reply:
        """`work`'s reply; a refusal as its gRPC status, with the message that names it. Each
        call is counted by method and code, and timed (`serving/metrics.py`)."""
        started = time.perf_counter()
        code = "UNKNOWN"  # an exception no one turned into a status: gRPC answers UNKNOWN
        try:
            if needs_key and not self.policy.open:
                self.policy.authorize(self.policy.presented_in(_metadata(context)), "key")
            reply = await work()
            code = "OK"
            return reply
        except ApiError as error:
            status = _refused(error)
            code = status.name
            await context.abort(status, error.message)
        finally:
            if self.metrics is not None:
                self.metrics.observe(method, code, time.perf_counter() - started)
        raise AssertionError("abort returns only by raising")  # pragma: no cover

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        async def live() -> pb.ServerLiveResponse:
            return pb.ServerLiveResponse(live=True)

        return await self._answer(context, "ServerLive", live, needs_key=False)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        async def ready() -> pb.ServerReadyResponse:
            return pb.ServerReadyResponse(ready=not await self.plane.ready(self.serving))

        return await self._answer(context, "ServerReady", ready, needs_key=False)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        async def ready() -> pb.ModelReadyResponse:
            try:
                await self.plane.model_ready(self.serving, request.name, request.version or None)
            except ApiError as error:
                if error.status != 503:
                    raise
                return pb.ModelReadyResponse(ready=False)
            return pb.ModelReadyResponse(ready=True)

        return await self._answer(context, "ModelReady", ready)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        async def metadata() -> pb.ServerMetadataResponse:
            return pb.ServerMetadataResponse(**self.plane.server_metadata())

        return await self._answer(context, "ServerMetadata", metadata)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        async def metadata() -> pb.ModelMetadataResponse:
            found = await self.plane.metadata(self.serving, request.name, request.version or None)
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=found["name"],
                versions=found["versions"],
                platform=found["platform"],
                inputs=[tensor(**spec) for spec in found["inputs"]],
                outputs=[tensor(**spec) for spec in found["outputs"]],
            )

        return await self._answer(context, "ModelMetadata", metadata)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: aio.ServicerContext
    ) -> pb.ModelInferResponse:
        async def infer() -> pb.ModelInferResponse:
            reply, request_id = await self._infer(request)
            context.set_trailing_metadata((("x-request-id", request_id),))
            return reply

        return await self._answer(context, "ModelInfer", infer)

    async def _infer(self, request: pb.ModelInferRequest) -> tuple[pb.ModelInferResponse, str]:
        """One inference's reply and the request id it was stored under: the data plane's
        path, as REST's and the JSON API's."""
        decoded, validated = read(self.layouts, self.plane, request)
        response = await self.plane.infer(
            self.serving,
            request.model_name,
            request.model_version or None,
            decoded,
            PROTOCOL,
            validated,
        )
        return encode(response), response.request_id

    async def ModelStreamInfer(
        self, requests: AsyncIterator[pb.ModelInferRequest], context: aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Triton's streaming extension: each request is answered as it completes, side by
        side with the stream's others (so they batch together), each through the same keys,
        limits and data plane as a ModelInfer call. A refused request is answered with its
        `error_message` (and its id) and the stream goes on; a stream without a valid key
        ends at once with the status that names it."""
        key = None
        if not self.policy.open:
            try:
                key = self.policy.key_for(self.policy.presented_in(_metadata(context)), "key")
            except ApiError as error:
                status = _refused(error)
                if self.metrics is not None:
                    self.metrics.observe("ModelStreamInfer", status.name, 0.0)
                await context.abort(status, error.message)
        replies: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        running: set[asyncio.Task[None]] = set()
        slots = asyncio.Semaphore(STREAM_IN_FLIGHT)

        async def answer(request: pb.ModelInferRequest) -> None:
            started = time.perf_counter()
            request_id, model_name = request.id, request.model_name
            code = "UNKNOWN"

            def refuse(message: str) -> None:
                failed = pb.ModelInferResponse(model_name=model_name, id=request_id)
                replies.put_nowait(
                    pb.ModelStreamInferResponse(error_message=message, infer_response=failed)
                )

            try:
                if key is not None:
                    self.policy.charge(key)
                reply, _ = await self._infer(request)
                code = "OK"
                replies.put_nowait(pb.ModelStreamInferResponse(infer_response=reply))
            except ApiError as error:
                code = _refused(error).name
                refuse(error.message)
            except Exception:  # a unary call would end UNKNOWN; a stream must still answer
                log.exception("ModelStreamInfer: request %r failed", request_id)
                code = "INTERNAL"
                refuse("internal error (the server log has it)")
            finally:
                slots.release()
                if self.metrics is not None:
                    self.metrics.observe("ModelStreamInfer", code, time.perf_counter() - started)

        async def take() -> None:
            try:
                async for request in requests:
                    await slots.acquire()
                    task = asyncio.create_task(answer(request))
                    running.add(task)
                    task.add_done_callback(running.discard)
                if running:
                    await asyncio.wait(set(running))
            finally:
                replies.put_nowait(None)

        taker = asyncio.create_task(take())
        try:
            while (reply := await replies.get()) is not None:
                yield reply
            await taker  # a broken request stream ends the call with its error
        finally:
            for task in (taker, *running):
                task.cancel()


def _refused(error: ApiError) -> grpc.StatusCode:
    """A refusal's gRPC status, its one log line written."""
    error.log_line("gRPC", SERVICE)
    return CODES.get(error.status, grpc.StatusCode.INTERNAL)


def _metadata(context: aio.ServicerContext) -> list[tuple[bytes, bytes]]:
    return [
        (k.encode(), v.encode() if isinstance(v, str) else v)
        for k, v in context.invocation_metadata() or ()
    ]


class GrpcServer:
    """One API worker's gRPC servers: the inference service, health and reflection."""

    def __init__(
        self,
        plane: DataPlane,
        serving: Serving,
        policy: AccessPolicy,
        *,
        host: str,
        port: int,
        shared: bool,
        servers: int,
        max_message_bytes: int,
        metrics: GrpcMetrics | None = None,
    ) -> None:
        self.plane, self.serving = plane, serving
        self.host, self.port, self.shared = host, port, shared
        self.address = f"{host}:{port}"
        self.health = health.aio.HealthServicer()
        servicer = InferenceServicer(plane, serving, policy, metrics)
        self.servers: list[aio.Server] = []
        for _ in range(servers):
            server = aio.server(
                options=[
                    ("grpc.so_reuseport", 1),
                    ("grpc.max_receive_message_length", max_message_bytes),
                ]
            )
            pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
            health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
            reflection.enable_server_reflection(
                (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
            )
            self.servers.append(server)
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.shared:  # other API workers would hold it by right
            claim(self.host, self.port)
        for server in self.servers:
            try:
                server.add_insecure_port(self.address)
            except RuntimeError as exc:
                raise _busy(self.address) from exc
            await server.start()
        self._watch = asyncio.create_task(self._follow_readiness())
        log.info(
            "gRPC (Open Inference Protocol) listening on %s (%d servers)",
            self.address,
            len(self.servers),
        )

    async def _follow_readiness(self) -> None:
        """The health service says SERVING once every family's model service answers."""
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        while True:
            try:
                ready = not await self.plane.ready(self.serving)
            except Exception:  # a probe must never die of a failed look
                ready = False
            for name in ("", SERVICE):
                await self.health.set(name, serving if ready else not_serving)
            await asyncio.sleep(HEALTH_INTERVAL_S)

    async def stop(self, grace_s: float) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self.health.enter_graceful_shutdown()
        await asyncio.gather(*(server.stop(grace_s) for server in self.servers))


def claim(host: str, port: int) -> None:
    """Refuse a port someone already listens on: our servers share theirs (SO_REUSEPORT) and
    would quietly split connections with a stranger that shares too."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            probe.bind(address)
        except OSError as exc:
            raise _busy(f"{host}:{port}") from exc


def _busy(address: str) -> RuntimeError:
    return RuntimeError(
        f"gRPC: cannot listen on {address} (another server there?); set "
        "CLIENTINSIGHT_GRPC_PORT to a free port, or 0 for no gRPC"
    )
