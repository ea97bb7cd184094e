"""Large request bodies read into one buffer (service/hosting/request_bodies.py), on a real uvicorn server with
nnserve's protocol, under uvloop (the socket read straight into the body: counted) and asyncio's own loop: the app
gets every body whole and exact, in one message, pipelined requests keep their order, ``Expect: 100-continue``
and chunked bodies still work, a body refused before it is read is dropped while the connection goes on, and a
client gone mid-body harms nothing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import numpy as np
import pytest
import uvicorn
import uvloop

from service.hosting.http_protocol import DirectBodyHttpProtocol, read_whole_bodies
from service.hosting.launcher import free_port
from service.hosting.request_bodies import DIRECT_MIN, DirectBodyProtocol

LIMIT = 8 * 1024 * 1024


async def describe_body(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the body's sha256, length, type and how many messages it came in."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["path"] == "/refuse":  # answered before its body is read, as a request over the body budget is
        await send({"type": "http.response.start", "status": 429, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
        return
    digest, length, messages, kind, misaligned = hashlib.sha256(), 0, 0, "", None
    header_length = dict(scope["headers"]).get(b"inference-header-content-length")
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        messages += 1
        digest.update(message["body"])
        length += len(message["body"])
        kind = type(message["body"]).__name__
        if header_length is not None and message["body"]:  # where the binary tensors start, past a 64-byte line
            misaligned = np.frombuffer(message["body"], np.uint8)[int(header_length):].ctypes.data % 64
        if not message.get("more_body", False):
            break
    answer = json.dumps({"sha256": digest.hexdigest(), "length": length, "messages": messages, "type": kind,
                         "path": scope["path"], "misaligned": misaligned}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


@contextmanager
def server(loop: str) -> Iterator[int]:
    read_whole_bodies(LIMIT)
    port = free_port()
    config = uvicorn.Config(describe_body, host="127.0.0.1", port=port, http=DirectBodyHttpProtocol, loop="none",  # type: ignore[arg-type]
                            log_level="warning")
    running = uvicorn.Server(config)
    new_loop = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    thread = threading.Thread(target=lambda: new_loop().run_until_complete(running.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the test server did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        running.should_exit = True
        thread.join(10)


def read_response(stream: BinaryIO) -> tuple[bytes, Any]:
    status = stream.readline().split(b" ", 2)[1]
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = stream.read(length)
    return status, json.loads(body) if status == b"200" else body


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nhost: t\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode() + body


def payload(size: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_large_bodies_arrive_whole_exact_and_in_order(loop: str) -> None:
    big, other, small = payload(602_112, 1), payload(3 * DIRECT_MIN + 17, 2), payload(3_000, 3)
    before = DirectBodyProtocol.direct_bytes
    with server(loop) as port, socket.create_connection(("127.0.0.1", port)) as client:
        stream = client.makefile("rb")
        for _ in range(3):  # one keep-alive connection, request after request
            client.sendall(post("/big", big))
            status, answer = read_response(stream)
            assert status == b"200"
            assert answer == {"sha256": hashlib.sha256(big).hexdigest(), "length": len(big), "messages": 1,
                              "type": "bytearray", "path": "/big", "misaligned": None}
        # pipelined: three requests in one write, a large one between small ones, answered in order
        client.sendall(post("/one", small) + post("/two", other) + post("/three", small))
        answers = [read_response(stream)[1] for _ in range(3)]
        assert [a["path"] for a in answers] == ["/one", "/two", "/three"]
        assert answers[1]["sha256"] == hashlib.sha256(other).hexdigest()
        assert answers[0]["type"] == "bytes"  # a small body goes uvicorn's way
    if loop == "uvloop":  # all but what came with the headers went from the socket straight into the buffers
        assert DirectBodyProtocol.direct_bytes - before >= 3 * len(big) - 3 * 64 * 1024


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_binary_tensors_start_on_a_cache_line(loop: str) -> None:
    """Wherever the JSON header ends, the bytes after it (OIP's binary tensors) start on a 64-byte boundary:
    onnxruntime copies an input not aligned to its element size before every run."""
    big = payload(602_112 + 101, 5)
    with server(loop) as port, socket.create_connection(("127.0.0.1", port)) as client:
        stream = client.makefile("rb")
        for header_length in (0, 1, 37, 63, 64, 101, 4097):
            client.sendall(post("/oip", big, f"inference-header-content-length: {header_length}\r\n"))
            status, answer = read_response(stream)
            assert status == b"200"
            assert answer["sha256"] == hashlib.sha256(big).hexdigest()
            assert (answer["type"], answer["misaligned"]) == ("bytearray", 0), header_length


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_expect_continue_and_chunked_bodies(loop: str) -> None:
    big = payload(300_000, 4)
    with server(loop) as port, socket.create_connection(("127.0.0.1", port)) as client:
        stream = client.makefile("rb")
        client.sendall(post("/wait", b"", "expect: 100-continue\r\n").replace(b"content-length: 0",
                                                                              f"content-length: {len(big)}".encode()))
        assert stream.readline().startswith(b"HTTP/1.1 100")
        assert stream.readline() == b"\r\n"
        client.sendall(big)
        status, answer = read_response(stream)
        assert status == b"200" and answer["sha256"] == hashlib.sha256(big).hexdigest()
        chunks = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n"
                          for part in (big[:100_000], big[100_000:])) + b"0\r\n\r\n"
        client.sendall(b"POST /chunked HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n" + chunks)
        status, answer = read_response(stream)
        assert status == b"200" and answer["sha256"] == hashlib.sha256(big).hexdigest()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_client_gone_mid_body_harms_nothing(loop: str) -> None:
    big = payload(500_000, 5)
    with server(loop) as port:
        with socket.create_connection(("127.0.0.1", port)) as gone:
            gone.sendall(post("/gone", big)[: 200_000])  # headers and part of the body, then away
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(post("/after", big))
            status, answer = read_response(client.makefile("rb"))
    assert status == b"200" and answer["sha256"] == hashlib.sha256(big).hexdigest()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_body_refused_unread_is_dropped_and_the_connection_goes_on(loop: str) -> None:
    big = payload(2_000_000, 6)
    before = DirectBodyProtocol.direct_bytes
    with server(loop) as port, socket.create_connection(("127.0.0.1", port)) as client:
        stream = client.makefile("rb")
        request = post("/refuse", big)
        client.sendall(request[:100_000])
        assert read_response(stream)[0] == b"429"  # answered while most of the body is still to come
        client.sendall(request[100_000:] + post("/next", big))
        status, answer = read_response(stream)
    assert status == b"200" and answer["path"] == "/next"
    assert answer["sha256"] == hashlib.sha256(big).hexdigest()
    if loop == "uvloop":  # the refused body's rest was dropped, not stored: beside /next's, at most the 100 KB
        # sent before the refusal (read in before the app refused it, when they came in several reads) went into
        # a buffer, never the 1.9 MB after
        assert DirectBodyProtocol.direct_bytes - before <= len(big) + 100_000
