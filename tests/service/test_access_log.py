"""One JSON line per request on stdout, with the request id echoed or generated; lines buffered but never lost,
and written in whole-line chunks a pipe keeps atomic."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson
import pytest

from service.hosting.access_log import CHUNK_BYTES, AccessLogWriter, RequestIds
from tests.service.conftest import running_app

ZEROS = [[0] * 28] * 28


async def test_every_model_request_gets_one_json_line(models_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    async with running_app(models_dir, access_log=True) as client:
        echoed = await client.post("/predict", json={"model": "cnn", "inputs": [ZEROS, ZEROS]},
                                   headers={"X-Request-ID": "trace-42"})
        assert echoed.headers["x-request-id"] == "trace-42"
        generated = [await client.post("/v2/models/mlp/infer", json={"inputs": [
            {"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}]})
            for _ in range(3)]
        bad = await client.post("/v2/models/nope/infer", json={"inputs": []})
        await client.get("/v2/health/ready")  # quiet: probes are not logged
    ids = [r.headers["x-request-id"] for r in generated]
    assert len(set(ids)) == 3 and all(len(i) == 22 for i in ids)
    lines = [orjson.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    assert [line["request_id"] for line in lines] == ["trace-42", *ids, bad.headers["x-request-id"]]
    first = lines[0]
    assert (first["path"], first["status"], first["model"], first["version"], first["batch_size"]) == \
        ("/predict", 200, "cnn", 1, 2)
    assert first["latency_ms"] > 0
    assert (lines[-1]["status"], lines[-1]["model"]) == (404, None)


async def test_lines_are_flushed_after_a_short_delay_in_line_aligned_chunks() -> None:
    read_end, write_end = os.pipe()
    writer = AccessLogWriter(fd=write_end, flush_after_s=0.05)
    try:
        writer.write({"n": 0})
        assert not _available(read_end)  # buffered...
        await asyncio.sleep(0.15)
        assert _available(read_end) == b'{"n":0}\n'  # ...and written once the delay passed
        padding = "x" * 200
        for n in range(100):  # about 21 KB: written as it fills, in chunks of whole lines
            writer.write({"n": n, "pad": padding})
        writer.flush()
        data = _available(read_end)
        assert [orjson.loads(line)["n"] for line in data.splitlines()] == list(range(100))
    finally:
        os.close(read_end)
        os.close(write_end)


def test_chunks_never_split_a_line() -> None:
    read_end, write_end = os.pipe()
    writes: list[bytes] = []
    writer = AccessLogWriter(fd=write_end)
    writer._write = writes.append  # type: ignore[method-assign, assignment]  # observe the chunk boundaries
    for n in range(300):
        writer.write({"n": n, "pad": "y" * (n % 50)})
    writer.flush()
    os.close(read_end)
    os.close(write_end)
    assert all(len(chunk) <= CHUNK_BYTES and chunk.endswith(b"\n") for chunk in writes)
    assert [orjson.loads(line)["n"] for chunk in writes for line in chunk.splitlines()] == list(range(300))


def test_request_ids_are_unique_within_and_across_processes() -> None:
    first, second = RequestIds(), RequestIds()
    ids = {first.next() for _ in range(1000)} | {second.next() for _ in range(1000)}
    assert len(ids) == 2000


def _available(fd: int) -> bytes:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 1 << 20)
    except BlockingIOError:
        return b""
