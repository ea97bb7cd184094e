"""Against a real ``nnserve serve`` process on 127.0.0.1: the unmodified tritonclient, overload and recovery,
and a SIGTERM that drains in-flight requests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from service.hosting.launcher import serve_subprocess
from tests.e2e.server_process import nnserve_process


@pytest.fixture(scope="module")
def server(models_dir: Path) -> Any:
    with nnserve_process(models_dir, "--no-access-log") as (url, _):
        yield url


def test_tritonclient_speaks_to_nnserve(server: str, fashion_images: np.ndarray, fashion_labels: np.ndarray) -> None:
    client = triton.InferenceServerClient(server.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("resnet") and client.is_model_ready("lstm")
    metadata = client.get_model_metadata("resnet")
    assert metadata["inputs"][0]["name"] == "image" and metadata["platform"] == "onnxruntime_onnx"
    config = client.get_model_config("resnet")
    assert config["max_batch_size"] == 64 and config["input"][0]["dims"] == [1, 28, 28]
    x = ((fashion_images[:16] / 255.0 - 0.286) / 0.353).astype(np.float32)[:, None]
    results = {}
    for binary in (True, False):
        tensor = triton.InferInput("image", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        output = triton.InferRequestedOutput("probabilities", binary_data=binary)
        results[binary] = client.infer("resnet", [tensor], outputs=[output]).as_numpy("probabilities")
    np.testing.assert_allclose(results[True], results[False], atol=1e-6)
    assert (results[True].argmax(1) == fashion_labels[:16]).mean() >= 0.8
    sequence = np.random.default_rng(0).normal(size=(2, 10, 12)).astype(np.float32)
    inputs = [triton.InferInput("sequence", [2, 10, 12], "FP32"), triton.InferInput("lengths", [2], "INT64")]
    inputs[0].set_data_from_numpy(sequence)
    inputs[1].set_data_from_numpy(np.array([10, 6], np.int64))
    assert client.infer("lstm", inputs).as_numpy("probabilities").shape == (2, 9)
    with pytest.raises(Exception, match="expected shape"):
        bad = triton.InferInput("image", [1, 28, 28], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 28, 28), np.float32))
        client.infer("resnet", [bad])


async def _flood(url: str, requests: int, images: int) -> list[int]:
    body = {"model": "resnet", "inputs": [[[0] * 28] * 28] * images}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        responses = await asyncio.gather(*[client.post("/predict", json=body) for _ in range(requests)],
                                         return_exceptions=True)
    return [r.status_code if isinstance(r, httpx.Response) else -1 for r in responses]


def test_overload_answers_429_then_recovers(models_dir: Path) -> None:
    args = ["--model", "resnet", "--max-queue-size", "64", "--batch-concurrency", "1", "--no-access-log"]
    with nnserve_process(models_dir, *args) as (url, _):
        codes = asyncio.run(_flood(url, requests=48, images=32))
        assert set(codes) <= {200, 429} and codes.count(429) > 0 and codes.count(200) > 0
        response = httpx.post(f"{url}/predict", json={"model": "resnet", "inputs": [[[0] * 28] * 28] * 32})
        assert response.status_code == 429 or response.status_code == 200
        metrics = httpx.get(f"{url}/metrics").text
        assert 'reason="overload"' in metrics
        for _ in range(50):  # the queue drains and the server serves again
            response = httpx.post(f"{url}/predict", json={"model": "resnet", "inputs": [[[0] * 28] * 28]})
            if response.status_code == 200:
                break
        assert response.status_code == 200
        rejected = httpx.post(f"{url}/predict", json={"model": "resnet", "inputs": [[[0] * 28] * 28] * 65})
        # larger than the whole queue: it can never fit, so it is not told to retry (413, naming both numbers)
        assert rejected.status_code == 413 and "retry-after" not in rejected.headers
        assert "65 rows" in rejected.json()["error"] and "64 samples" in rejected.json()["error"]


def test_sigterm_drains_in_flight_requests(models_dir: Path) -> None:
    with serve_subprocess(models_dir, ["--model", "resnet", "--no-access-log"]) as (url, process, log):
        async def scenario() -> list[int]:
            body = {"model": "resnet", "inputs": [[[0] * 28] * 28] * 64}
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                calls = [asyncio.ensure_future(client.post("/predict", json=body)) for _ in range(12)]
                await asyncio.sleep(0.3)  # requests are in flight
                process.send_signal(signal.SIGTERM)
                responses = await asyncio.gather(*calls, return_exceptions=True)
            return [r.status_code if isinstance(r, httpx.Response) else -1 for r in responses]

        codes = asyncio.run(scenario())
        assert codes.count(200) == len(codes), codes
        assert process.wait(30) == 0  # drained: a clean exit, not uvicorn's re-raised signal
        assert "drained and stopped" in log.read_text()


def test_two_workers_share_one_metrics_view(models_dir: Path, tmp_path: Path) -> None:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
    try:
        with nnserve_process(models_dir, "--workers", "2", "--model", "mlp", "--no-access-log") as (url, _):
            body = {"model": "mlp", "inputs": [[[0] * 28] * 28]}
            with httpx.Client(base_url=url) as client:  # new connections spread over both processes
                codes = [httpx.post(f"{url}/predict", json=body).status_code for _ in range(40)]
                assert codes == [200] * 40
                metrics = client.get("/metrics").text
            line = next(x for x in metrics.splitlines()
                        if x.startswith("nnserve_requests_total") and 'model="mlp"' in x and 'code="200"' in x)
            assert float(line.rsplit(" ", 1)[1]) == 40
            assert "nnserve_model_ready" in metrics
            admin = httpx.post(f"{url}/v2/repository/index", headers={"Authorization": "Bearer x"})
            assert admin.status_code in (401, 409)
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


def test_each_response_leaves_in_one_tcp_segment(server: str) -> None:
    """The server's writes are coalesced (service.hosting.http_protocol): head and body of an answer in one send."""
    import orjson

    from tests.service.test_http_protocol import data_segments_received

    host, port = server.removeprefix("http://").split(":")
    body = orjson.dumps({"model": "mlp", "inputs": [[[0] * 28] * 28]})
    request = (b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
               b"content-length: %d\r\n\r\n%s" % (len(body), body))
    probe = b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n"
    with socket.create_connection((host, int(port))) as sock:
        for message, ending in [(request, b"}]}]}"), (probe, b'{"live":true}')] * 10:
            sock.sendall(message)
            answer = b""
            while not answer.endswith(ending):
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 OK"), answer[:200]
        assert data_segments_received(sock) == 20


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _wait_for(condition: Any, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def test_workers_restart_a_killed_one_and_stop_together(models_dir: Path) -> None:
    """--workers 2: the started process serves beside one child; a child killed is replaced; SIGTERM stops all."""
    body = {"model": "mlp", "inputs": [[[0] * 28] * 28]}
    with serve_subprocess(models_dir, ["--workers", "2", "--model", "mlp", "--no-access-log"]) as (url, process, log):
        children = _children(process.pid)
        assert len(children) == 1
        os.kill(children[0], signal.SIGKILL)
        _wait_for(lambda: len(_children(process.pid)) == 1 and _children(process.pid) != children)
        _wait_for(lambda: "Application startup complete" in log.read_text().rsplit("while serving", 1)[-1])
        assert all(httpx.post(f"{url}/predict", json=body).status_code == 200 for _ in range(20))
        replacement = _children(process.pid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    assert f"worker {children[0]} exited with -9 while serving" in log.read_text()
    assert not any(Path(f"/proc/{pid}").exists() for pid in replacement)


def test_workers_die_with_a_killed_server(models_dir: Path) -> None:
    with serve_subprocess(models_dir, ["--workers", "2", "--model", "mlp", "--no-access-log"]) as (_, process, _):
        children = _children(process.pid)
        process.kill()
        process.wait()
        _wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children), timeout=20)


