"""nnserve's own gRPC front (service.hosting.http2, service.hosting.grpc_calls) at the HTTP/2 level, on the real
server, with frames written by hand where grpcio would never send them: HPACK as RFC 7541 spells it (Huffman, the
dynamic table), requests dribbled a few bytes at a time, flow-control windows both ways, compressed messages,
garbage and bad header blocks (the connection ends, the server goes on), and grpcio's own server still serving
the same methods when asked for."""

from __future__ import annotations

import gzip
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.utils.shared_memory as shm

from service.hosting.grpc_calls import INFLATED_ON_THE_LOOP
from service.hosting.http2.connection import (
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    PING,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    frame,
)
from service.hosting.http2.hpack import Decoder, HpackError
from service.hosting.launcher import free_port, serve_subprocess
from service.protocols.grpc_proto import oip_pb2, oip_pb2_grpc
from tests.grpc.conftest import GrpcServer
from tests.grpc.h2_client import H2Client, grpc_headers, header_block, message
from tests.service.conftest import metric_value

LIVE = "/inference.GRPCInferenceService/ServerLive"
METADATA = "/inference.GRPCInferenceService/ModelMetadata"


def test_hpack_decodes_rfc_7541s_examples() -> None:
    """Appendix C.3 (plain strings) and C.4 (Huffman), each a connection's three requests sharing one table."""
    expected = [
        [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")],
        [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com"),
         ("cache-control", "no-cache")],
        [(":method", "GET"), (":scheme", "https"), (":path", "/index.html"), (":authority", "www.example.com"),
         ("custom-key", "custom-value")],
    ]
    for blocks in (["828684410f7777772e6578616d706c652e636f6d", "828684be58086e6f2d6361636865",
                    "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565"],
                   ["828684418cf1e3c2e5f23a6ba0ab90f4ff", "828684be5886a8eb10649cbf",
                    "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"]):
        decoder = Decoder()
        assert [decoder.decode(bytes.fromhex(b)) for b in blocks] == expected
    for bad, words in (("c0", "index 64 is not in the table"), ("0081ff", "padding"), ("0083f1e3c0", "padding"),
                       ("3fe21f", "exceeds the 4096 allowed"), ("0085", "runs past the end")):
        with pytest.raises(HpackError, match=words):
            Decoder().decode(bytes.fromhex(bad))


def test_huffman_headers_an_indexed_table_and_a_dribbled_request_are_understood(grpc_server: GrpcServer) -> None:
    client = H2Client(grpc_server.target)
    for stream_id, huffman in ((1, True), (3, False), (5, True)):
        block = header_block(grpc_headers(METADATA, **{"x-request-id": f"dribble-{stream_id}"}), huffman=huffman,
                             indexed=True)
        body = message(oip_pb2.ModelMetadataRequest(name="mlp").SerializeToString())
        client.send(frame(HEADERS, END_HEADERS, stream_id, block) + frame(DATA, END_STREAM, stream_id, body), piece=7)
        answer = client.answer(stream_id)
        assert answer.header(":status") == "200" and answer.header("grpc-status") == "0", answer.headers
        assert answer.header("x-request-id") == f"dribble-{stream_id}"  # metadata read, trailing metadata sent
        assert oip_pb2.ModelMetadataResponse.FromString(answer.data[5:]).name == "mlp"
    client.close()


def test_a_one_byte_window_holds_the_answer_until_the_client_opens_it(grpc_server: GrpcServer) -> None:
    client = H2Client(grpc_server.target, settings=struct.pack(">HI", INITIAL_WINDOW_SIZE, 16))
    request = oip_pb2.ModelMetadataRequest(name="mlp").SerializeToString()
    client.send(client.call(1, grpc_headers(METADATA), message(request)))
    first = client.answer(1, until_data=16)
    assert len(first.data) == 16, "more than the window was sent"
    client.sock.settimeout(0.3)
    with pytest.raises(socket.timeout):
        client.answer(1, until_data=17)  # nothing more until the window opens
    client.sock.settimeout(10)
    client.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 1 << 20)))
    rest = client.answer(1)
    assert rest.header("grpc-status") == "0", rest.headers
    response = oip_pb2.ModelMetadataResponse.FromString((first.data + rest.data)[5:])
    assert response.name == "mlp" and response.inputs[0].name == "image"
    client.close()


