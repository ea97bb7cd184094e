"""gRPC beyond single calls: the standard health service and server reflection (what probes and grpcurl use),
a cancelled call leaving its batch, every worker process serving gRPC on one port, and SIGTERM letting a call in
flight finish, and, under load, losing none."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
from google.protobuf import descriptor_pb2
from grpc import aio

from service.hosting.http2.connection import END_HEADERS, HEADERS, frame
from service.hosting.launcher import free_port, serve_subprocess
from service.protocols.grpc_proto import (
    health_pb2,
    health_pb2_grpc,
    oip_pb2,
    oip_pb2_grpc,
    reflection_pb2,
    reflection_pb2_grpc,
)
from tests.grpc.conftest import GrpcServer, queue_resnet_work
from tests.grpc.h2_client import H2Client, data_frames, grpc_headers, header_block, message
from tests.service.conftest import metric_value

HEAVY = np.zeros((64, 1, 28, 28), np.float32)


def heavy_input() -> list[tg.InferInput]:
    tensor = tg.InferInput("image", list(HEAVY.shape), "FP32")
    tensor.set_data_from_numpy(HEAVY)
    return [tensor]


async def test_the_standard_health_service(grpc_server: GrpcServer) -> None:
    async with aio.insecure_channel(grpc_server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        assert (await health.Check(health_pb2.HealthCheckRequest(service=""))).status == serving
        assert (await health.Check(health_pb2.HealthCheckRequest(service="mlp"))).status == serving
        with pytest.raises(aio.AioRpcError) as unknown:
            await health.Check(health_pb2.HealthCheckRequest(service="nope"))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        watch = health.Watch(health_pb2.HealthCheckRequest(service="lstm"))
        first = await watch.read()
        assert first.status == serving
        watch.cancel()


async def test_server_reflection_lists_and_describes_the_services(grpc_server: GrpcServer) -> None:
    async with aio.insecure_channel(grpc_server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol="inference.GRPCInferenceService"),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Symbol")]
        answers = [answer async for answer in stub.ServerReflectionInfo(iter(requests))]
    names = {s.name for s in answers[0].list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} <= names
    described = descriptor_pb2.FileDescriptorProto.FromString(
        answers[1].file_descriptor_response.file_descriptor_proto[0])
    assert described.package == "inference" and "GRPCInferenceService" in [s.name for s in described.service]
    assert "ModelInfer" in [m.name for m in described.service[0].method]
    assert answers[2].error_response.error_code == 5  # NOT_FOUND


async def test_a_cancelled_call_leaves_its_batch(grpc_server: GrpcServer) -> None:
    before = httpx.get(f"{grpc_server.url}/metrics").text
    async with httpx.AsyncClient(base_url=grpc_server.url, timeout=60) as http, \
            aio.insecure_channel(grpc_server.target) as channel:
        load = await queue_resnet_work(http, grpc_server.url, 14, 512)  # work queued ahead of the call (of 1024)
        from service.protocols.grpc_proto import oip_pb2, oip_pb2_grpc

        stub = oip_pb2_grpc.GRPCInferenceServiceStub(channel)
        call = stub.ModelInfer(oip_pb2.ModelInferRequest(
            model_name="resnet", inputs=[oip_pb2.ModelInferRequest.InferInputTensor(
                name="image", datatype="FP32", shape=[64, 1, 28, 28])], raw_input_contents=[HEAVY.tobytes()]))
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert all(r.status_code == 200 for r in await asyncio.gather(*load))
    await asyncio.sleep(0.3)
    after = httpx.get(f"{grpc_server.url}/metrics").text
    assert metric_value(after, "nnserve_requests_total", model="resnet", protocol="grpc", outcome="cancelled") > \
        metric_value(before, "nnserve_requests_total", model="resnet", protocol="grpc", outcome="cancelled")
    served = metric_value(after, "nnserve_batch_size_sum", model="resnet") - \
        metric_value(before, "nnserve_batch_size_sum", model="resnet")
    assert served == 14 * 64, "the cancelled request's 64 rows were computed anyway"


def test_every_worker_serves_grpc_on_the_one_port(grpc_repository: Path) -> None:
    """Statistics are per process: once the calls are done, fresh connections report two different counts (one
    per process), which together are every call made."""
    port = free_port()
    args = ["--workers", "2", "--grpc-port", str(port), "--no-access-log"]
    with serve_subprocess(grpc_repository, args, env={"NNSERVE_WARMUP_BATCH_SIZES": "[1]"},
                          timeout=120) as (_, _, log):
        deadline = time.monotonic() + 60  # ready means one process ready: wait for the other's models too
        while log.read_text().count("Application startup complete") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        for _ in range(31):  # a fresh connection each time: the kernel spreads them over the processes (an odd
            client = tg.InferenceServerClient(f"127.0.0.1:{port}")  # number: the two counts cannot be equal)
            client.infer("mlp", [_one_image()])
            client.close()
        counts = set()
        for _ in range(30):
            client = tg.InferenceServerClient(f"127.0.0.1:{port}")
            stats = client.get_inference_statistics("mlp", as_json=True)["model_stats"][0]
            counts.add(int(stats.get("inference_count", 0)))
            client.close()
        assert len(counts) == 2 and sum(counts) == 31, counts


def _one_image() -> tg.InferInput:
    tensor = tg.InferInput("image", [1, 1, 28, 28], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
    return tensor


def test_sigterm_lets_a_call_in_flight_finish(grpc_repository: Path) -> None:
    port = free_port()
    args = ["--grpc-port", str(port), "--model", "resnet", "--no-access-log"]
    with serve_subprocess(grpc_repository, args,
                          env={"NNSERVE_WARMUP_BATCH_SIZES": "[1]"}) as (_, process, log):
        client = tg.InferenceServerClient(f"127.0.0.1:{port}")
        results: list[object] = []
        for _ in range(6):  # a queue of heavy calls, then the signal while they are in flight
            client.async_infer("resnet", heavy_input(), lambda result, error: results.append(error or result))
        time.sleep(0.15)
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while len(results) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        errors = [r for r in results if isinstance(r, Exception)]
        assert len(results) == 6 and not errors, errors
        assert all(r.as_numpy("probabilities").shape == (64, 10) for r in results)  # type: ignore[attr-defined]
        process.wait(30)
        assert "drained and stopped" in log.read_text()
        client.close()



async def _call_until_refused(target: str, outcomes: list[str]) -> None:
    """One client, its own channel: MLP calls in a loop until one fails; what each call met."""
    image = np.zeros((1, 1, 28, 28), np.float32)
    request = oip_pb2.ModelInferRequest(model_name="mlp", inputs=[oip_pb2.ModelInferRequest.InferInputTensor(
        name="image", datatype="FP32", shape=list(image.shape))], raw_input_contents=[image.tobytes()])
    async with aio.insecure_channel(target) as channel:
        stub = oip_pb2_grpc.GRPCInferenceServiceStub(channel)
        while True:
            try:
                await stub.ModelInfer(request, timeout=20)
            except aio.AioRpcError as error:
                refused = error.code() == grpc.StatusCode.UNAVAILABLE and "failed to connect" in str(error.details())
                outcomes.append("refused" if refused else f"{error.code().name}: {error.details()}")
                return
            outcomes.append("OK")


async def _drill(target: str, process: Any) -> list[str]:
    """32 clients calling until refused, SIGTERM after half a second: every call's outcome."""
    outcomes: list[str] = []
    clients = [asyncio.ensure_future(_call_until_refused(target, outcomes)) for _ in range(32)]
    await asyncio.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    await asyncio.wait(clients, timeout=40)
    return outcomes


