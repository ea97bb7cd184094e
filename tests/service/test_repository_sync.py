"""The repository on disk drives what is served (a real app, its poll every 0.2 s): versions published under
traffic go live with no request failing; broken, half-written, changed and removed versions; version policies;
and the repository API's orders, which the poll respects."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.repository import publish
from service.settings import Settings
from tests.service.conftest import metric_value, running_app

AUTH = {"Authorization": "Bearer secret"}
IMAGE = [[0] * 28] * 28
POLL = {"repository_poll_s": 0.2, "admin_token": "secret"}


@pytest.fixture
def repository(models_dir: Path, tmp_path: Path) -> Path:
    """A copy of the MLP's newest version as version 1."""
    newest = max((p for p in (models_dir / "mlp").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    shutil.copytree(newest, tmp_path / "models" / "mlp" / "1")
    return tmp_path / "models"


def copy_of(source: Path, change: dict[str, Any] | None = None) -> Any:
    """A ``prepare`` for ``publish``: the files of ``source``, its config.json updated with ``change``."""
    def prepare(folder: Path, version: int) -> None:
        for path in source.iterdir():
            shutil.copy(path, folder / path.name)
        if change:
            config = json.loads((folder / "config.json").read_text())
            (folder / "config.json").write_text(json.dumps({**config, **change}))
    return prepare


async def versions_answering(client: httpx.AsyncClient, model: str = "mlp") -> set[int]:
    response = await client.get(f"/v2/models/{model}")
    return {int(v) for v in response.json().get("versions", [])} if response.status_code == 200 else set()


async def until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.05)


async def test_a_version_published_under_traffic_goes_live_and_no_request_fails(repository: Path) -> None:
    async with running_app(repository, **POLL) as client:
        stop = asyncio.Event()
        answers: list[tuple[int, int | None]] = []

        async def post_continuously() -> None:
            while not stop.is_set():
                response = await client.post("/predict", json={"model": "mlp", "inputs": [IMAGE]})
                answers.append((response.status_code, response.json().get("version")))

        clients = [asyncio.ensure_future(post_continuously()) for _ in range(8)]
        await asyncio.sleep(0.3)
        published = time.monotonic()
        assert publish(repository, "mlp", copy_of(repository / "mlp" / "1")) == 2
        await until(lambda: _newest_answered(answers, 2))
        live_after = time.monotonic() - published
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*clients)
        assert await versions_answering(client) == {2}  # latest:1: version 1 was retired
        metrics = (await client.get("/metrics")).text
    assert 'nnserve_model_ready{model="mlp",version="2"} 1.0' in metrics
    assert 'version="1"' not in "".join(line for line in metrics.splitlines()  # the retired one's series left
                                        if line.startswith(("nnserve_model_ready", "nnserve_queue_capacity")))
    assert {code for code, _ in answers} == {200}, [a for a in answers if a[0] != 200][:5]
    assert live_after < 0.2 + 2.0  # the poll interval plus loading and warming
    first_new = next(i for i, (_, v) in enumerate(answers) if v == 2)
    assert all(v == 2 for _, v in answers[first_new + 8:])  # once swapped, only the new one answers


async def _newest_answered(answers: list[tuple[int, int | None]], version: int) -> bool:
    return any(v == version for _, v in answers[-8:])


async def test_a_broken_version_is_reported_and_the_serving_one_stays(repository: Path) -> None:
    async with running_app(repository, **POLL) as client:
        def wrong_hash(folder: Path, version: int) -> None:
            copy_of(repository / "mlp" / "1")(folder, version)
            (folder / "model.onnx").write_bytes((folder / "model.onnx").read_bytes()[:-10])
        publish(repository, "mlp", wrong_hash)

        async def reported() -> bool:
            index = (await client.post("/v2/repository/index", headers=AUTH)).json()
            return any(r["version"] == "2" and "sha256" in r.get("reason", "") for r in index)

        await until(reported)
        predict = await client.post("/predict", json={"model": "mlp", "inputs": [IMAGE]})
        assert predict.status_code == 200 and predict.json()["version"] == 1
        await asyncio.sleep(0.5)  # more polls: the same files are not tried again
        metrics = (await client.get("/metrics")).text
        assert metric_value(metrics, "nnserve_model_load_failures_total", model="mlp", version="2") == 1
        assert metric_value(metrics, "nnserve_model_load_failed", model="mlp", version="2") == 1
        index = (await client.post("/v2/repository/index", headers=AUTH)).json()
        assert {(r["version"], r["state"]) for r in index} == {("1", "READY"), ("2", "UNAVAILABLE")}


