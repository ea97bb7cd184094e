"""gRPC over nnserve's own HTTP/2 connections (service.hosting.http2): each stream is one call. This module reads
the call's headers (path, deadline, encoding, metadata), frames and unframes its messages (the 5-byte prefix; gzip
and deflate accepted), runs the method with a servicer context that offers what the servicers use of grpcio's
(``invocation_metadata``, ``peer``, ``time_remaining``, ``set_trailing_metadata``, ``abort``, ``cancelled``), and
answers with the status in the trailers. A call the client cancels (RST_STREAM, or its connection goes) has its
task cancelled; a call whose deadline passes is cancelled and answered DEADLINE_EXCEEDED, even one cancelled
before it began. A client stream's requests wait in a bounded queue: past it, the stream's window stays shut
until the method takes them."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import struct
import time
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn

import grpc

from service.hosting.body_budget import BodyBudget
from service.hosting.http2 import hpack
from service.hosting.http2.connection import Http2Connection
from service.protocols.grpc_handlers import Method

log = logging.getLogger("nnserve")

ACCEPTED_ENCODINGS = b"identity,deflate,gzip"
RESPONSE_HEADERS = (b"\x88"  # :status 200 (static index 8)
                    + hpack.encode([(b"content-type", b"application/grpc"),
                                    (b"grpc-accept-encoding", ACCEPTED_ENCODINGS)]))
OK_STATUS = hpack.encode([(b"grpc-status", b"0")])
_PREFIX = struct.Struct(">BI")
_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
RESERVED = frozenset({"content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding"})
END = object()  # the end of a client's stream of requests
BUDGETED_FROM = 64 * 1024  # a message declaring at least this many bytes holds them in the byte budget as it arrives
INFLATED_ON_THE_LOOP = 256 * 1024  # a unary call's compressed message larger than this inflates in a thread
QUEUED_REQUESTS = 64  # a client stream's requests decoded and waiting; past this its window is not reopened


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class Compressed:
    """A unary call's message too large to inflate on the event loop."""

    def __init__(self, message: bytes) -> None:
        self.message = message


def inflate(message: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate message, inflated up to ``limit`` bytes; ``Aborted`` names what is wrong with it."""
    if encoding not in ("gzip", "deflate"):
        raise Aborted(grpc.StatusCode.UNIMPLEMENTED, f"a message compressed with {encoding!r}: this server reads "
                      f"{ACCEPTED_ENCODINGS.decode()}")
    inflater = zlib.decompressobj(31 if encoding == "gzip" else 15)
    try:
        data = inflater.decompress(message, limit + 1)
    except zlib.error as error:
        raise Aborted(grpc.StatusCode.INTERNAL, f"a {encoding} message that does not decompress: {error}") from error
    if len(data) > limit:
        raise Aborted(grpc.StatusCode.RESOURCE_EXHAUSTED, f"a message that decompresses to more than the {limit} "
                      f"bytes allowed (--grpc-max-message-bytes)")
    if not inflater.eof:
        raise Aborted(grpc.StatusCode.INTERNAL, f"a {encoding} message cut short ({len(message)} bytes)")
    return data


def percent_encoded(message: str) -> bytes:
    """grpc-message's encoding: UTF-8, with bytes outside printable ASCII (and '%') as %XX."""
    return b"".join(bytes((b,)) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b
                    for b in message.encode()[:8192])


def status_block(code: grpc.StatusCode, details: str, metadata: tuple[tuple[str, str | bytes], ...]) -> bytes:
    headers = [(b"grpc-status", str(code.value[0]).encode())]
    if details:
        headers.append((b"grpc-message", percent_encoded(details)))
    for key, value in metadata:
        if key.endswith("-bin"):
            raw = value if isinstance(value, bytes) else value.encode()
            headers.append((key.encode(), base64.b64encode(raw).rstrip(b"=")))
        else:
            headers.append((key.encode(), str(value).encode()))
    return hpack.encode(headers)


class ServicerContext:
    """What the servicers use of grpcio's servicer context."""

    def __init__(self, call: GrpcCall, metadata: tuple[tuple[str, str | bytes], ...]) -> None:
        self._call = call
        self._metadata = metadata
        self.trailing: tuple[tuple[str, str | bytes], ...] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._call.connection.peer

    def time_remaining(self) -> float | None:
        deadline = self._call.deadline
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str | bytes], ...]) -> None:
        self.trailing = tuple(metadata)

    def cancelled(self) -> bool:
        return self._call.cancelled

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise Aborted(code, details)


