"""Checks of the gRPC server's streams (ModelStreamInfer) against a stand-in data plane, run
in a child process by test_grpc.py (this module imports `serving.oip.grpc`, whose protobuf
messages clash with tritonclient.grpc's)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from grpc import aio

from serving.oip import grpc as oip_grpc
from serving.oip import open_inference_grpc_pb2 as pb
from serving.oip import open_inference_grpc_pb2_grpc as pb_grpc
from serving.oip.dataplane import InferRequest, InferResponse
from serving.oip.tensors import Tensor

METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"


class Plane:
    """Answers each request with its id's length; `gate` holds answers back, `fail` lists
    ids whose answer raises what no refusal would."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: set[str] = set()
        self.running = self.most = self.cancelled = 0

    async def infer(
        self, serving: Any, name: str, version: str | None, request: InferRequest, *_: Any
    ) -> InferResponse:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
        if request.id in self.fail:
            raise RuntimeError("a bug")
        size = Tensor("size", "INT64", [1], [len(request.id)])
        return InferResponse(name, "1", request.id, [size], request_id=f"stored-{request.id}")


class Open:
    open = True


def request(request_id: str) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name="churn",
        id=request_id,
        inputs=[
            pb.ModelInferRequest.InferInputTensor(
                name="tenure",
                datatype="INT64",
                shape=[1],
                contents=pb.InferTensorContents(int64_contents=[1]),
            )
        ],
    )


async def _with_server(check: Callable[[Plane, Any], Awaitable[None]]) -> None:
    plane = Plane()
    server = aio.server()
    servicer = oip_grpc.InferenceServicer(plane, None, Open())  # type: ignore[arg-type]
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            await asyncio.wait_for(check(plane, stub), timeout=30)
    finally:
        await server.stop(None)


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


def a_stream_answers_at_most_its_bound_at_once() -> None:
    """A client that sends without reading gets no more than STREAM_IN_FLIGHT requests
    worked on at once; the rest wait, then every one is answered once, with its id."""
    oip_grpc.STREAM_IN_FLIGHT = 4

    async def check(plane: Plane, stub: Any) -> None:
        plane.gate.clear()
        sent = [f"r-{i}" for i in range(10)]

        async def requests() -> AsyncIterator[pb.ModelInferRequest]:
            for request_id in sent:
                yield request(request_id)

        call = stub.ModelStreamInfer(requests())
        await _until(lambda: plane.running == 4)
        await asyncio.sleep(0.2)  # time for a fifth to start, were it allowed to
        assert plane.most == 4, plane.most
        plane.gate.set()
        answers = [reply async for reply in call]
        assert sorted(a.infer_response.id for a in answers) == sorted(sent)
        assert all(a.error_message == "" for a in answers)
        assert all(a.infer_response.raw_output_contents for a in answers)

    asyncio.run(_with_server(check))


def an_unexpected_failure_is_answered_and_the_stream_goes_on() -> None:
    async def check(plane: Plane, stub: Any) -> None:
        plane.fail.add("boom")
        call = stub.ModelStreamInfer()
        await call.write(request("boom"))
        failed = await call.read()
        assert failed.infer_response.id == "boom"
        assert failed.error_message == "internal error (the server log has it)"
        await call.write(request("fine"))
        answered = await call.read()
        assert answered.error_message == "" and answered.infer_response.id == "fine"
        await call.done_writing()
        assert await call.read() is aio.EOF

    asyncio.run(_with_server(check))


def a_cancelled_stream_cancels_the_work_it_started() -> None:
    async def check(plane: Plane, stub: Any) -> None:
        plane.gate.clear()
        call = stub.ModelStreamInfer()
        for request_id in ("a", "b"):
            await call.write(request(request_id))
        await _until(lambda: plane.running == 2)
        call.cancel()
        await _until(lambda: plane.cancelled == 2)
        assert plane.running == 0

    asyncio.run(_with_server(check))