def test_a_worker_that_cannot_start_stops_the_server(models_dir: Path, tmp_path: Path) -> None:
    """Both processes serve; then the model file is damaged and the child killed: its replacement cannot load the
    model (start-up failure, exit 3), and the started process, still healthy itself, stops the server with 3."""
    import shutil

    repository = tmp_path / "models"
    shutil.copytree(models_dir / "mlp", repository / "mlp")
    with serve_subprocess(repository, ["--workers", "2", "--no-access-log"]) as (_, process, log):
        _wait_for(lambda: log.read_text().count("Application startup complete") == 2)
        children = _children(process.pid)
        for model in repository.glob("mlp/*/model.onnx"):
            model.write_bytes(b"not a model")
        os.kill(children[0], signal.SIGKILL)
        assert process.wait(30) == 3  # uvicorn's start-up failure code, not a signal
    text = log.read_text()
    assert f"worker {children[0]} exited with -9 while serving: starting another" in text
    assert "could not start (exit 3): stopping the server" in text.split("while serving", 1)[1]


def test_workers_that_keep_dying_are_restarted_later_and_later(models_dir: Path) -> None:
    """The first replacement starts at once; one that dies soon after starting waits 1 s, the next 2 s."""
    import re
    import time

    with serve_subprocess(models_dir, ["--workers", "2", "--model", "mlp", "--no-access-log"]) as (url, process, log):
        killed: list[tuple[int, float]] = []
        for _ in range(3):
            _wait_for(lambda: log.read_text().count("Application startup complete") == 2 + len(killed))
            child = _children(process.pid)[0]
            os.kill(child, signal.SIGKILL)
            killed.append((child, time.monotonic()))
        _wait_for(lambda: len(_children(process.pid)) == 1 and _children(process.pid)[0] != killed[-1][0])
        replaced = time.monotonic()
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200  # the started process served throughout
    text = log.read_text()
    delays = [re.search(rf"worker {pid} exited with -9 while serving: starting another( in (\d+) s)?", text)
              for pid, _ in killed]
    assert [m and m.group(2) for m in delays] == [None, "1", "2"], text[-3000:]
    assert replaced - killed[-1][1] >= 2.0


