"""An HTTP/2 server connection (RFC 9113) on asyncio's protocol layer, as much as gRPC needs and a client may send:
the preface and SETTINGS, HEADERS with CONTINUATION and padding, DATA, flow control both ways, PING, RST_STREAM,
WINDOW_UPDATE, GOAWAY (both ways), and a bound on concurrent streams. Cleartext only (h2c with prior knowledge, as
gRPC clients speak it).

What a stream carries is not this module's business: each new stream is handed to ``open_stream``, which returns a
``StreamHandler``; the connection feeds it data and tells it when the client ends or resets the stream (or the
connection resets it, or goes). The handler answers with ``send_headers`` / ``send_data`` / ``reset``, and credits
the bytes it has consumed (``credit``): a stream's window only reopens as its handler keeps up. Outbound DATA
waits, in order with what follows it, until the client's windows allow it; ``writable`` lets a streaming sender
wait for that. Once a stream's last frame is out while the client is still sending, the stream is reset with
NO_ERROR (RFC 9113, 8.1), and frames that still arrive for it are ignored.

Against floods: reading pauses while the socket's write buffer is full (PINGs and SETTINGS that are not read back
cannot pile up), header blocks and decoded header lists are bounded, and so is every stream's buffered input."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Callable
from typing import Protocol, cast

from service.hosting.http2 import hpack
from service.hosting.http2.hpack import Decoder, HeaderListTooLarge, HpackError

log = logging.getLogger("nnserve")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
# error codes
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x5, 0x6, 0x7, 0x8, 0x9
ENHANCE_YOUR_CALM = 0xB
# settings
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 0x1, 0x2, 0x3, 0x4, 0x5
MAX_HEADER_LIST_SIZE = 0x6

DEFAULT_WINDOW = 65_535
DEFAULT_FRAME_SIZE = 16_384
MAX_WINDOW = 2**31 - 1
STREAM_WINDOW = 4 * 1024 * 1024  # what each stream may send before its handler credits it
CONNECTION_WINDOW = 16 * 1024 * 1024
MAX_HEADER_BLOCK = 64 * 1024  # a header block (with its CONTINUATIONs) larger than this ends the connection
REMEMBERED_RESETS = 1024  # streams reset lately, whose late frames are ignored

_FRAME_HEAD = struct.Struct(">HBBBI")
_TOO_LARGE = hpack.encode([(b":status", b"431")])


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _FRAME_HEAD.pack(n >> 8, n & 0xFF, kind, flags, stream_id) + payload


class Http2Error(Exception):
    """Ends the connection with GOAWAY(code)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class StreamHandler(Protocol):
    def data_received(self, data: memoryview, end_stream: bool) -> None: ...  # the view lives for the call only
    def end_received(self) -> None: ...
    def reset_received(self) -> None: ...  # by the client or the connection, or the connection went away


class Stream:
    __slots__ = ("closed_local", "handler", "id", "outbox", "recv_credit", "remote_ended", "send_window", "waiter")

    def __init__(self, stream_id: int, send_window: int) -> None:
        self.id = stream_id
        self.send_window = send_window
        self.recv_credit = 0  # bytes consumed by the handler not yet credited back with WINDOW_UPDATE
        self.remote_ended = False
        self.closed_local = False
        self.outbox: deque[tuple[int, int, memoryview | bytes]] = deque()  # (kind, flags, payload) waiting
        self.handler: StreamHandler | None = None
        self.waiter: asyncio.Future[None] | None = None  # a sender waiting for the outbox to empty


OpenStream = Callable[["Http2Connection", int, list[tuple[str, str]]], StreamHandler]


