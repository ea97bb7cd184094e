"""``nnserve bench --bare``: the least a Python server can do per request, loaded with the same requests as nnserve,
every one answered; its CPU per request is below nnserve's, and the share of raw onnxruntime such a server could
reach is above nnserve's."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from service.bench.bare_server import bare_server
from service.hosting.launcher import free_port


def test_the_bare_server_reads_each_body_whole_and_answers_each_request() -> None:
    # one connection: bodies back to back on it
    with bare_server(free_port(), processes=2) as (url, _), httpx.Client(base_url=url, timeout=10) as client:
        for size in (0, 5, 70_000, 3_000_000, 17):
            response = client.post("/v2/models/any/infer", content=b"x" * size)
            assert (response.status_code, response.content) == (200, b"{}"), size


def test_the_bare_server_frames_pipelined_and_split_requests_and_drops_a_bad_length() -> None:
    import socket

    answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"

    def request(body: bytes, length: str | None = None) -> bytes:
        return (f"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: {length or len(body)}\r\n\r\n").encode() + body

    def read(sock: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            piece = sock.recv(size - len(data))
            if not piece:
                break
            data += piece
        return data

    with bare_server(free_port(), processes=1) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request(b"a" * 100_000) + request(b"") + request(b"xyz"))  # three at once
            assert read(sock, 3 * len(answer)) == answer * 3
            whole = request(b"b" * 5000)
            cuts = (0, 7, 30, 52, 900, len(whole))  # headers and body cut anywhere, each piece its own read
            for start, end in itertools.pairwise(cuts):
                sock.sendall(whole[start:end])
                time.sleep(0.02)
            assert read(sock, len(answer)) == answer
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request(b"", length="-40"))
            assert read(sock, 1) == b""  # closed, not spinning


def test_bench_bare_reports_the_floor_beside_nnserve(models_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    markdown = tmp_path / "bench.md"
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "bench", "--repository", str(models_dir), "--models", "resnet",
         "--protocols", "v2-binary,grpc", "--concurrency", "8", "--duration", "2", "--warmup", "0.5",
         "--raw-seconds", "0.05", "--samples", "16", "--data-dir", str(data_dir), "--bare",
         "--markdown", str(markdown)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    text = markdown.read_text()
    rows = re.findall(r"^\| resnet \| (\S+) \| 8 \| ([\d,]+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| "
                      r"-?[\d.]+ \| ([\d.]+) \| (\d+)% \| (\d+)% \|$", text, re.MULTILINE)
    assert [r[0] for r in rows] == ["v2-binary"], text  # gRPC has no bare row
    _, rps, errors, bare_server_ms, _, server_ms, _, at_most, served = rows[0]
    assert float(rps.replace(",", "")) > 0 and errors == "0"
    assert 0 < float(bare_server_ms) < float(server_ms)
    assert int(at_most) > int(served)
