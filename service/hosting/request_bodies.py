"""Large request bodies read into one buffer, from the socket straight into it where the event loop allows.

uvicorn gathers a body into a ``bytearray`` from the pieces httptools hands it and gives the app ``bytes(...)`` of
it. With uvloop a 600 KB picture was then copied five times in the process: libuv's read buffer into a ``bytes``
per read, httptools' slice of it, the growing ``bytearray`` (moved as it grows), ``bytes(...)`` of that, and the
batch. Copies were a third of the event loop's CPU on a 3x224x224 model (docs/benchmarks.md).

Here a body of ``DIRECT_MIN`` bytes or more whose length is declared gets one buffer of that length when its
headers are parsed (``RequestBody``). ``DirectBodyProtocol``, the protocol uvicorn is given, is an
``asyncio.BufferedProtocol``: the event loop reads into a buffer it hands out. Until a body's headers are parsed
that is a small scratch buffer, fed to httptools; from then on it is the body's own buffer, so the rest of the
body goes from the kernel into it with no copy, and httptools is skipped (a fresh parser takes the next request
on the connection). The app receives the body in one message, as a ``bytearray``. Its binary tensors start on a
64-byte boundary (``ALIGNMENT``), where OIP's ``Inference-Header-Content-Length`` says they start: onnxruntime
copies an input whose elements are not aligned to their size before every run (a 600 KB picture at an odd offset
took 165 instead of 27 us to run through a model that reads it once), and any header length is legal. Where the
body does not come this way (no uvloop, or a piece parsed with the headers), httptools' pieces are copied into the
buffer: still one copy. Smaller bodies, and bodies sent in chunks without a declared length, go uvicorn's way.

uvloop treats a protocol as buffered only when it is not an ``asyncio.Protocol`` (``uvloop/handles/stream.pyx``),
and uvicorn's ``HttpToolsProtocol`` is one: hence the wrapper, which hands everything else to the protocol it
wraps. ``tests/service/test_request_bodies.py`` checks that the body still comes the direct way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import weakref
from typing import Any

import httptools

from service.hosting.body_budget import declared_length
from service.protocols.oip_codec import HEADER

INFERENCE_HEADER = HEADER.encode()

DIRECT_MIN = 64 * 1024
SCRATCH_BYTES = 64 * 1024
ALIGNMENT = 64  # where a body's binary tensors start: a cache line, a multiple of every datatype's size

_new_bytearray = ctypes.pythonapi.PyByteArray_FromStringAndSize
_new_bytearray.restype, _new_bytearray.argtypes = ctypes.py_object, (ctypes.c_char_p, ctypes.c_ssize_t)
_bytearray_address = ctypes.pythonapi.PyByteArray_AsString
_bytearray_address.restype, _bytearray_address.argtypes = ctypes.c_void_p, (ctypes.py_object,)


def unfilled_bytearray(length: int) -> bytearray:
    """A ``bytearray`` whose bytes are not set (``bytearray(n)`` writes n zeros first, a tenth of the event loop's
    CPU on 600 KB bodies); every byte is written before anyone reads it (``RequestBody.receive``)."""
    return _new_bytearray(None, length)  # type: ignore[no-any-return]


def trimmed(buffer: bytearray, start: int, length: int) -> bytearray:
    """``buffer[start:start + length]``, in place where nothing else holds the buffer: a ``bytearray`` trims its
    end and advances its start without moving its bytes, so the body stays where it was read (and aligned)."""
    try:
        del buffer[start + length:]
        del buffer[:start]
    except BufferError:  # still exported somewhere: a copy, right but no longer aligned where it was
        return buffer[start:start + length]
    return buffer


class RequestBody:
    """One request's body of declared length, filled in place, handed to the app whole in one message. The
    connection lets go of it then (the request holds it from there), or as soon as the request is answered without
    it (refused early): the rest of such a body is read and dropped, as uvicorn drops it."""

    def __init__(self, length: int, cycle: Any, aligned_at: int = 0) -> None:
        """``aligned_at``: the offset in the body that starts on an ``ALIGNMENT`` boundary."""
        self.length = length
        self.filled = 0
        self.buffer: bytearray | None = unfilled_bytearray(length + ALIGNMENT - 1)
        self._start = -(_bytearray_address(self.buffer) + aligned_at) % ALIGNMENT
        self.view: memoryview | None = memoryview(self.buffer)[self._start:self._start + length]
        self._cycle = weakref.ref(cycle)  # the cycle holds this: no reference cycle to wait for the collector

    @property
    def remaining(self) -> int:
        return self.length - self.filled

    def wanted(self) -> bool:
        """Whether the bytes still to come are kept."""
        if self.view is not None:
            cycle = self._cycle()
            if cycle is None or cycle.response_complete:
                self.view = self.buffer = None
        return self.view is not None

    def add(self, piece: bytes) -> None:
        """A piece httptools parsed (never more than the declared length: it frames the body by it)."""
        end = self.filled + len(piece)
        if self.wanted():
            self.view[self.filled:end] = piece  # type: ignore[index]
        self.filled = end

    def take(self) -> bytearray | None:
        """The whole body, once (None if it is not whole: unset bytes are never handed out)."""
        body, view, self.view, self.buffer = self.buffer, self.view, None, None
        if body is None or view is None or self.remaining:
            return None
        with contextlib.suppress(BufferError):  # (a buffer taken from the view itself: trimmed() copies)
            view.release()  # the buffer's export: then it can be trimmed in place
        return trimmed(body, self._start, self.length)

    async def receive(self) -> Any:
        """uvicorn's ``receive`` (it wakes when the body is complete or the client is gone), with the buffer."""
        cycle = self._cycle()
        if cycle is None:
            return {"type": "http.disconnect"}
        message = await type(cycle).receive(cycle)  # the class's: the instance's is this one
        if message["type"] == "http.request":
            body = self.take()
            if body is None:
                return {"type": "http.disconnect"}
            message["body"], message["more_body"] = body, False
        return message


