"""Bad input over gRPC, sent with nnserve's own stubs (tritonclient refuses most of it before sending): each gets
its status and a message naming the problem, a valid call made at the same time succeeds, and the server keeps
serving."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import grpc
import numpy as np
import pytest
from grpc import aio

from service.protocols.grpc_proto import oip_pb2, oip_pb2_grpc
from tests.grpc.conftest import GrpcServer

IMAGE = np.zeros((1, 1, 28, 28), np.float32)


def infer_request(**fields: Any) -> Any:
    return oip_pb2.ModelInferRequest(**{"model_name": "mlp", **fields})


def image_input(shape: list[int] | None = None, **fields: Any) -> Any:
    return oip_pb2.ModelInferRequest.InferInputTensor(name="image", datatype="FP32", shape=shape or [1, 1, 28, 28],
                                                      **fields)


RAW = IMAGE.tobytes()
CASES: list[tuple[str, Any, grpc.StatusCode, list[str]]] = [
    ("not a protobuf", b"\xff\xff\xff\xff\x0f", grpc.StatusCode.INVALID_ARGUMENT,
     ["not a valid inference.ModelInferRequest"]),
    ("raw contents of the wrong size", infer_request(inputs=[image_input()], raw_input_contents=[RAW[:100]]),
     grpc.StatusCode.INVALID_ARGUMENT, ["needs 3136 bytes", "100"]),
    ("typed and raw at once", infer_request(
        inputs=[image_input(contents=oip_pb2.InferTensorContents(fp32_contents=[0.0] * 784))],
        raw_input_contents=[RAW]), grpc.StatusCode.INVALID_ARGUMENT, ["both as typed contents and in raw"]),
    ("neither typed nor raw", infer_request(inputs=[image_input()]), grpc.StatusCode.INVALID_ARGUMENT,
     ["no contents"]),
    ("more raw contents than inputs", infer_request(inputs=[image_input()], raw_input_contents=[RAW, RAW]),
     grpc.StatusCode.INVALID_ARGUMENT, ["2 raw_input_contents for 1 inputs"]),
    ("an input the model does not take", infer_request(
        inputs=[image_input(), oip_pb2.ModelInferRequest.InferInputTensor(name="extra", datatype="FP32", shape=[1])],
        raw_input_contents=[RAW, b"\0\0\0\0"]), grpc.StatusCode.INVALID_ARGUMENT, ["unknown input 'extra'", "image"]),
    ("too few typed values", infer_request(
        inputs=[image_input(contents=oip_pb2.InferTensorContents(fp32_contents=[0.0] * 10))]),
     grpc.StatusCode.INVALID_ARGUMENT, ["holds 784 values, fp32_contents has 10"]),
    ("FP16 as typed contents", oip_pb2.ModelInferRequest(model_name="fp16", inputs=[
        oip_pb2.ModelInferRequest.InferInputTensor(name="x", datatype="FP16", shape=[1, 4],
                                                   contents=oip_pb2.InferTensorContents(fp32_contents=[0] * 4))]),
     grpc.StatusCode.INVALID_ARGUMENT, ["FP16 has no typed contents field"]),
    ("300 in INT8 contents", oip_pb2.ModelInferRequest(model_name="all-types", inputs=[
        oip_pb2.ModelInferRequest.InferInputTensor(name="in_int8", datatype="INT8", shape=[1, 2],
                                                   contents=oip_pb2.InferTensorContents(int_contents=[300, 1]))]),
     grpc.StatusCode.INVALID_ARGUMENT, ["INT8 values must lie in [-128, 127]"]),
    ("BYTES cut short", oip_pb2.ModelInferRequest(model_name="all-types", inputs=[
        oip_pb2.ModelInferRequest.InferInputTensor(name="in_bytes", datatype="BYTES", shape=[1, 1])],
        raw_input_contents=[struct.pack("<I", 10) + b"abc"]), grpc.StatusCode.INVALID_ARGUMENT,
     ["declares 10 bytes, 3 remain"]),
    ("NaN", infer_request(inputs=[image_input()], raw_input_contents=[np.full((1, 1, 28, 28), np.nan,
                                                                               np.float32).tobytes()]),
     grpc.StatusCode.INVALID_ARGUMENT, ["784 value(s) are NaN or infinite"]),
    ("a message over the limit", b"\0" * (64 * 1024 * 1024 + 16), grpc.StatusCode.RESOURCE_EXHAUSTED,
     ["larger than max"]),
]


@pytest.mark.parametrize("case,message,status,words", CASES, ids=[c[0] for c in CASES])
async def test_bad_input_gets_its_status_and_a_valid_call_beside_it_succeeds(
        grpc_server: GrpcServer, case: str, message: Any, status: grpc.StatusCode, words: list[str]) -> None:
    async with aio.insecure_channel(grpc_server.target,
                                    options=[("grpc.max_send_message_length", -1)]) as channel:
        stub = oip_pb2_grpc.GRPCInferenceServiceStub(channel)
        raw_call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")  # bytes as they are
        payload = message if isinstance(message, bytes) else message.SerializeToString()
        good = infer_request(inputs=[image_input()], raw_input_contents=[RAW])
        answers: tuple[Any, Any] = await asyncio.gather(raw_call(payload), stub.ModelInfer(good),
                                                        return_exceptions=True)
        bad, ok = answers
        assert isinstance(bad, aio.AioRpcError), bad
        assert bad.code() == status, (bad.code(), bad.details())
        for word in words:
            assert word in (bad.details() or ""), (word, bad.details())
        assert not isinstance(ok, BaseException), ok
        assert np.frombuffer(ok.raw_output_contents[0], np.float32).shape == (10,)
        live = await stub.ServerLive(oip_pb2.ServerLiveRequest())
        assert live.live
