"""The ASGI fast path answers the inference routes itself, exactly as the app would, and hands every other
request to the app."""

from __future__ import annotations

from pathlib import Path

import httpx
from starlette.types import Receive, Scope, Send

from service.app import create_app
from service.protocols.hot_routes import InferenceFastPath
from service.settings import Settings

ZEROS = [[0] * 28] * 28


async def test_inference_routes_never_reach_the_router(models_dir: Path) -> None:
    app = create_app(Settings(repository=models_dir, warmup_batch_sizes=[1], access_log=False))
    reached: list[str] = []

    async def router(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    fast = InferenceFastPath(router, app.state.routers)
    transport = httpx.ASGITransport(app=fast)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        ok = await client.post("/predict", json={"model": "mlp", "inputs": [ZEROS]})
        assert ok.status_code == 200 and ok.json()["predictions"][0]["label"]
        versioned = await client.post("/v2/models/mlp/versions/1/infer", json={"inputs": [
            {"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}]})
        assert versioned.status_code == 200 and versioned.json()["model_version"] == "1"
        bad = await client.post("/v2/models/nope/infer", json={"inputs": []})
        assert bad.status_code == 404 and bad.json()["code"] == "model_not_found"
        other = await client.get("/v2/models/mlp")
        assert other.status_code == 204
    assert reached == ["/v2/models/mlp"]
    assert {r.path for r in fast.routes} == {"/predict", "/v2/models/{name}/infer",
                                             "/v2/models/{name}/versions/{model_version}/infer"}
