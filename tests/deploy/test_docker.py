"""The serving image, built and run for real (marker ``docker``): built from a local debootstrap base and the
host's wheelhouse, run with host networking only, healthy, answering predictions, and draining in-flight
requests on SIGTERM.

Needs a Docker engine (deploy/start-dockerd.sh starts one with --bridge=none --iptables=false); skipped, with
the reason, where none answers. Containers use ``--network host`` and listen on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.conftest import (
    DEPLOY,
    MODELS,
    REPO,
    VENV_BIN,
    example_input,
    free_port,
    run,
    served_models,
    wait_http,
)

pytestmark = pytest.mark.docker
# NNSERVE_TEST_IMAGE: test an image built elsewhere instead of building nnserve:test here.
PREBUILT = os.environ.get("NNSERVE_TEST_IMAGE")
IMAGE = PREBUILT or "nnserve:test"
UID = "10001"


@pytest.fixture(scope="module")
def docker() -> str:
    from shutil import which

    binary = which("docker")
    if binary is None:
        pytest.skip("no docker client (apt-get install docker.io)")
    probe = subprocess.run([binary, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                           timeout=30)
    if probe.returncode != 0:
        why = probe.stderr.strip()[:200]
        pytest.skip(f"no Docker engine answers (start one: deploy/start-dockerd.sh): {why}")
    return binary


@pytest.fixture(scope="module")
def image(docker: str) -> str:
    """deploy/build-image.sh: base image (built once), wheelhouse, then a cached docker build."""
    if not served_models():
        pytest.skip(f"no model in {MODELS} to bake into the image")
    if PREBUILT:
        run([docker, "image", "inspect", PREBUILT])
        return PREBUILT
    base_present = run([docker, "image", "inspect", "nnserve-base:bookworm"], check=False).returncode == 0
    if not base_present and subprocess.run(["which", "debootstrap"], capture_output=True).returncode != 0:
        pytest.skip("no nnserve-base:bookworm image and no debootstrap to build it (deploy/ci-setup.sh)")
    start = time.monotonic()
    env = {**os.environ, "PIP": str(VENV_BIN / "pip"), "MODELS": str(MODELS)}
    run(["nice", "-n", "15", str(DEPLOY / "build-image.sh"), IMAGE], timeout=900, env=env, cwd=REPO)
    print(f"image {IMAGE} built in {time.monotonic() - start:.1f}s")
    return IMAGE


def test_image_is_slim_non_root_and_configured(docker: str, image: str) -> None:
    (config,) = json.loads(run([docker, "image", "inspect", image]).stdout)
    cfg = config["Config"]
    assert cfg["User"] == f"{UID}:{UID}"
    # Exec form, so SIGTERM reaches nnserve itself.
    assert cfg["Entrypoint"] == ["nnserve"] and cfg["Cmd"] == ["serve"]
    assert cfg["Healthcheck"]["Test"] == ["CMD", "python3", "/usr/local/bin/nnserve-healthcheck"]
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["NNSERVE_REPOSITORY"] == "/models" and env["NNSERVE_PORT"] == "8000"
    assert env["NNSERVE_HOST"] == "0.0.0.0" and env["NNSERVE_PROVIDERS"] == "cpu"
    assert {"8000/tcp", "8001/tcp"} <= set(cfg["ExposedPorts"]) and env["NNSERVE_GRPC_PORT"] == "8001"
    script = ("for t in gcc cc g++ make; do command -v $t && exit 3; done; "
              "python3 -c 'import torch' 2>/dev/null && exit 4; "
              "python3 -c 'import onnxruntime, fastapi, service'; "
              "cd /models && find . -name config.json | sort")
    proc = run([docker, "run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c", script])
    baked = proc.stdout.split()
    expected = sorted(f"./{p.relative_to(MODELS)}" for p in MODELS.glob("*/*/config.json"))
    assert baked == expected, "the image must carry the committed model repository"
    size_mb = config["Size"] / 1e6
    print(f"image size {size_mb:.0f} MB")
    assert size_mb < 600, f"image is {size_mb:.0f} MB"


@dataclass
class Container:
    name: str
    url: str
    grpc_target: str


def grpc_serving(target: str) -> bool:
    """grpc.health.v1 says the whole server is SERVING."""
    import grpc

    from service.protocols.grpc_proto import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    return bool(status.status == health_pb2.HealthCheckResponse.SERVING)


@pytest.fixture
def container(docker: str, image: str) -> Iterator[Container]:
    port, grpc_port = free_port(), free_port()
    name = f"nnserve-test-{uuid.uuid4().hex[:8]}"
    run([docker, "run", "-d", "--name", name, "--network", "host",
         "-e", "NNSERVE_HOST=127.0.0.1", "-e", f"NNSERVE_PORT={port}", "-e", f"NNSERVE_GRPC_PORT={grpc_port}",
         "-e", "NNSERVE_INTRA_OP_THREADS=1",
         "--health-interval=1s", "--health-start-period=120s", "--cpus=2", "--memory=2g", image])
    try:
        yield Container(name, f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}")
    finally:
        logs = run([docker, "logs", "--tail", "40", name], check=False)
        print(f"--- {name} log tail ---\n{logs.stdout}{logs.stderr}")
        run([docker, "rm", "-f", name], check=False)


def _health(docker: str, name: str) -> str:
    return run([docker, "inspect", "-f", "{{.State.Health.Status}}", name]).stdout.strip()


def _wait_healthy(docker: str, name: str, deadline_s: float = 120) -> float:
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        status = _health(docker, name)
        if status == "healthy":
            return time.monotonic() - start
        running = run([docker, "inspect", "-f", "{{.State.Running}}", name]).stdout.strip()
        assert running == "true", f"container exited while {status}"
        time.sleep(0.5)
    raise AssertionError(f"{name} not healthy within {deadline_s}s (last: {_health(docker, name)})")


@dataclass
class Outcome:
    start: float
    end: float
    status: int | None  # None: no HTTP response
    error: str = ""


def _heaviest_model() -> tuple[str, dict[str, Any]]:
    sizes = {p.parent.parent.name: p.stat().st_size for p in MODELS.glob("*/*/model.onnx")}
    models = served_models()
    name = max(models, key=lambda n: sizes.get(n, 0))
    return name, models[name]


def _load(url: str, body: bytes, stop_at: float, stopped: threading.Event,
          out: list[Outcome], lock: threading.Lock) -> None:
    """Send requests one after the other, each on a new connection, until the server refuses or time is up."""
    headers = {"Content-Type": "application/json"}
    with httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        while time.monotonic() < stop_at:
            start = time.monotonic()
            try:
                response = client.post(f"{url}/predict", content=body, headers=headers)
                outcome = Outcome(start, time.monotonic(), response.status_code)
            except httpx.HTTPError as exc:
                outcome = Outcome(start, time.monotonic(), None, f"{type(exc).__name__}: {exc}")
            with lock:
                out.append(outcome)
            if outcome.status is None and stopped.is_set():
                return


def test_container_is_healthy_predicts_and_drains_on_sigterm(docker: str, container: Container) -> None:
    healthy_after = _wait_healthy(docker, container.name)
    print(f"healthy {healthy_after:.1f}s after start")
    wait_http(f"{container.url}/v2/health/live", 5)
    user = run([docker, "exec", container.name, "id", "-u"]).stdout.strip()
    assert user == UID
    for name, manifest in served_models().items():
        body = {"model": name, "inputs": [example_input(manifest)]}
        response = httpx.post(f"{container.url}/predict", json=body, timeout=30)
        assert response.status_code == 200, f"{name}: {response.status_code} {response.text[:300]}"
        assert response.json()["predictions"], response.text[:300]
    assert grpc_serving(container.grpc_target), "the image serves gRPC too"

    # Load: 8 clients posting 32-sample batches to the slowest model; SIGTERM after 1.5 s of it.
    name, manifest = _heaviest_model()
    inputs = [example_input(manifest, float(i)) for i in range(32)]
    load_body = json.dumps({"model": name, "inputs": inputs}).encode()
    outcomes: list[Outcome] = []
    lock, stopped = threading.Lock(), threading.Event()
    stop_at = time.monotonic() + 30
    threads = [threading.Thread(target=_load, args=(container.url, load_body, stop_at, stopped, outcomes, lock))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    sigterm_at = time.monotonic()
    run([docker, "kill", "--signal", "TERM", container.name])
    signalled_at = time.monotonic()  # the signal has been delivered once `docker kill` returns
    stopped.set()
    exit_code = run([docker, "wait", container.name], timeout=60).stdout.strip()
    exited_at = time.monotonic()
    for thread in threads:
        thread.join(timeout=35)

    # Every request sent before the signal must be answered 200: those still in flight when it arrived are
    # drained. After it, the server stops accepting: a request sent then may be refused, reset before the
    # server read it, or answered 503; never a 5xx error, and none of that may happen before the signal.
    before = [o for o in outcomes if o.start < sigterm_at]
    after = [o for o in outcomes if o.start >= sigterm_at]
    lost = [o for o in before if o.status != 200]
    drained = [o for o in before if o.status == 200 and o.end > signalled_at]
    failed = [o for o in after if o.status is not None and o.status not in (200, 503)]
    not_served = [o for o in after if o.status != 200]
    print(f"{len(before)} requests sent before SIGTERM, all answered: {not lost}; {len(drained)} of them "
          f"in flight when it arrived ({(signalled_at - sigterm_at) * 1e3:.0f} ms after sending); "
          f"{len(after)} sent after it, {len(not_served)} not served "
          f"({sorted({o.error.split(':')[0] or str(o.status) for o in not_served})}); "
          f"exit {exit_code} {exited_at - sigterm_at:.2f} s after SIGTERM")
    assert not lost, f"requests sent before SIGTERM lost at shutdown: {lost[:5]}"
    assert not failed, f"requests failed with an error status during shutdown: {failed[:5]}"
    assert drained, "no request was in flight when SIGTERM arrived: the drain was not exercised"
    assert exit_code == "0", f"nnserve exited {exit_code} on SIGTERM"


def test_compose_builds_the_image(docker: str, image: str) -> None:
    """`docker-compose build nnserve` (host-network override: build without network) on the local base.

    Builds only; `up` is not run here: the Prometheus and Grafana images cannot be pulled on this machine.
    """
    from shutil import which

    compose = which("docker-compose")
    if compose is None:
        pytest.skip("no docker-compose (deploy/ci-setup.sh)")
    ignore = REPO / ".dockerignore"
    if not ignore.exists() or "*" not in ignore.read_text().split():
        pytest.skip("no whitelist .dockerignore at the repository root (see deploy/README.md): the compose "
                    "build would send .venv and data to the engine")
    env = {**os.environ, "NNSERVE_BASE_IMAGE": "nnserve-base:bookworm",
           "NNSERVE_IMAGE": "nnserve:compose-test"}
    run(["nice", "-n", "15", compose, "-f", str(REPO / "docker-compose.yml"), "-f",
         str(DEPLOY / "compose.hostnet.yml"), "build", "nnserve"], timeout=600, env=env, cwd=REPO)
    (config,) = json.loads(run([docker, "image", "inspect", "nnserve:compose-test"]).stdout)
    assert config["Config"]["Entrypoint"] == ["nnserve"]


def test_compose_runs_nnserve_on_the_host_network(docker: str, image: str, tmp_path: Path) -> None:
    """`docker-compose up nnserve` with the host-network override, on the image built above: the compose
    service definition (environment, model volume, health check, limits) really serves.

    docker-compose v1 refuses published ports on the host network (v2 ignores them), and an override cannot
    remove list entries, so the resolved configuration is run without its `ports:`. With every service on
    `network_mode: host`, docker-compose creates no network (checked below).
    """
    from shutil import which

    compose = which("docker-compose")
    if compose is None:
        pytest.skip("no docker-compose (deploy/ci-setup.sh)")
    port, grpc_port = free_port(), free_port()
    project = f"nnserve-test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "NNSERVE_IMAGE": image, "NNSERVE_HOST_PORT": str(port),
           "NNSERVE_GRPC_HOST_PORT": str(grpc_port),
           "NNSERVE_MODELS_DIR": str(MODELS), "NNSERVE_LOG_LEVEL": "warning"}
    files = ["-f", str(REPO / "docker-compose.yml"), "-f", str(DEPLOY / "compose.hostnet.yml")]
    resolved = yaml.safe_load(run([compose, *files, "config"], env=env, cwd=REPO).stdout)
    for service in resolved["services"].values():
        service.pop("ports", None)
    (tmp_path / "compose.yml").write_text(yaml.safe_dump(resolved))
    base = [compose, "-p", project, "-f", str(tmp_path / "compose.yml")]
    networks_before = run([docker, "network", "ls", "-q"]).stdout.split()
    try:
        run([*base, "up", "-d", "--no-build", "nnserve"], env=env, cwd=REPO, timeout=120)
        (container_id,) = run([*base, "ps", "-q", "nnserve"], env=env, cwd=REPO).stdout.split()
        healthy_after = _wait_healthy(docker, container_id, deadline_s=120)
        print(f"compose nnserve healthy after {healthy_after:.1f}s")
        name, manifest = next(iter(served_models().items()))
        body = {"model": name, "inputs": [example_input(manifest)]}
        response = httpx.post(f"http://127.0.0.1:{port}/predict", json=body, timeout=30)
        assert response.status_code == 200, response.text[:300]
        assert grpc_serving(f"127.0.0.1:{grpc_port}")
        mounts = json.loads(run([docker, "inspect", "-f", "{{json .Mounts}}", container_id]).stdout)
        assert [(m["Destination"], m["RW"]) for m in mounts] == [("/models", False)], mounts
        limits = json.loads(run([docker, "inspect", "-f", "{{json .HostConfig}}", container_id]).stdout)
        assert (limits["NanoCpus"], limits["Memory"]) == (2 * 10**9, 2 * 2**30), "deploy.resources.limits"
        assert limits["RestartPolicy"]["Name"] == "unless-stopped"
        assert run([docker, "network", "ls", "-q"]).stdout.split() == networks_before
    finally:
        logs = run([*base, "logs", "--no-color", "--tail", "30"], env=env, cwd=REPO, check=False)
        print(f"--- compose logs ---\n{logs.stdout}{logs.stderr}")
        down = run([*base, "down", "--timeout", "35"], env=env, cwd=REPO, timeout=120, check=False)
        print(down.stdout, down.stderr)