async def test_a_version_copied_in_file_by_file_loads_once_complete(repository: Path) -> None:
    """Not the publishing protocol (a rename), but what someone with ``cp`` does: the half-written version fails,
    is reported, and loads once its files are whole (they changed, so it is tried again)."""
    async with running_app(repository, **POLL) as client:
        target = repository / "mlp" / "2"
        target.mkdir()
        whole = (repository / "mlp" / "1" / "model.onnx").read_bytes()
        shutil.copy(repository / "mlp" / "1" / "config.json", target / "config.json")
        (target / "model.onnx").write_bytes(whole[: len(whole) // 2])

        async def failed() -> bool:
            index = (await client.post("/v2/repository/index", headers=AUTH)).json()
            return any(r["version"] == "2" and "sha256" in r.get("reason", "") for r in index)

        await until(failed)
        assert await versions_answering(client) == {1}
        assert 'nnserve_model_load_failed{model="mlp",version="2"} 1.0' in (await client.get("/metrics")).text
        (target / "model.onnx").write_bytes(whole)
        await until(lambda: _serves(client, {2}))
        assert "nnserve_model_load_failed{" not in (await client.get("/metrics")).text  # resolved: gone


async def _serves(client: httpx.AsyncClient, versions: set[int], model: str = "mlp") -> bool:
    return await versions_answering(client, model) == versions


async def test_removed_versions_and_models_leave_and_a_changed_version_is_reloaded(repository: Path) -> None:
    publish(repository, "mlp", copy_of(repository / "mlp" / "1"))
    shutil.copytree(repository / "mlp", repository / "other")
    for path in (repository / "other").glob("*/config.json"):
        path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "name"}))
    async with running_app(repository, version_policy="latest:2", **POLL) as client:
        assert await versions_answering(client) == {1, 2}
        shutil.rmtree(repository / "mlp" / "2")
        await until(lambda: _serves(client, {1}))
        config = json.loads((repository / "mlp" / "1" / "config.json").read_text())
        config["classification"]["labels"] = [f"class {i}" for i in range(10)]
        (repository / "mlp" / "1" / "config.json").write_text(json.dumps(config))

        async def relabelled() -> bool:
            response = await client.post("/predict", json={"model": "mlp", "inputs": [IMAGE]})
            return bool(response.json()["predictions"][0]["label"].startswith("class "))

        await until(relabelled)
        shutil.rmtree(repository / "other")
        await until(lambda: _serves(client, set(), "other"))
        assert (await client.get("/v2/models/other")).status_code == 404



@pytest.mark.parametrize("policy,settings,served", [
    (None, {}, {3}),
    (None, {"version_policy": "latest:2"}, {2, 3}),
    ({"all": {}}, {}, {1, 2, 3}),
    ({"latest": {"num_versions": 2}}, {"version_policy": "all"}, {2, 3}),  # the newest config wins over the flag
    ({"specific": {"versions": [1, 3]}}, {}, {1, 3}),
    ({"all": {}}, {"model_versions": {"mlp": [2]}}, {2}),  # --model mlp:2 pins over both
], ids=["default", "flag", "config-all", "config-over-flag", "config-specific", "pin"])
async def test_version_policies(repository: Path, policy: dict[str, Any] | None, settings: dict[str, Any],
                                served: set[int]) -> None:
    publish(repository, "mlp", copy_of(repository / "mlp" / "1"))
    publish(repository, "mlp", copy_of(repository / "mlp" / "1", {"version_policy": policy} if policy else None))
    async with running_app(repository, **settings) as client:
        assert await versions_answering(client) == served
        newest = await client.post("/predict", json={"model": "mlp", "inputs": [IMAGE]})
        assert newest.json()["version"] == max(served)  # no version asked: the newest served
        if 1 in served:
            older = await client.post("/v2/models/mlp/versions/1/infer", json={"inputs": [
                {"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}]})
            assert older.status_code == 200 and older.json()["model_version"] == "1"


async def test_a_bad_version_policy_is_the_versions_own_failure(repository: Path) -> None:
    publish(repository, "mlp", copy_of(repository / "mlp" / "1", {"version_policy": {"newest": 2}}))
    async with running_app(repository, **POLL) as client:
        assert await versions_answering(client) == {1}  # version 2's config is wrong: the older one stands in
        index = (await client.post("/v2/repository/index", headers=AUTH)).json()
        assert any(r["version"] == "2" and "version_policy.newest" in r["reason"] for r in index)
    with pytest.raises(ValueError, match="expected latest, latest:N, all or specific"):
        Settings(version_policy="newest")


async def test_the_poll_respects_the_apis_orders(repository: Path) -> None:
    async with running_app(repository, **POLL) as client:
        assert (await client.post("/v2/repository/models/mlp/unload", headers=AUTH)).status_code == 200
        publish(repository, "mlp", copy_of(repository / "mlp" / "1"))
        await asyncio.sleep(0.6)  # three polls
        assert (await client.get("/v2/models/mlp/ready")).status_code != 200  # unloaded stays unloaded
        index = (await client.post("/v2/repository/index", headers=AUTH)).json()
        assert all(r["reason"] == "unloaded through the repository API" for r in index)
        pinned = await client.post("/v2/repository/models/mlp/load", headers=AUTH,
                                   json={"parameters": {"versions": [1]}})
        assert pinned.status_code == 200 and pinned.json()["versions"] == ["1"]
        publish(repository, "mlp", copy_of(repository / "mlp" / "1"))
        await asyncio.sleep(0.6)
        assert await versions_answering(client) == {1}  # pinned through the API: new versions wait
        assert (await client.post("/v2/repository/models/mlp/load", headers=AUTH)).json()["versions"] == ["3"]