def test_a_request_larger_than_every_window_arrives_whole(grpc_server: GrpcServer) -> None:
    """20 MB: more than a stream's window (4 MiB) and the connection's (16 MiB), so it only arrives if the
    server credits what it reads; the answer names the size it received."""
    raw = bytes(20_000_000)
    request = oip_pb2.ModelInferRequest(model_name="mlp", inputs=[oip_pb2.ModelInferRequest.InferInputTensor(
        name="image", datatype="FP32", shape=[1, 1, 28, 28])], raw_input_contents=[raw])
    with (grpc.insecure_channel(grpc_server.target, options=[("grpc.max_send_message_length", -1)]) as channel,
          pytest.raises(grpc.RpcError) as error):
        oip_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "3136" in error.value.details() and "20000000" in error.value.details(), error.value.details()


def test_compressed_messages_are_read(grpc_server: GrpcServer) -> None:
    client = tg.InferenceServerClient(grpc_server.target)
    for rows in (2, 100):  # 100 rows of noise: over 256 KiB compressed, inflated off the event loop
        image = np.random.default_rng(rows).normal(size=(rows, 1, 28, 28)).astype(np.float32)
        tensor = tg.InferInput("image", list(image.shape), "FP32")
        tensor.set_data_from_numpy(image)
        plain = client.infer("mlp", [tensor]).as_numpy("probabilities")
        for algorithm in ("gzip", "deflate"):
            compressed = client.infer("mlp", [tensor], compression_algorithm=algorithm).as_numpy("probabilities")
            assert compressed.tobytes() == plain.tobytes(), (rows, algorithm)
    client.close()
    assert len(gzip.compress(np.random.default_rng(100).normal(size=(100, 784)).astype(np.float32).tobytes())) > \
        INFLATED_ON_THE_LOOP
    raw = H2Client(grpc_server.target)  # an encoding it does not read: named, not guessed at
    body = gzip.compress(b"")
    raw.send(raw.call(1, grpc_headers(LIVE, **{"grpc-encoding": "snappy"}), b"\x01" + struct.pack(">I", len(body))
                      + body))
    answer = raw.answer(1)
    assert answer.header("grpc-status") == str(grpc.StatusCode.UNIMPLEMENTED.value[0])
    assert "snappy" in (answer.header("grpc-message") or "")
    raw.close()


def test_unknown_methods_and_calls_that_are_not_grpc_get_their_answers(grpc_server: GrpcServer) -> None:
    client = H2Client(grpc_server.target)
    client.send(client.call(1, grpc_headers("/nnserve.Nothing/Here"), message(b"")))
    answer = client.answer(1)
    assert answer.header("grpc-status") == "12" and "/nnserve.Nothing/Here" in (answer.header("grpc-message") or "")
    headers = [(k, "text/plain" if k == "content-type" else v) for k, v in grpc_headers(LIVE)]
    client.send(client.call(3, headers, b"hello"))
    answer = client.answer(3)
    assert answer.header(":status") == "415" and b"application/grpc" in answer.data
    client.send(frame(PING, 0, 0, b"8 bytes!"))
    while (received := client.read_frame())[0] != PING:
        pass
    assert received[1] == 1 and received[3] == b"8 bytes!", "PING not acknowledged with its payload"
    client.close()


@pytest.mark.parametrize("junk,code", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1),  # HTTP/1.1 on the gRPC port: PROTOCOL_ERROR
    (frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\xff\x7f"), 9),  # an index far past the table: COMPRESSION_ERROR
    (frame(DATA, 0, 7, b"x"), 1),  # DATA on a stream never opened: PROTOCOL_ERROR
    (frame(SETTINGS, 0, 0, b"\x00\x04\xff\xff\xff\xff"), 3),  # a window over 2^31-1: FLOW_CONTROL_ERROR
    (struct.pack(">I", 20_000)[1:] + bytes(6 + 20_000), 6),  # a frame over 16 KiB: FRAME_SIZE_ERROR
])
def test_a_broken_connection_gets_goaway_and_the_server_keeps_serving(grpc_server: GrpcServer, junk: bytes,
                                                                       code: int) -> None:
    host, port = grpc_server.target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        preface = b"" if junk.startswith(b"GET") else b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(SETTINGS, 0, 0)
        sock.sendall(preface + junk)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    frames = []
    while len(received) >= 9:
        length = int.from_bytes(received[:3], "big")
        frames.append((received[3], received[9:9 + length]))
        received = received[9 + length:]
    goaway = [payload for kind, payload in frames if kind == GOAWAY]
    assert goaway and struct.unpack(">I", goaway[0][4:8])[0] == code, frames
    client = H2Client(grpc_server.target)
    client.send(client.call(1, grpc_headers(LIVE), message(b"")))
    assert client.answer(1).header("grpc-status") == "0"
    client.close()