def test_sigterm_under_grpc_load_every_call_answered_or_refused(grpc_repository: Path) -> None:
    """Two processes, 32 clients calling in a loop, SIGTERM, three times: every call is answered, or refused at
    connect once nothing listens; none is cut off (a call in flight cancelled, a connection reset)."""
    for _ in range(3):
        port = free_port()
        args = ["--grpc-port", str(port), "--model", "mlp", "--no-access-log", "--workers", "2"]
        with serve_subprocess(grpc_repository, args, env={"NNSERVE_WARMUP_BATCH_SIZES": "[1]"}) as (_, process, _):
            outcomes = asyncio.run(_drill(f"127.0.0.1:{port}", process))
            assert process.wait(30) == 0
        lost = [o for o in outcomes if o not in ("OK", "refused")]
        assert not lost and outcomes.count("refused") == 32 and outcomes.count("OK") > 100, lost or outcomes[-5:]

async def _infer_all(target: str, calls: int) -> list[grpc.StatusCode | str]:
    from service.protocols.grpc_proto import oip_pb2, oip_pb2_grpc

    request = oip_pb2.ModelInferRequest(model_name="resnet", inputs=[oip_pb2.ModelInferRequest.InferInputTensor(
        name="image", datatype="FP32", shape=[64, 1, 28, 28])], raw_input_contents=[HEAVY.tobytes()])
    async with aio.insecure_channel(target) as channel:
        stub = oip_pb2_grpc.GRPCInferenceServiceStub(channel)

        async def one() -> grpc.StatusCode | str:
            try:
                await stub.ModelInfer(request)
                return grpc.StatusCode.OK
            except aio.AioRpcError as error:
                return error.code() if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED else str(error.details())

        return list(await asyncio.gather(*[one() for _ in range(calls)]))


