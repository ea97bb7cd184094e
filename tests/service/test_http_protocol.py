"""A response's writes leave in one send: counted as TCP data segments on a real loopback connection."""

from __future__ import annotations

import asyncio
import socket
import struct

from service.hosting.http_protocol import CoalescingTransport

TCPI_DATA_SEGS_IN = 152  # offset of tcpi_data_segs_in in Linux's struct tcp_info (linux/tcp.h, since 4.6)


def data_segments_received(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int(struct.unpack_from("I", info, TCPI_DATA_SEGS_IN)[0])


class Echo(asyncio.Protocol):
    """Answers each received chunk with three writes, the way uvicorn writes a head, a body, then nothing."""

    coalesce = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | CoalescingTransport = \
            CoalescingTransport(transport, loop) if self.coalesce else transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
        self.transport.write(b"pong")
        if data == b"bye":
            self.transport.close()


async def exchange(coalesce: bool, rounds: int = 20) -> tuple[int, bytes]:
    protocol = type("P", (Echo,), {"coalesce": coalesce})
    server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    client.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        received = b""
        for _ in range(rounds):
            await loop.sock_sendall(client, b"ping")
            answer = b""
            while not answer.endswith(b"pong"):
                answer += await loop.sock_recv(client, 4096)
            received = answer
        segments = data_segments_received(client)
        await loop.sock_sendall(client, b"bye")
        last = b""
        while chunk := await loop.sock_recv(client, 4096):  # closing flushes what was written first
            last += chunk
        assert last.endswith(b"pong")
        return segments, received
    finally:
        client.close()
        server.close()
        await server.wait_closed()


async def test_two_writes_in_one_loop_step_leave_as_one_segment() -> None:
    segments, answer = await exchange(coalesce=True)
    assert answer == b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\npong"
    assert segments == 20
    plain, _ = await exchange(coalesce=False)
    assert plain >= 30  # without it each write is its own segment (the check above can tell)