class DirectBodyProtocol(asyncio.BufferedProtocol):
    """The connection's protocol for the event loop: reads into the current body's buffer, else into a scratch
    buffer fed to the HTTP protocol it wraps (which does everything else)."""

    direct_bytes = 0  # bytes read straight into bodies, by every connection of the process (tests read it)

    def __init__(self, http: Any) -> None:
        self.http = http
        self._scratch = memoryview(bytearray(SCRATCH_BYTES))
        self._body: RequestBody | None = None

    def connection_made(self, transport: Any) -> None:
        self.http.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.http.connection_lost(exc)

    def pause_writing(self) -> None:
        self.http.pause_writing()

    def resume_writing(self) -> None:
        self.http.resume_writing()

    def eof_received(self) -> bool | None:
        return self.http.eof_received()  # type: ignore[no-any-return]

    def get_buffer(self, sizehint: int) -> memoryview:
        body = self._body
        if body is None:
            return self._scratch
        if body.wanted():
            return body.view[body.filled:]  # type: ignore[index]
        return self._scratch[:body.remaining]  # read to be dropped: never past this body

    def buffer_updated(self, nbytes: int) -> None:
        body = self._body
        if body is None:
            self.http.data_received(self._scratch[:nbytes])  # httptools copies what it keeps
            body = self.http.body_to_read()
            self._body = body if body is not None and body.remaining else None
            return
        body.filled += nbytes
        if body.view is not None:
            DirectBodyProtocol.direct_bytes += nbytes
        if not body.remaining:
            self._body = None
            self.http.body_read()


def binary_part_offset(headers: list[tuple[bytes, bytes]]) -> int:
    """Where an OIP body's binary tensors start (its ``Inference-Header-Content-Length``), else 0."""
    for name, value in headers:
        if name == INFERENCE_HEADER:
            return int(value) if value.isdigit() and len(value) < 12 else 0
    return 0


class RequestBodies:
    """What the HTTP protocol (``http_protocol.CoalescingHttpToolsProtocol``) mixes in: a ``RequestBody`` for each
    request whose body is large and of declared length, filled by the parser's pieces or read straight into."""

    cycle: Any  # these are uvicorn's HttpToolsProtocol's
    headers: list[tuple[bytes, bytes]]
    parser: Any
    on_message_complete: Any

    def give_body_buffer(self, limit: int) -> None:
        """Called when a request's headers are parsed and its cycle made."""
        length = declared_length(self.headers)  # with a Transfer-Encoding too, httptools refuses the request
        if length is not None and DIRECT_MIN <= length <= limit:
            body = RequestBody(length, self.cycle, binary_part_offset(self.headers))
            self.cycle.nnserve_body = body
            self.cycle.receive = body.receive  # uvicorn's run_asgi looks it up when it starts

    def body_piece(self, piece: bytes) -> bool:
        """Takes a parsed piece of a body given a buffer; False for other bodies (uvicorn's way)."""
        body: RequestBody | None = getattr(self.cycle, "nnserve_body", None)
        if body is None:
            return False
        body.add(piece)
        return True

    def body_to_read(self) -> RequestBody | None:
        """The body whose rest the socket can be read straight into, if any."""
        return getattr(self.cycle, "nnserve_body", None) if self.cycle is not None else None

    def body_read(self) -> None:
        """The body came whole past the parser: a fresh parser takes the next request, and the body's message is
        complete."""
        self.parser = httptools.HttpRequestParser(self)
        self.on_message_complete()