def test_grpcios_server_serves_the_same_methods(grpc_repository: Path) -> None:
    port = free_port()
    args = ["--grpc-server", "grpcio", "--grpc-port", str(port), "--workers", "1", "--model", "mlp", "--shared-memory"]
    with serve_subprocess(grpc_repository, args, env={"NNSERVE_WARMUP_BATCH_SIZES": "[1]"}) as (_, _, log):
        client = tg.InferenceServerClient(f"127.0.0.1:{port}")
        assert client.is_server_ready() and client.is_model_ready("mlp")
        image = np.ones((2, 1, 28, 28), np.float32)
        tensor = tg.InferInput("image", list(image.shape), "FP32")
        tensor.set_data_from_numpy(image)
        assert client.infer("mlp", [tensor]).as_numpy("probabilities").shape == (2, 10)
        with pytest.raises(Exception, match="nope"):
            client.infer("nope", [tensor])
        region = shm.create_shared_memory_region("nnserve-grpcio", "/nnserve-grpcio", image.nbytes)
        try:  # grpcio's peer strings name this host too: the region registers, and serves
            shm.set_shared_memory_region(region, [image])
            client.register_system_shared_memory("nnserve-grpcio", "/nnserve-grpcio", image.nbytes)
            tensor.set_shared_memory("nnserve-grpcio", image.nbytes)
            assert client.infer("mlp", [tensor]).as_numpy("probabilities").shape == (2, 10)
            client.unregister_system_shared_memory()
        finally:
            shm.destroy_shared_memory_region(region)
        client.close()
        assert "grpcio server" in log.read_text()


def test_a_deadline_that_passes_at_once_is_still_answered(grpc_server: GrpcServer) -> None:
    """Even a call cancelled before its method began gets its DEADLINE_EXCEEDED (and one with time left, OK)."""
    client = H2Client(grpc_server.target)
    request = message(oip_pb2.ModelMetadataRequest(name="mlp").SerializeToString())
    for stream_id, timeout, status in ((1, "0n", "4"), (3, "1n", "4"), (5, "10S", "0")):
        client.send(client.call(stream_id, grpc_headers(METADATA, **{"grpc-timeout": timeout}), request))
        assert client.answer(stream_id).header("grpc-status") == status, timeout
    client.close()


def test_a_malformed_or_oversized_header_list_ends_only_its_stream(grpc_server: GrpcServer) -> None:
    client = H2Client(grpc_server.target)
    client.send(client.call(1, [*grpc_headers(LIVE), ("", "no name")], message(b"")))
    while (received := client.read_frame())[0] != RST_STREAM or received[2] != 1:
        pass
    assert struct.unpack(">I", received[3])[0] == 1, "not PROTOCOL_ERROR"
    # 4 KB into the table once, then named 20 times by its index (62): an 8 KB block, an 80 KB header list
    block = header_block(grpc_headers(LIVE)) + header_block([("x-big", "x" * 4000)], indexed=True) + b"\xbe" * 20
    client.send(frame(HEADERS, END_HEADERS, 3, block) + frame(DATA, END_STREAM, 3, message(b"")))
    assert client.answer(3).header(":status") == "431"
    client.send(client.call(5, grpc_headers(LIVE), message(b"")))
    assert client.answer(5).header("grpc-status") == "0", "the connection did not go on"
    client.close()


