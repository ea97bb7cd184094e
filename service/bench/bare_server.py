"""The least a Python server can do per HTTP request, for ``nnserve bench --bare``: on uvloop, read the headers,
read the body (``Content-Length`` bytes) from the socket straight into one buffer, answer a fixed ``200 {}``. No
routing, no decoding, no model, no metrics. One process per CPU on one port (``SO_REUSEPORT``), as nnserve's
default. Its CPU per request is the floor under any Python server's on the same requests, kernel included: what
is left between it and nnserve's is what serving does.

    python -m service.bench.bare_server --port 8100 --processes 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from service.bench.helper_process import helper_server

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
HEADERS_MAX = 64 * 1024


class Bare(asyncio.BufferedProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buffer = bytearray(1 << 20)
        self.filled = 0
        self.end = 0  # where the request being read ends, once its headers are read

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buffer)[self.filled:]

    def buffer_updated(self, nbytes: int) -> None:
        self.filled += nbytes
        while True:
            if not self.end:
                head_end = self.buffer.find(b"\r\n\r\n", 0, min(self.filled, HEADERS_MAX))
                if head_end < 0:
                    if self.filled >= HEADERS_MAX:
                        self.transport.close()
                    return
                length = _content_length(bytes(self.buffer[:head_end]))
                if length is None:
                    self.transport.close()
                    return
                self.end = head_end + 4 + length
                if self.end > len(self.buffer):  # a new buffer: the event loop may still hold a view of this one
                    larger = bytearray(self.end)
                    larger[:self.filled] = self.buffer[:self.filled]
                    self.buffer = larger
            if self.filled < self.end:
                return
            self.transport.write(ANSWER)
            rest = self.filled - self.end
            self.buffer[:rest] = self.buffer[self.end:self.filled]
            self.filled, self.end = rest, 0


BODY_MAX = 1 << 31


def _content_length(head: bytes) -> int | None:
    """The declared body length; None if it is not a plain decimal number up to ``BODY_MAX``."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            value = value.strip()
            return int(value) if value.isdigit() and int(value) <= BODY_MAX else None
    return 0


async def _serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Bare, "127.0.0.1", port, reuse_port=True)
    print("listening", flush=True)  # to the first process, which listens once all the others do
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--processes", type=int, default=1, help="this one and as many more, minus one")
    args = parser.parse_args()
    children = [subprocess.Popen([sys.executable, "-m", "service.bench.bare_server", "--port", str(args.port)],
                                 stdout=subprocess.PIPE) for _ in range(args.processes - 1)]
    try:
        for child in children:
            if child.stdout is None or not child.stdout.readline():
                raise RuntimeError("a process of the bare server did not start")
        try:
            import uvloop
        except ImportError:  # uvicorn[standard] brings it where it builds
            asyncio.run(_serve(args.port))
        else:
            uvloop.run(_serve(args.port))
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(timeout=10)


@contextlib.contextmanager
def bare_server(port: int, processes: int) -> Iterator[tuple[str, int]]:
    """Start it on 127.0.0.1:``port``; yield (url, pid of its first process) once every process listens."""
    url = f"http://127.0.0.1:{port}"
    with helper_server("service.bench.bare_server", ["--port", str(port), "--processes", str(processes)],
                       lambda: listening_sockets(port) >= processes, timeout_s=30) as pid:
        yield url, pid


def listening_sockets(port: int) -> int:
    """Sockets listening on ``port`` on this machine, per /proc/net/tcp (one per process with SO_REUSEPORT)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    count += 1
    return count


if __name__ == "__main__":
    main()