def test_workers_share_the_connections(models_dir: Path) -> None:
    """Each process has its own SO_REUSEPORT socket: a burst of 64 connections is spread over both (a shared
    socket can hand all of them to whichever process wakes first)."""
    with serve_subprocess(models_dir, ["--workers", "2", "--model", "mlp", "--no-access-log"]) as (url, process, _):
        host, port = url.removeprefix("http://").split(":")
        pids = [process.pid, *_children(process.pid)]
        _wait_for(lambda: all(_sockets(pid, int(port), "0A") for pid in pids))  # each listens once loaded
        connections = [socket.create_connection((host, int(port))) for _ in range(64)]
        try:
            for sock in connections:  # a request on each, so every connection has been accepted
                sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
            for sock in connections:
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            local_ports = {sock.getsockname()[1] for sock in connections}
            shares = [len(_sockets(pid, int(port), "01") & local_ports) for pid in pids]
        finally:
            for sock in connections:
                sock.close()
    assert sum(shares) == 64 and min(shares) >= 16, shares  # binomial(64, 1/2): below 16 has odds of ~1e-5


def _sockets(pid: int, port: int, state: str) -> set[int]:
    """Remote ports of the TCP sockets in ``state`` (01 established, 0A listening) that process ``pid`` holds on
    local ``port``."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == state and fields[9] in inodes and int(fields[1].split(":")[1], 16) == port:
            found.add(int(fields[2].split(":")[1], 16))
    return found


def test_ctrl_c_in_a_terminal_drains_every_worker(models_dir: Path, tmp_path: Path) -> None:
    """A terminal's Ctrl+C reaches the whole process group; the children must still drain (one SIGINT each, not
    a second one forwarded, which uvicorn takes as "force quit")."""
    import subprocess
    import sys
    import time

    from service.hosting.launcher import free_port

    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers", "2", "--model", "mlp",
             "--repository", str(models_dir), "--no-access-log"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for(lambda: log.read_text().count("Application startup complete") == 2)
            time.sleep(0.5)
            os.killpg(server.pid, signal.SIGINT)
            assert server.wait(30) == 0
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
    assert log.read_text().count("drained and stopped") == 2, log.read_text()[-2000:]


def _threads_reported(url: str) -> int:
    return int(httpx.get(f"{url}/v2/models/mlp").json()["parameters"]["intra_op_threads"])


@pytest.mark.parametrize("cpus", [1, 2])
def test_the_default_server_runs_one_process_per_usable_cpu(models_dir: Path, cpus: int) -> None:
    """No --workers: as many serving processes as the CPUs it may use (here its affinity, set with taskset), the
    cores split among them; --workers 1 still gives one process with every core."""
    import shutil as _shutil

    if cpus > len(os.sched_getaffinity(0)) or _shutil.which("taskset") is None:
        pytest.skip(f"needs taskset and {cpus} CPUs")
    cpu_list = ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[:cpus])
    with serve_subprocess(models_dir, ["--model", "mlp", "--no-access-log"],
                          wrapper=["taskset", "-c", cpu_list]) as (url, process, log):
        _wait_for(lambda: log.read_text().count("Application startup complete") == cpus)
        assert len(_children(process.pid)) == cpus - 1
        assert f"nnserve: {cpus} serving process(es), 1 onnxruntime thread(s) each ({cpus} CPU(s)" in log.read_text()
        assert _threads_reported(url) == 1
    with serve_subprocess(models_dir, ["--model", "mlp", "--no-access-log", "--workers", "1"],
                          wrapper=["taskset", "-c", cpu_list]) as (url, process, _):
        assert _children(process.pid) == [] and _threads_reported(url) == cpus


def _series_sum(metrics: str, name: str, model: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith(name) and f'model="{model}"' in line)


def test_a_lone_request_takes_every_core_and_a_crowd_runs_batched(models_dir: Path, tmp_path: Path) -> None:
    """Two processes, one onnxruntime thread each: requests one at a time run on the lone session (every core,
    threads spinning: service.activity), requests many at once in batches on the batch sessions, and every answer
    is its own request's, equal to the one it got alone."""
    from concurrent.futures import ThreadPoolExecutor

    from service.settings import usable_cpus

    if usable_cpus() < 2:
        pytest.skip("needs two CPUs")
    images = np.random.default_rng(3).random((24, 1, 1, 28, 28), np.float32)

    def infer(client: httpx.Client, image: np.ndarray) -> list[float]:
        body = {"inputs": [{"name": "image", "shape": list(image.shape), "datatype": "FP32",
                            "data": image.ravel().tolist()}]}
        response = client.post("/v2/models/resnet/infer", json=body)
        assert response.status_code == 200, response.text
        return list(response.json()["outputs"][0]["data"])

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
    try:
        with nnserve_process(models_dir, "--workers", "2", "--model", "resnet", "--no-access-log") as (url, _):
            parameters = httpx.get(f"{url}/v2/models/resnet").json()["parameters"]
            assert parameters["intra_op_threads"] == 1 and parameters["lone_request_threads"] == usable_cpus()
            with httpx.Client(base_url=url) as client:
                alone = [infer(client, image) for image in images]
                metrics = client.get("/metrics").text
            lone = _series_sum(metrics, "nnserve_lone_runs_total", "resnet")
            batches = _series_sum(metrics, "nnserve_batch_size_count", "resnet")
            assert lone >= len(images) - 2 and batches == len(images), (lone, batches)

            def crowd(offset: int) -> list[list[float]]:
                with httpx.Client(base_url=url) as client:
                    return [infer(client, images[(offset + i) % len(images)]) for i in range(12)]

            with ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(crowd, range(16)))
            for offset, got in enumerate(answers):
                assert got == [alone[(offset + i) % len(images)] for i in range(12)]
            metrics = httpx.get(f"{url}/metrics").text
            more_lone = _series_sum(metrics, "nnserve_lone_runs_total", "resnet") - lone
            more_batches = _series_sum(metrics, "nnserve_batch_size_count", "resnet") - batches
            assert more_batches > 0 and more_lone < more_batches / 2, (more_lone, more_batches)
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