def test_grpc_requests_count_against_the_bytes_in_flight(grpc_repository: Path) -> None:
    """--max-body-bytes-in-flight holds gRPC requests as it holds HTTP bodies: 24 concurrent 200 KB calls against
    a 1 MB budget: some answered, the rest RESOURCE_EXHAUSTED saying why; the budget is whole again after."""
    port = free_port()
    args = ["--model", "resnet", "--grpc-port", str(port), "--workers", "1", "--no-access-log",
            "--max-body-bytes", "1000000", "--max-body-bytes-in-flight", "1000000"]
    with serve_subprocess(grpc_repository, args, env={"NNSERVE_WARMUP_BATCH_SIZES": "[1]"}) as (url, _, _):
        outcomes = asyncio.run(_infer_all(f"127.0.0.1:{port}", 24))
        refused = [o for o in outcomes if isinstance(o, str)]
        assert outcomes.count(grpc.StatusCode.OK) + len(refused) == 24, outcomes
        assert outcomes.count(grpc.StatusCode.OK) > 0 and refused, outcomes
        assert "would pass the limit of 1,000,000 per process (--max-body-bytes-in-flight)" in refused[0]
        assert asyncio.run(_infer_all(f"127.0.0.1:{port}", 4)) == [grpc.StatusCode.OK] * 4  # all given back
        assert metric_value(httpx.get(f"{url}/metrics").text, "nnserve_requests_total", protocol="grpc",
                            outcome="overload") == len(refused)
        # A 600 KB message holds its bytes from its first five: a second one arriving meanwhile is refused at once
        # (as HTTP refuses a body by its Content-Length), and the first is answered once it is whole.
        rows = np.zeros((190, 1, 28, 28), np.float32)
        big = message(oip_pb2.ModelInferRequest(model_name="resnet", inputs=[
            oip_pb2.ModelInferRequest.InferInputTensor(name="image", datatype="FP32", shape=list(rows.shape))],
            raw_input_contents=[rows.tobytes()]).SerializeToString())
        path = "/inference.GRPCInferenceService/ModelInfer"
        client = H2Client(f"127.0.0.1:{port}")
        client.send(frame(HEADERS, END_HEADERS, 1, header_block(grpc_headers(path))) + data_frames(1, big[:100_000]))
        client.send(frame(HEADERS, END_HEADERS, 3, header_block(grpc_headers(path))) + data_frames(3, big[:1000]))
        crowded = client.answer(3)
        assert crowded.header("grpc-status") == "8", crowded.headers
        assert "--max-body-bytes-in-flight" in (crowded.header("grpc-message") or "")
        client.send(data_frames(1, big[100_000:], end_stream=True))
        assert client.answer(1).header("grpc-status") == "0"
        client.close()
        # One stream sending 200 requests (1.9 MB) as fast as it can is slowed down, not refused: the server
        # takes at most 64 of a stream's requests (600 KB) before answering them.
        errors = asyncio.run(_stream_all(f"127.0.0.1:{port}", 200))
        assert errors == [""] * 200, [e for e in errors if e][:3]


async def _stream_all(target: str, count: int) -> list[str]:
    image = np.random.default_rng(0).normal(size=(3, 1, 28, 28)).astype(np.float32).tobytes()

    async def requests() -> Any:
        for i in range(count):
            yield oip_pb2.ModelInferRequest(model_name="resnet", id=str(i), inputs=[
                oip_pb2.ModelInferRequest.InferInputTensor(name="image", datatype="FP32", shape=[3, 1, 28, 28])],
                raw_input_contents=[image])

    async with aio.insecure_channel(target) as channel:
        stub = oip_pb2_grpc.GRPCInferenceServiceStub(channel)
        return [answer.error_message async for answer in stub.ModelStreamInfer(requests())]