def test_frames_after_a_refusal_are_ignored_not_answered(grpc_server: GrpcServer) -> None:
    """A message over the limit is refused at its first 5 bytes: trailers, then RST_STREAM(NO_ERROR) so the
    client stops; what it had sent already is dropped without an RST_STREAM for each frame."""
    client = H2Client(grpc_server.target)
    path = "/inference.GRPCInferenceService/ModelInfer"
    client.send(frame(HEADERS, END_HEADERS, 1, header_block(grpc_headers(path))) +
                frame(DATA, 0, 1, struct.pack(">BI", 0, 100 << 20)))
    answer = client.answer(1)
    assert answer.header("grpc-status") == "8", answer.headers
    client.send(b"".join(frame(DATA, 0, 1, bytes(1000)) for _ in range(20)))
    client.send(client.call(3, grpc_headers(LIVE), message(b"")))
    resets = []
    while (received := client.read_frame())[2] != 3 or not received[1] & END_STREAM:
        if received[0] == RST_STREAM:
            resets.append(struct.unpack(">I", received[3])[0])
    assert resets == [0], resets  # the one NO_ERROR after the trailers
    client.close()


def test_nghttp2s_load_generator_is_served(grpc_server: GrpcServer, tmp_path: Path) -> None:
    """h2load (nghttp2, what `nnserve bench --protocols grpc` drives): another HTTP/2 implementation, whose HPACK
    codes its strings with Huffman and indexes them in the dynamic table, ten streams at once on each of its four
    connections. Every call is answered, and answered OK (gRPC's status is in the trailers, which h2load does not
    read: the server's metrics count them)."""
    h2load = shutil.which("h2load")
    if h2load is None:
        pytest.skip("h2load is not installed (apt-get install nghttp2-client)")
    request = oip_pb2.ModelInferRequest(model_name="mlp", inputs=[oip_pb2.ModelInferRequest.InferInputTensor(
        name="image", datatype="FP32", shape=[1, 1, 28, 28])], raw_input_contents=[bytes(3136)])
    body = tmp_path / "request"
    body.write_bytes(message(request.SerializeToString()))

    def succeeded() -> float:
        return metric_value(httpx.get(f"{grpc_server.url}/metrics").text, "nnserve_requests_total", model="mlp",
                            protocol="grpc", outcome="success")

    before = succeeded()
    output = subprocess.run([h2load, "-n", "400", "-c", "4", "-m", "10", "-d", str(body), "-H",
                             "content-type: application/grpc", "-H", "te: trailers",
                             f"http://{grpc_server.target}/inference.GRPCInferenceService/ModelInfer"],
                            capture_output=True, text=True, timeout=60, check=True).stdout
    assert "400 succeeded, 0 failed, 0 errored" in output, output
    assert succeeded() - before == 400


def test_an_old_connection_is_asked_to_go_and_its_calls_finish(grpc_repository: Path) -> None:
    """--grpc-max-connection-age-s: GOAWAY once the connection is that old (so that clients behind one Service
    spread over the replicas again); a call still arriving then is answered, and the connection closes after it.
    A client calling across the moment never sees an error: it opens a new connection."""
    port = free_port()
    args = ["--grpc-port", str(port), "--workers", "1", "--model", "mlp", "--grpc-max-connection-age-s", "1"]
    with serve_subprocess(grpc_repository, args, env={"NNSERVE_WARMUP_BATCH_SIZES": "[1]"}):
        client = H2Client(f"127.0.0.1:{port}")
        request = message(oip_pb2.ModelMetadataRequest(name="mlp").SerializeToString())
        client.send(frame(HEADERS, END_HEADERS, 1, header_block(grpc_headers(METADATA))) +
                    frame(DATA, 0, 1, request[:3]))  # a call whose request is still coming
        while (received := client.read_frame())[0] != GOAWAY:
            pass
        assert struct.unpack(">II", received[3][:8]) == (1, 0), "GOAWAY(last stream 1, NO_ERROR) expected"
        client.send(frame(DATA, END_STREAM, 1, request[3:]))
        assert client.answer(1).header("grpc-status") == "0"
        with pytest.raises(ConnectionError):
            while True:
                client.read_frame()  # the server closes the connection once its call is done
        client.close()
        image = np.zeros((1, 1, 28, 28), np.float32)
        tensor = tg.InferInput("image", list(image.shape), "FP32")
        tensor.set_data_from_numpy(image)
        triton = tg.InferenceServerClient(f"127.0.0.1:{port}")
        start = time.monotonic()
        calls = 0
        while time.monotonic() - start < 3:  # across at least two retirements
            assert triton.infer("mlp", [tensor]).as_numpy("probabilities").shape == (1, 10)
            calls += 1
        triton.close()
        assert calls > 10
