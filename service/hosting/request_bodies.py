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
on the connection). The app receives the body in one message, as a ``bytearray``. Where the body does not come
this way (no uvloop, or a piece parsed with the headers), httptools' pieces are copied into the buffer: still one
copy. Smaller bodies, and bodies sent in chunks without a declared length, go uvicorn's way.

uvloop treats a protocol as buffered only when it is not an ``asyncio.Protocol`` (``uvloop/handles/stream.pyx``),
and uvicorn's ``HttpToolsProtocol`` is one: hence the wrapper, which hands everything else to the protocol it
wraps. ``tests/service/test_request_bodies.py`` checks that the body still comes the direct way.
"""

from __future__ import annotations

import asyncio
import ctypes
import weakref
from typing import Any

import httptools

from service.hosting.body_budget import declared_length

DIRECT_MIN = 64 * 1024
SCRATCH_BYTES = 64 * 1024

_new_bytearray = ctypes.pythonapi.PyByteArray_FromStringAndSize
_new_bytearray.restype, _new_bytearray.argtypes = ctypes.py_object, (ctypes.c_char_p, ctypes.c_ssize_t)


def unfilled_bytearray(length: int) -> bytearray:
    """A ``bytearray`` whose bytes are not set (``bytearray(n)`` writes n zeros first, a tenth of the event loop's
    CPU on 600 KB bodies); every byte is written before anyone reads it (``RequestBody.receive``)."""
    return _new_bytearray(None, length)  # type: ignore[no-any-return]


class RequestBody:
    """One request's body of declared length, filled in place, handed to the app whole in one message. The
    connection lets go of it then (the request holds it from there), or as soon as the request is answered without
    it (refused early): the rest of such a body is read and dropped, as uvicorn drops it."""

    def __init__(self, length: int, cycle: Any) -> None:
        self.length = length
        self.filled = 0
        self.buffer: bytearray | None = unfilled_bytearray(length)
        self.view: memoryview | None = memoryview(self.buffer)
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
        body, self.view, self.buffer = self.buffer, None, None
        return body if not self.remaining else None

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
            body = RequestBody(length, self.cycle)
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