class Http2Connection(asyncio.Protocol):
    def __init__(self, open_stream: OpenStream, *, max_concurrent_streams: int = 1000,
                 on_close: Callable[[Http2Connection], None] | None = None) -> None:
        self.open_stream = open_stream
        self.on_close = on_close
        self.max_streams = max_concurrent_streams
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.streams: dict[int, Stream] = {}
        self.last_stream_id = 0
        self.going_away = False
        self.closed = False
        self._buffer = bytearray()
        self._preface = False
        self._decoder = Decoder()
        self._headers: tuple[int, int, bytearray] | None = None  # (stream, flags, block) awaiting CONTINUATION
        self._peer_window = DEFAULT_WINDOW  # the connection's send window
        self._peer_stream_window = DEFAULT_WINDOW  # the initial send window of each stream
        self._peer_frame_size = DEFAULT_FRAME_SIZE
        self._recv_credit = 0
        self._out: list[bytes | memoryview] = []
        self._reset: dict[int, None] = {}  # streams reset lately (ordered: the oldest are forgotten first)
        self._write_paused = False
        self._drained: list[asyncio.Future[None]] = []
        self._flush_scheduled = False

    # -- asyncio ------------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            host, port = peer[0], peer[1]
            self.peer = f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
        settings = struct.pack(">HIHIHIHI", MAX_CONCURRENT_STREAMS, self.max_streams, INITIAL_WINDOW_SIZE,
                               STREAM_WINDOW, ENABLE_PUSH, 0, MAX_HEADER_LIST_SIZE, hpack.MAX_HEADER_LIST)
        self.transport.write(frame(SETTINGS, 0, 0, settings) +
                             frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", CONNECTION_WINDOW - DEFAULT_WINDOW)))

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self._buffer:
            self._buffer += data
            view = memoryview(self._buffer)
        else:
            view = memoryview(data)
        used = 0
        try:
            used = self._frames(view)
        except Http2Error as error:
            view.release()
            self.close(error.code, str(error))
            return
        except Exception as error:  # a bug here must not leave the connection half-processed
            view.release()
            log.exception("HTTP/2 connection from %s failed", self.peer, exc_info=error)
            self.close(INTERNAL_ERROR, "internal error")
            return
        rest = len(view) - used
        view.release()
        if self._buffer:
            del self._buffer[:used]
        elif rest:
            self._buffer = bytearray(data[used:])
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for stream in list(self.streams.values()):
            self._forget(stream)
            if stream.handler is not None:
                stream.handler.reset_received()
        self.streams.clear()
        self._wake_drained()
        if self.on_close is not None:
            self.on_close(self)

    def pause_writing(self) -> None:
        """The client is not reading what we send: stop reading what it sends, so that nothing it asks for (PING
        answers, SETTINGS acknowledgements, responses) can pile up here."""
        self._write_paused = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        self._wake_drained()

    def _wake_drained(self) -> None:
        for waiter in self._drained:
            if not waiter.done():
                waiter.set_result(None)
        self._drained.clear()

    async def writable(self, stream_id: int) -> None:
        """Waits until what the stream has sent is out of the connection's hands (the client's windows allowed it
        and the socket took it), or the stream is gone: a streaming sender's back-pressure."""
        stream = self.streams.get(stream_id)
        if stream is not None and stream.outbox:
            stream.waiter = asyncio.get_running_loop().create_future()
            await stream.waiter
        if self._write_paused and not self.closed:
            waiter = asyncio.get_running_loop().create_future()
            self._drained.append(waiter)
            await waiter

    def credit(self, stream_id: int, size: int) -> None:
        """The stream's handler has consumed ``size`` more bytes: the client may send that much more."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_ended or not size:
            return
        stream.recv_credit += size
        if stream.recv_credit >= STREAM_WINDOW // 4:
            self._out.append(frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", stream.recv_credit)))
            stream.recv_credit = 0
            self._schedule_flush()

    # -- frames in ----------------------------------------------------------------------------------------------
    def _frames(self, view: memoryview) -> int:
        pos = 0
        if not self._preface:
            if len(view) < len(PREFACE):
                if bytes(view) != PREFACE[:len(view)]:
                    raise Http2Error(PROTOCOL_ERROR, "not an HTTP/2 connection preface (gRPC needs HTTP/2)")
                return 0
            if bytes(view[:len(PREFACE)]) != PREFACE:
                raise Http2Error(PROTOCOL_ERROR, "not an HTTP/2 connection preface (gRPC needs HTTP/2)")
            self._preface = True
            pos = len(PREFACE)
        end = len(view)
        while end - pos >= 9 and not self.closed:
            high, low, kind, flags, stream_id = _FRAME_HEAD.unpack_from(view, pos)
            length = (high << 8) | low
            if length > DEFAULT_FRAME_SIZE:
                raise Http2Error(FRAME_SIZE_ERROR, f"a frame of {length} bytes exceeds the {DEFAULT_FRAME_SIZE} "
                                                   f"allowed")
            if end - pos - 9 < length:
                break
            payload = view[pos + 9:pos + 9 + length]
            pos += 9 + length
            stream_id &= 0x7FFFFFFF
            if self._headers is not None and kind != CONTINUATION:
                raise Http2Error(PROTOCOL_ERROR, "a header block was interrupted by another frame")
            if kind == DATA:
                self._data(stream_id, flags, payload)
            elif kind == HEADERS:
                self._headers_frame(stream_id, flags, payload)
            elif kind == CONTINUATION:
                self._continuation(stream_id, flags, payload)
            elif kind == SETTINGS:
                self._settings(stream_id, flags, payload)
            elif kind == WINDOW_UPDATE:
                self._window_update(stream_id, payload)
            elif kind == PING:
                if stream_id or length != 8:
                    raise Http2Error(PROTOCOL_ERROR if stream_id else FRAME_SIZE_ERROR, "a malformed PING")
                if not flags & ACK:
                    self._out.append(frame(PING, ACK, 0, bytes(payload)))
            elif kind == RST_STREAM:
                self._rst(stream_id, payload)
            elif kind == GOAWAY:
                if stream_id:
                    raise Http2Error(PROTOCOL_ERROR, "GOAWAY on a stream")
            elif kind == PRIORITY:
                if not stream_id or length != 5:
                    raise Http2Error(PROTOCOL_ERROR, "a malformed PRIORITY frame")
            elif kind == PUSH_PROMISE:
                raise Http2Error(PROTOCOL_ERROR, "a client may not push")
            # frames of unknown types are ignored (RFC 9113, 4.1)
        return pos

    @staticmethod
    def _unpadded(flags: int, payload: memoryview, extra: int = 0) -> memoryview:
        if flags & PADDED:
            if not payload:
                raise Http2Error(PROTOCOL_ERROR, "a padded frame without its pad length")
            pad = payload[0]
            if pad + 1 + extra > len(payload):
                raise Http2Error(PROTOCOL_ERROR, "padding longer than the frame")
            return payload[1 + extra:len(payload) - pad]
        if extra > len(payload):
            raise Http2Error(FRAME_SIZE_ERROR, "a HEADERS frame too short for its priority fields")
        return payload[extra:]

    def _headers_frame(self, stream_id: int, flags: int, payload: memoryview) -> None:
        if stream_id == 0 or stream_id % 2 == 0:
            raise Http2Error(PROTOCOL_ERROR, f"HEADERS on stream {stream_id}, which a client cannot open")
        block = self._unpadded(flags, payload, 5 if flags & PRIORITY_FLAG else 0)
        if flags & END_HEADERS:
            self._header_block(stream_id, flags, bytes(block))
        else:
            self._headers = (stream_id, flags, bytearray(block))

    def _continuation(self, stream_id: int, flags: int, payload: memoryview) -> None:
        if self._headers is None or self._headers[0] != stream_id:
            raise Http2Error(PROTOCOL_ERROR, "a CONTINUATION that continues nothing")
        block = self._headers[2]
        block += payload
        if len(block) > MAX_HEADER_BLOCK:
            raise Http2Error(ENHANCE_YOUR_CALM, f"a header block over {MAX_HEADER_BLOCK} bytes")
        if flags & END_HEADERS:
            first_flags = self._headers[1]
            self._headers = None
            self._header_block(stream_id, first_flags, bytes(block))

    def _header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        too_large = False
        try:  # decoded whatever becomes of the stream: the table must stay in step with the client's
            headers = self._decoder.decode(block)
        except HpackError as error:
            raise Http2Error(COMPRESSION_ERROR, str(error)) from error
        except HeaderListTooLarge:
            headers, too_large = [], True
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers from the client end its stream
            if stream.remote_ended:
                self._stream_error(stream, STREAM_CLOSED)
            elif not flags & END_STREAM:
                self._stream_error(stream, PROTOCOL_ERROR)
            else:
                self._remote_end(stream)
            return
        if stream_id <= self.last_stream_id:
            if stream_id in self._reset:
                return  # a stream we reset, whose client had not heard yet
            raise Http2Error(STREAM_CLOSED, f"HEADERS on closed stream {stream_id}")
        self.last_stream_id = stream_id
        if self.going_away or len(self.streams) >= self.max_streams:
            self._send_reset(stream_id, REFUSED_STREAM)
            return
        stream = Stream(stream_id, self._peer_stream_window)
        self.streams[stream_id] = stream
        if flags & END_STREAM:
            stream.remote_ended = True
        if too_large:  # 431, as HTTP answers a header list over its limit
            self.send_headers(stream_id, _TOO_LARGE, end_stream=True)
            return
        if any(not name or name != name.lower() for name, _ in headers):
            self._stream_error(stream, PROTOCOL_ERROR)  # RFC 9113, 8.2.1: malformed
            return
        def begin() -> None:
            handler = stream.handler = self.open_stream(self, stream_id, headers)
            if stream.remote_ended:
                handler.end_received()

        if self._guarded(stream, begin):
            self._maybe_close(stream)

    def _guarded(self, stream: Stream, callback: Callable[[], None]) -> bool:
        """Runs a handler's callback: one that fails ends its stream (INTERNAL_ERROR), not the connection."""
        try:
            callback()
        except Exception as error:
            log.exception("HTTP/2 stream %d from %s failed", stream.id, self.peer, exc_info=error)
            self._stream_error(stream, INTERNAL_ERROR)
            return False
        return True

    def _data(self, stream_id: int, flags: int, payload: memoryview) -> None:
        size = len(payload)
        self._recv_credit += size
        if self._recv_credit >= CONNECTION_WINDOW // 4:
            self._out.append(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self._recv_credit)))
            self._recv_credit = 0
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id == 0 or stream_id > self.last_stream_id:
                raise Http2Error(PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            if stream_id not in self._reset:
                self._send_reset(stream_id, STREAM_CLOSED)
            return
        if stream.remote_ended:
            self._stream_error(stream, STREAM_CLOSED)
            return
        data = self._unpadded(flags, payload)
        end = bool(flags & END_STREAM)
        padding = size - len(data)
        if padding:
            self.credit(stream_id, padding)
        if end:
            stream.remote_ended = True
        handler = stream.handler
        if handler is not None:
            def deliver() -> None:
                handler.data_received(data, end)
                if end:
                    handler.end_received()

            if not self._guarded(stream, deliver):
                return
        self._maybe_close(stream)

    def _remote_end(self, stream: Stream) -> None:
        stream.remote_ended = True
        handler = stream.handler
        if handler is None or self._guarded(stream, handler.end_received):
            self._maybe_close(stream)

    def _settings(self, stream_id: int, flags: int, payload: memoryview) -> None:
        if stream_id:
            raise Http2Error(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise Http2Error(FRAME_SIZE_ERROR, "a SETTINGS acknowledgement with a payload")
            return
        if len(payload) % 6:
            raise Http2Error(FRAME_SIZE_ERROR, "a SETTINGS frame whose length is not a multiple of 6")
        for i in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, i)
            if key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise Http2Error(FLOW_CONTROL_ERROR, f"an initial window of {value}")
                delta = value - self._peer_stream_window
                self._peer_stream_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise Http2Error(FLOW_CONTROL_ERROR, f"stream {stream.id}'s window overflowed")
            elif key == MAX_FRAME_SIZE:
                if not DEFAULT_FRAME_SIZE <= value <= 16_777_215:
                    raise Http2Error(PROTOCOL_ERROR, f"a maximum frame size of {value}")
                self._peer_frame_size = value
            elif key == ENABLE_PUSH and value > 1:
                raise Http2Error(PROTOCOL_ERROR, f"ENABLE_PUSH {value}")
            # HEADER_TABLE_SIZE: we never index what we send, so the client's table size does not matter
        self._out.append(frame(SETTINGS, ACK, 0))
        self._send_waiting()

    def _window_update(self, stream_id: int, payload: memoryview) -> None:
        if len(payload) != 4:
            raise Http2Error(FRAME_SIZE_ERROR, "a WINDOW_UPDATE that is not 4 bytes")
        increment = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
        if stream_id == 0:
            if not increment:
                raise Http2Error(PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
            self._peer_window += increment
            if self._peer_window > MAX_WINDOW:
                raise Http2Error(FLOW_CONTROL_ERROR, "the connection's window overflowed")
            self._send_waiting()
            return
        if stream_id > self.last_stream_id:
            raise Http2Error(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if not increment:
            self._stream_error(stream, PROTOCOL_ERROR)
            return
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            self._stream_error(stream, FLOW_CONTROL_ERROR)
            return
        self._send_stream(stream)

    def _rst(self, stream_id: int, payload: memoryview) -> None:
        if stream_id == 0 or len(payload) != 4:
            raise Http2Error(PROTOCOL_ERROR if len(payload) == 4 else FRAME_SIZE_ERROR, "a malformed RST_STREAM")
        if stream_id > self.last_stream_id:
            raise Http2Error(PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            self._forget(stream)
            if stream.handler is not None:
                stream.handler.reset_received()

    # -- frames out ---------------------------------------------------------------------------------------------
    def send_headers(self, stream_id: int, block: bytes, end_stream: bool = False) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.closed_local:
            return
        limit = self._peer_frame_size
        chunks = [block[i:i + limit] for i in range(0, len(block), limit)] or [b""]
        flags = END_STREAM if end_stream else 0
        stream.closed_local = end_stream
        if len(chunks) == 1:
            self._queue(stream, HEADERS, flags | END_HEADERS, chunks[0])
        else:  # a header block must not be interleaved: it goes out (or waits) as one unit
            parts = [frame(HEADERS, flags, stream_id, chunks[0])]
            parts += [frame(CONTINUATION, END_HEADERS if i == len(chunks) - 1 else 0, stream_id, c)
                      for i, c in enumerate(chunks[1:], 1)]
            self._queue(stream, -1, flags, b"".join(parts))

    def send_data(self, stream_id: int, data: bytes | memoryview, end_stream: bool = False) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.closed_local:
            return
        stream.closed_local = end_stream
        self._queue(stream, DATA, END_STREAM if end_stream else 0, data)

    def reset(self, stream_id: int, code: int = CANCEL) -> None:
        """The handler ends its stream: RST_STREAM, nothing more is read or sent on it."""
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            self._forget(stream)
            self._send_reset(stream_id, code)
            self._schedule_flush()

    def _stream_error(self, stream: Stream, code: int) -> None:
        """The connection ends a stream (RFC 9113, 5.4.2) and tells its handler."""
        self.streams.pop(stream.id, None)
        self._forget(stream)
        self._send_reset(stream.id, code)
        if stream.handler is not None:
            stream.handler.reset_received()

    def _send_reset(self, stream_id: int, code: int) -> None:
        self._out.append(frame(RST_STREAM, 0, stream_id, struct.pack(">I", code)))
        self._reset[stream_id] = None
        if len(self._reset) > REMEMBERED_RESETS:
            del self._reset[next(iter(self._reset))]

    def _queue(self, stream: Stream, kind: int, flags: int, payload: bytes | memoryview) -> None:
        stream.outbox.append((kind, flags, payload))
        if len(stream.outbox) == 1:
            self._send_stream(stream)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        """What the streams send in one turn of the event loop leaves in one write."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def _send_stream(self, stream: Stream) -> None:
        """Sends what the stream has waiting, as far as the windows allow."""
        out = self._out
        while stream.outbox:
            kind, flags, payload = stream.outbox[0]
            if kind == HEADERS:
                out.append(frame(HEADERS, flags, stream.id, bytes(payload)))
            elif kind == -1:  # HEADERS + CONTINUATIONs, framed already
                out.append(payload)
            else:
                size = len(payload)
                if size == 0:
                    out.append(frame(DATA, flags, stream.id))
                else:
                    view = memoryview(payload)
                    sent = 0
                    while sent < size and (allowed := min(self._peer_window, stream.send_window)) > 0:
                        n = min(size - sent, allowed, self._peer_frame_size)
                        last = sent + n == size
                        out.append(_FRAME_HEAD.pack(n >> 8, n & 0xFF, DATA, flags if last else 0, stream.id))
                        out.append(view[sent:sent + n])
                        sent += n
                        self._peer_window -= n
                        stream.send_window -= n
                    if sent < size:  # the rest waits for a window (_send_waiting)
                        stream.outbox[0] = (kind, flags, view[sent:])
                        return
            stream.outbox.popleft()
        if stream.waiter is not None and not stream.waiter.done():
            stream.waiter.set_result(None)
        if stream.closed_local and not stream.remote_ended and stream.id in self.streams:
            # our answer is complete while the client still sends: it may stop (RFC 9113, 8.1)
            self.streams.pop(stream.id)
            self._send_reset(stream.id, NO_ERROR)
            return
        self._maybe_close(stream)

    def _send_waiting(self) -> None:
        """A window opened: every stream with output waiting sends what it now may, oldest stream first."""
        for stream in [s for s in self.streams.values() if s.outbox]:
            if stream.id in self.streams:
                self._send_stream(stream)

    def _maybe_close(self, stream: Stream) -> None:
        if stream.remote_ended and stream.closed_local and not stream.outbox:
            self.streams.pop(stream.id, None)

    def _forget(self, stream: Stream) -> None:
        stream.outbox.clear()
        stream.closed_local = True
        if stream.waiter is not None and not stream.waiter.done():
            stream.waiter.set_result(None)

    def flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self.transport is not None and not self.transport.is_closing():
            out, self._out = self._out, []
            self.transport.write(b"".join(out))
        else:
            self._out.clear()

    # -- ending -------------------------------------------------------------------------------------------------
    def goaway(self, code: int = NO_ERROR, message: str = "") -> None:
        """No new streams from now on; those open finish."""
        self.going_away = True
        self._out.append(frame(GOAWAY, 0, 0, struct.pack(">II", self.last_stream_id, code) +
                               message.encode()[:256]))
        self.flush()

    def close(self, code: int = NO_ERROR, message: str = "") -> None:
        if code != NO_ERROR:
            log.info("HTTP/2 connection from %s ended: %s", self.peer, message)
        self.goaway(code, message)
        self.closed = True
        if self.transport is not None:
            self.transport.close()
