"""A raw HTTP/2 client for the tests of nnserve's own gRPC front: frames written and read by hand on a real
socket, so the tests can send what grpcio never would (Huffman-coded headers, tiny flow-control windows, a
request dribbled a few bytes at a time, garbage) and see every frame that comes back."""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

from service.hosting.http2.connection import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PREFACE,
    SETTINGS,
    frame,
)
from service.hosting.http2.hpack import HUFFMAN_LENGTHS, Decoder, encode_integer


def huffman_encode(text: bytes) -> bytes:
    """The canonical code from the lengths (RFC 7541, Appendix B), padded with ones."""
    codes: dict[int, tuple[int, int]] = {}
    code, previous = -1, 0
    for symbol in sorted(range(257), key=lambda s: (HUFFMAN_LENGTHS[s], s)):
        code = (code + 1) << (HUFFMAN_LENGTHS[symbol] - previous)
        previous = HUFFMAN_LENGTHS[symbol]
        codes[symbol] = (code, previous)
    bits = value = 0
    for byte in text:
        c, n = codes[byte]
        value, bits = (value << n) | c, bits + n
    pad = -bits % 8
    value, bits = (value << pad) | ((1 << pad) - 1), bits + pad
    return value.to_bytes(bits // 8, "big")


def header_block(headers: list[tuple[str, str]], huffman: bool = False, indexed: bool = False) -> bytes:
    """Literals; with ``huffman`` their strings Huffman-coded; with ``indexed`` added to the server's dynamic
    table (0x40) rather than left out of it."""
    out = b""
    for name, value in headers:
        out += b"\x40" if indexed else b"\x00"
        for text in (name.encode(), value.encode()):
            raw = huffman_encode(text) if huffman else text
            out += encode_integer(len(raw), 7, 0x80 if huffman else 0) + raw
    return out


def grpc_headers(path: str, **extra: str) -> list[tuple[str, str]]:
    return [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
            ("content-type", "application/grpc"), ("te", "trailers"), *extra.items()]


def message(payload: bytes) -> bytes:
    return struct.pack(">BI", 0, len(payload)) + payload


def data_frames(stream_id: int, body: bytes, end_stream: bool = False) -> bytes:
    """``body`` as DATA frames of at most 16 KiB, the last one ending the stream if asked."""
    pieces = [body[i:i + 16384] for i in range(0, len(body), 16384)] or [b""]
    return b"".join(frame(DATA, END_STREAM if end_stream and i == len(pieces) - 1 else 0, stream_id, piece)
                    for i, piece in enumerate(pieces))


@dataclass
class Answer:
    headers: list[list[tuple[str, str]]] = field(default_factory=list)
    data: bytes = b""
    data_frames: int = 0

    def header(self, name: str) -> str | None:
        return next((v for block in self.headers for k, v in block if k == name), None)


class H2Client:
    def __init__(self, target: str, settings: bytes = b"") -> None:
        host, port = target.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = Decoder()
        self.buffer = b""
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, settings))

    def send(self, data: bytes, piece: int = 0) -> None:
        if not piece:
            self.sock.sendall(data)
            return
        for i in range(0, len(data), piece):
            self.sock.sendall(data[i:i + piece])
            time.sleep(0.0005)

    def call(self, stream_id: int, headers: list[tuple[str, str]], body: bytes, huffman: bool = False) -> bytes:
        """HEADERS (and CONTINUATIONs past 16 KiB), then the body as DATA frames, the last ending the stream."""
        block = header_block(headers, huffman)
        chunks = [block[i:i + 16384] for i in range(0, len(block), 16384)]
        frames = [frame(HEADERS if i == 0 else CONTINUATION, END_HEADERS if i == len(chunks) - 1 else 0, stream_id,
                        chunk) for i, chunk in enumerate(chunks)]
        return b"".join(frames) + data_frames(stream_id, body, end_stream=True)

    def read_frame(self) -> tuple[int, int, int, bytes]:
        while len(self.buffer) < 9 or len(self.buffer) < 9 + int.from_bytes(self.buffer[:3], "big"):
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buffer += chunk
        length = int.from_bytes(self.buffer[:3], "big")
        kind, flags, stream_id = self.buffer[3], self.buffer[4], struct.unpack(">I", self.buffer[5:9])[0]
        payload, self.buffer = self.buffer[9:9 + length], self.buffer[9 + length:]
        return kind, flags, stream_id, payload

    def answer(self, stream_id: int, until_data: int | None = None) -> Answer:
        """Frames of ``stream_id`` until it ends (or, with ``until_data``, until that much DATA came)."""
        answer = Answer()
        block = b""
        while True:
            kind, flags, sid, payload = self.read_frame()
            if kind == GOAWAY:
                raise ConnectionError(f"GOAWAY {payload!r}")
            if sid != stream_id:
                continue
            if kind in (HEADERS, CONTINUATION):
                block += payload
                if flags & END_HEADERS:
                    answer.headers.append(self.decoder.decode(block))
                    block = b""
            elif kind == DATA:
                answer.data += payload
                answer.data_frames += 1
            if flags & END_STREAM and kind in (HEADERS, DATA):
                return answer
            if until_data is not None and len(answer.data) >= until_data:
                return answer

    def close(self) -> None:
        self.sock.close()
