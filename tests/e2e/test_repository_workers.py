"""With ``--workers 2`` (real processes on 127.0.0.1), every process follows the same desired state: the
repository API's unload and load take effect in both before the call answers, a published version goes live in
both under traffic with no request failing, and a broken one is refused by each, naming the processes."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx

from service.hosting.launcher import serve_subprocess
from service.repository import publish
from tests.service.test_repository_sync import copy_of

AUTH = {"Authorization": "Bearer secret"}
BODY = {"model": "mlp", "inputs": [[[0] * 28] * 28]}


def fresh(url: str, path: str, **kw: object) -> httpx.Response:
    """On a new connection: the kernel spreads new connections over both processes' sockets."""
    with httpx.Client(base_url=url, timeout=30) as client:
        return client.request("POST" if "json" in kw else "GET", path, **kw)  # type: ignore[arg-type]


def ready_codes(url: str, times: int = 40) -> set[int]:
    return {fresh(url, "/v2/models/mlp/ready").status_code for _ in range(times)}


def test_every_worker_follows_the_api_and_the_repository(models_dir: Path, tmp_path: Path) -> None:
    newest = max((p for p in (models_dir / "mlp").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    repository = tmp_path / "models"
    shutil.copytree(newest, repository / "mlp" / "1")
    args = ["--workers", "2", "--admin-token", "secret", "--repository-poll-s", "0.3", "--no-access-log"]
    with serve_subprocess(repository, args) as (url, _, log):
        deadline = time.monotonic() + 30
        while log.read_text().count("Application startup complete") < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)

        unloaded = httpx.post(f"{url}/v2/repository/models/mlp/unload", headers=AUTH, timeout=60)
        assert unloaded.status_code == 200, unloaded.text
        assert 200 not in ready_codes(url)  # no process still serves it
        loaded = httpx.post(f"{url}/v2/repository/models/mlp/load", headers=AUTH, timeout=60)
        assert loaded.status_code == 200 and loaded.json()["versions"] == ["1"], loaded.text
        assert ready_codes(url) == {200}  # every process serves it again

        answers: list[tuple[int, int | None]] = []
        stop = threading.Event()

        def post_continuously() -> None:
            while not stop.is_set():
                response = fresh(url, "/predict", json=BODY)
                answers.append((response.status_code, response.json().get("version")))

        clients = [threading.Thread(target=post_continuously) for _ in range(8)]
        for thread in clients:
            thread.start()
        time.sleep(0.5)
        publish(repository, "mlp", copy_of(repository / "mlp" / "1"))
        deadline = time.monotonic() + 15
        while not all(v == 2 for _, v in answers[-40:]):  # both processes answer with the new version
            assert time.monotonic() < deadline, answers[-40:]
            time.sleep(0.1)
        stop.set()
        for thread in clients:
            thread.join(30)
        assert {code for code, _ in answers} == {200}, [a for a in answers if a[0] != 200][:5]

        def broken(folder: Path, version: int) -> None:
            copy_of(repository / "mlp" / "1")(folder, version)
            (folder / "model.onnx").write_bytes(b"not a model")

        publish(repository, "mlp", broken)
        refused = httpx.post(f"{url}/v2/repository/models/mlp/load", headers=AUTH, timeout=60)
        assert refused.status_code == 400 and refused.json()["code"] == "model_load_failed"
        assert refused.json()["error"].count("process ") == 2 and "sha256" in refused.json()["error"]
        assert {fresh(url, "/predict", json=BODY).json()["version"] for _ in range(20)} == {2}  # still serving
