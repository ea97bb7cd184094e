"""uvicorn's httptools protocol, with a response's writes coalesced into one ``send()``.

uvicorn writes a response's status line and headers on ``http.response.start`` and its body on
``http.response.body``: two system calls and, over TCP, two segments each waking the client. For small answers
(an inference result is a few hundred bytes) the second send is a measurable share of a request's CPU
(docs/benchmarks.md). Here the transport holds the writes made during one step of the event loop and sends them
together at the end of that step, so a response that is written without waiting in between (every response
nnserve makes) leaves in one ``send()``. Nothing is reordered, and closing flushes first.

Passed to uvicorn with ``http=``, its documented way to choose the protocol class.

``read_whole_bodies``: uvicorn stops reading a connection once 64 KiB of its request body wait for the app, and
reads on when the app asks for more, so a 600 KB picture arrives in ten pieces, each an event-loop round trip and a
copy. Every nnserve endpoint reads its whole body (up to ``--max-body-bytes``) at once anyway; letting that much
wait costs no more memory and took the CPU a 3x224x224 FP32 request costs the server from 0.76 to 0.67 ms
(docs/benchmarks.md). uvicorn's limit is a module constant: pinned range and canary test as for the rest.

``DirectBodyHttpProtocol``, what uvicorn is given: this protocol behind ``request_bodies.DirectBodyProtocol``, which
reads large bodies from the socket straight into one buffer each (see there).

``shutdown``, the drain of one connection when the server stops, loses no request a client has already sent.
uvicorn's closes an idle keep-alive connection at once: a request already on the wire then meets a reset (2 lost
of ~3,000 in five SIGTERM drills under keep-alive load). Here a connection with a request in flight answers it
with ``Connection: close``; an idle one stays open and answers the next request that comes the same way, and is
closed only after ``DRAIN_IDLE_S`` of further silence, and never while bytes wait unread in its socket (a request
arrived, not yet parsed: it is answered first). What no server can know is a request still crossing the network
at the instant an idle connection closes, seconds after the client last sent anything: that is every keep-alive
timeout's race, which clients meet by reconnecting (and are then refused: nothing listens any more). Every request
whose headers arrive after the stop signal is answered with ``Connection: close``, also in the moment before the
server's shutdown reaches its connections (the loop notices the signal on its next tick, up to 0.1 s later, and
the listening sockets close first: a request on an idle connection answered in between kept it open, 1 in ~15
drills).
"""

from __future__ import annotations

import asyncio
import fcntl
import struct
import termios
from typing import Any

import uvicorn.protocols.http.httptools_impl as httptools_impl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service import drain
from service.hosting.request_bodies import DirectBodyProtocol, RequestBodies


def read_whole_bodies(limit: int) -> None:
    """Let up to ``limit`` bytes of a request body wait for the app before reading pauses."""
    current: int = getattr(httptools_impl, "HIGH_WATER_LIMIT")  # noqa: B009 (not re-exported: mypy's view)
    httptools_impl.HIGH_WATER_LIMIT = max(limit, current)  # type: ignore[attr-defined]


class CoalescingTransport:
    """A transport whose ``write()`` calls within one loop step become one write of the real transport."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(p) for p in self._pending)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # everything else: the real transport's
        return getattr(self._transport, name)


DRAIN_IDLE_S = 2.0  # an idle connection's grace, once the server drains, for a request its client may send


def unread_bytes(transport: Any) -> int:
    """Bytes that arrived on the transport's socket and were not read yet (0 when it cannot be told)."""
    sock = transport.get_extra_info("socket")
    try:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0])
    except (OSError, AttributeError, ValueError):
        return 0


class CoalescingHttpToolsProtocol(HttpToolsProtocol, RequestBodies):
    draining = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def shutdown(self) -> None:
        """Called by uvicorn's server for each open connection when it stops accepting new ones."""
        self.draining = True
        if self._idle():
            self.loop.call_later(DRAIN_IDLE_S, self._close_if_still_idle)
        else:
            self.cycle.keep_alive = False  # answered with Connection: close, then closed

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is None or self.cycle is before:  # an upgrade: uvicorn made no cycle
            return
        if self.draining or drain.draining():  # from the signal on, not only once the server's shutdown begins
            self.cycle.keep_alive = False
        self.give_body_buffer(httptools_impl.HIGH_WATER_LIMIT)  # type: ignore[attr-defined]

    def on_body(self, body: bytes) -> None:
        if not self.body_piece(body):
            super().on_body(body)

    def _close_if_still_idle(self) -> None:
        if self.transport.is_closing() or not self._idle():
            return  # closed already, or a request came: its response closes the connection
        if unread_bytes(self.transport):
            self.loop.call_later(0.05, self._close_if_still_idle)  # a request arrived: read and answer it first
            return
        self.transport.close()


class DirectBodyHttpProtocol(DirectBodyProtocol):
    """The protocol uvicorn makes for each connection (``http=``), with its arguments."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(CoalescingHttpToolsProtocol(**kwargs))