class GrpcCall:
    """One call: an HTTP/2 stream's handler."""

    def __init__(self, calls: GrpcCalls, connection: Http2Connection, stream_id: int,
                 headers: list[tuple[str, str]]) -> None:
        self.calls = calls
        self.connection = connection
        self.stream_id = stream_id
        self.deadline: float | None = None
        self.cancelled = False
        self.expired = False
        self.task: asyncio.Task[None] | None = None
        self.method: Method | None = None
        self.started = False  # response headers sent
        self.ended = False  # the final status sent
        self._withheld = 0  # bytes read whose credit waits for the queue of requests to shrink
        self._reserved = 0  # bytes of the message now arriving, held in the byte budget until it is whole
        self._buffer = bytearray()
        self._request: Any = None
        self._queue: asyncio.Queue[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False
        self.context: ServicerContext | None = None
        self.encoding = "identity"
        self._open(headers)

    # -- the request ---------------------------------------------------------------------------------------------
    def _open(self, headers: list[tuple[str, str]]) -> None:
        path = method_name = content_type = encoding = ""
        timeout = None
        metadata: list[tuple[str, str | bytes]] = []
        for name, value in headers:
            if name[0] == ":":
                if name == ":path":
                    path = value
                elif name == ":method":
                    method_name = value
            elif name == "content-type":
                content_type = value
            elif name == "grpc-timeout":
                timeout = value
            elif name == "grpc-encoding":
                encoding = value
            elif name not in RESERVED:
                if name.endswith("-bin"):
                    try:
                        metadata.append((name, base64.b64decode(value + "=" * (-len(value) % 4))))
                    except ValueError:
                        return self._refuse(grpc.StatusCode.INVALID_ARGUMENT, f"metadata {name}: not base64")
                else:
                    metadata.append((name, value))
        self.encoding = encoding or "identity"
        if method_name != "POST":
            return self._refuse_http(b"405", f"gRPC calls are POSTs, received {method_name or 'no method'}")
        if not content_type.startswith("application/grpc"):
            return self._refuse_http(b"415", f"gRPC needs content-type application/grpc, received "
                                             f"{content_type or 'none'}")
        if timeout is not None:
            match = _TIMEOUT.match(timeout)
            if match is None:
                return self._refuse(grpc.StatusCode.INVALID_ARGUMENT, f"grpc-timeout {timeout!r} is not a timeout")
            seconds = int(match[1]) * _UNITS[match[2]]
            self.deadline = time.monotonic() + seconds
            self._timer = asyncio.get_running_loop().call_later(seconds, self._expire)
        self.method = self.calls.methods.get(path)
        if self.method is None:
            return self._refuse(grpc.StatusCode.UNIMPLEMENTED, f"Method not found: {path}")
        self.context = ServicerContext(self, tuple(metadata))
        if self.method.client_streaming:
            self._queue = asyncio.Queue()
            self._start(self._run(self._requests()))
        return None

    def data_received(self, data: memoryview, end_stream: bool) -> None:
        """Messages out of the stream's bytes. One that declares ``BUDGETED_FROM`` bytes or more holds them in
        ``--max-body-bytes-in-flight`` (shared with HTTP's bodies) while it arrives, or is refused at its first five
        bytes when they would pass it, as HTTP refuses a body by its Content-Length."""
        if self._refused or self.ended:
            self.connection.credit(self.stream_id, len(data))
            return
        if self._queue is not None and self._queue.qsize() >= QUEUED_REQUESTS:
            self._withheld += len(data)
        else:
            self.connection.credit(self.stream_id, len(data))
        buffer = self._buffer
        buffer += data
        limit = self.calls.max_message_bytes
        while len(buffer) >= 5:
            compressed, length = _PREFIX.unpack_from(buffer)
            if length > limit:
                return self._refuse(grpc.StatusCode.RESOURCE_EXHAUSTED, f"received message larger than max ({length} "
                                    f"vs. {limit} bytes, --grpc-max-message-bytes)")
            if len(buffer) < 5 + length:
                budget = self.calls.budget
                if budget is not None and length >= BUDGETED_FROM and not self._reserved:
                    if not budget.take(length):
                        if self.calls.on_refused is not None and self.context is not None:
                            self.calls.on_refused(self.method.name if self.method else "", self.context)
                        return self._refuse(grpc.StatusCode.RESOURCE_EXHAUSTED, budget.refusal(length).message)
                    self._reserved = length
                break
            self._release()
            message = bytes(buffer[5:5 + length]) if len(buffer) > 5 + length else bytes(memoryview(buffer)[5:])
            del buffer[:5 + length]
            if compressed and self._queue is None and len(message) > INFLATED_ON_THE_LOOP:
                self._message(Compressed(message))  # inflated off the event loop, once the call runs
                continue
            if compressed:
                try:
                    message = inflate(message, self.encoding, limit)
                except Aborted as refusal:
                    return self._refuse(refusal.code, refusal.details)
            self._message(message)
        return None

    def _message(self, message: bytes | Compressed) -> None:
        assert self.method is not None
        request = message if isinstance(message, Compressed) else self.method.decode(message)
        if self._queue is not None:
            self._queue.put_nowait(request)
        elif self._request is None:
            self._request = request
        else:
            self._refuse(grpc.StatusCode.UNIMPLEMENTED, f"{self.method.name} takes one request message, received "
                         f"a second")

    def end_received(self) -> None:
        if self._refused or self.method is None:
            return
        if self._buffer:
            self._refuse(grpc.StatusCode.INVALID_ARGUMENT, f"the request ended inside a message ({len(self._buffer)} "
                         f"bytes of it)")
        elif self._queue is not None:
            self._queue.put_nowait(END)
        elif self._request is None:
            self._refuse(grpc.StatusCode.UNIMPLEMENTED, f"{self.method.name} takes one request message, received "
                         f"none")
        elif isinstance(self._request, Compressed):
            self._start(self._inflate_and_run(self._request.message))
            self._request = None
        else:
            self._start(self._run(self._request))
            self._request = None

    async def _inflate_and_run(self, message: bytes) -> None:
        assert self.method is not None
        try:
            inflated = await asyncio.to_thread(inflate, message, self.encoding, self.calls.max_message_bytes)
        except Aborted as refusal:
            self._refuse(refusal.code, refusal.details)
            return
        await self._run(self.method.decode(inflated))

    def _release(self) -> None:
        if self._reserved and self.calls.budget is not None:
            self.calls.budget.give(self._reserved)
        self._reserved = 0

    def reset_received(self) -> None:
        self._release()
        self.cancelled = True
        self._finish_timer()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def _expire(self) -> None:
        self.expired = True
        if self.task is not None and not self.task.done():
            self.task.cancel()
        elif self.task is None:
            self._refuse(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    async def _requests(self) -> AsyncIterator[Any]:
        queue = self._queue
        assert queue is not None
        while (request := await queue.get()) is not END:
            if self._withheld and queue.qsize() < QUEUED_REQUESTS:
                self.connection.credit(self.stream_id, self._withheld)
                self._withheld = 0
            yield request

    # -- the answer ----------------------------------------------------------------------------------------------
    def _start(self, work: Any) -> None:
        self.task = asyncio.get_running_loop().create_task(work)
        self.calls.running.add(self.task)
        self.task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        """A cancelled call (whether or not it had begun) is answered here: DEADLINE_EXCEEDED when its deadline
        passed, UNAVAILABLE when the server stops it; nothing when the client cancelled it."""
        self.calls.running.discard(task)
        if task.cancelled():
            if self.expired:
                self._end(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            elif not self.cancelled:
                self._end(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")

    async def _run(self, request: Any) -> None:
        method = self.method
        assert method is not None
        connection, stream = self.connection, self.stream_id
        try:
            if method.server_streaming:
                async for response in method.implementation(request, self.context):
                    self._send(response)
                    await connection.writable(stream)
            else:
                response = await method.implementation(request, self.context)
                self._send(response)
            self._end(grpc.StatusCode.OK, "")
        except Aborted as abort:
            self._end(abort.code, abort.details)
        except Exception as error:
            log.exception("gRPC %s failed", method.path, exc_info=error)
            self._end(grpc.StatusCode.UNKNOWN, f"Unexpected {type(error).__name__}: {error}")
        # cancelled: the task ends cancelled and _done answers

    def _send(self, response: Any) -> None:
        assert self.method is not None
        payload = self.method.encode(response)
        limit = self.calls.max_message_bytes
        if len(payload) > limit:
            raise Aborted(grpc.StatusCode.RESOURCE_EXHAUSTED, f"the response is {len(payload)} bytes, more than the "
                          f"{limit} allowed (--grpc-max-message-bytes)")
        connection = self.connection
        if not self.started:
            self.started = True
            connection.send_headers(self.stream_id, RESPONSE_HEADERS)
        connection.send_data(self.stream_id, _PREFIX.pack(0, len(payload)) + payload)

    def _end(self, code: grpc.StatusCode, details: str) -> None:
        """The final status (the connection resets the stream after it if the client is still sending)."""
        if self.ended:
            return
        self.ended = True
        self._release()
        self._finish_timer()
        trailing = self.context.trailing if self.context is not None else ()
        ok = code == grpc.StatusCode.OK and not trailing
        block = OK_STATUS if ok else status_block(code, details, trailing)
        if not self.started:  # trailers only
            self.started = True
            block = RESPONSE_HEADERS + block
        self.connection.send_headers(self.stream_id, block, end_stream=True)

    def _refuse(self, code: grpc.StatusCode, details: str) -> None:
        """Answers the call with an error before (or instead of) running it."""
        if self._refused:
            return
        self._refused = True
        self._buffer.clear()
        if self.task is not None and not self.task.done():
            self.task.cancel()
            self.cancelled = True
        self._end(code, details)

    def _refuse_http(self, status: bytes, details: str) -> None:
        self._refused = True
        self.started = self.ended = True
        block = hpack.encode([(b":status", status), (b"content-type", b"text/plain")])
        self.connection.send_headers(self.stream_id, block, end_stream=False)
        self.connection.send_data(self.stream_id, details.encode(), end_stream=True)

    def _finish_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class GrpcCalls:
    """The methods served and the calls running, shared by every connection of one server."""

    def __init__(self, methods: list[Method], max_message_bytes: int, budget: BodyBudget | None = None,
                 on_refused: Callable[[str, ServicerContext], None] | None = None) -> None:
        self.methods = {m.path: m for m in methods}
        self.max_message_bytes = max_message_bytes
        self.budget = budget  # --max-body-bytes-in-flight, for messages while they arrive
        self.on_refused = on_refused  # counts and logs a call refused by the budget (method name, its context)
        self.running: set[asyncio.Task[None]] = set()

    def open(self, connection: Http2Connection, stream_id: int, headers: list[tuple[str, str]]) -> GrpcCall:
        return GrpcCall(self, connection, stream_id, headers)
