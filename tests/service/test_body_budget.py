"""Admission by bytes (a real app): request bodies held at once are bounded per process; what does not fit gets
429 naming the limit before its body is kept, with or without a declared length, and the budget comes back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson

from tests.service.conftest import metric_value, running_app

MB = 1024 * 1024
ROWS = 250  # 250 MLP rows of FP32: a 780 KB JSON body


def oip_json(rows: int = ROWS) -> bytes:
    return orjson.dumps({"inputs": [{"name": "image", "shape": [rows, 1, 28, 28], "datatype": "FP32",
                                     "data": [0.0] * (784 * rows)}]})


async def slowly(body: bytes, gate: asyncio.Event) -> AsyncIterator[bytes]:
    """The first half at once, the rest once ``gate`` opens: the request holds its place meanwhile."""
    yield body[: len(body) // 2]
    await gate.wait()
    yield body[len(body) // 2:]


async def test_bodies_over_the_budget_are_refused_and_the_budget_comes_back(models_dir: Path) -> None:
    body = oip_json()
    settings = {"max_body_bytes": 2 * MB, "max_body_bytes_in_flight": 5 * MB // 2, "models": ["mlp"]}
    async with running_app(models_dir, **settings) as client:
        app = client._transport.app  # type: ignore[attr-defined]
        gate = asyncio.Event()
        headers = {"content-length": str(len(body))}
        held = [asyncio.ensure_future(client.post("/v2/models/mlp/infer", content=slowly(body, gate),
                                                  headers=headers)) for _ in range(3)]  # 3 x 0.78 MB fit in 2.5 MB
        await asyncio.sleep(0.2)
        refused = await client.post("/v2/models/mlp/infer", content=body)  # a fourth does not
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json()["code"] == "overloaded" and "--max-body-bytes-in-flight" in refused.json()["error"]
        assert f"{len(body):,} bytes" in refused.json()["error"] and f"{5 * MB // 2:,}" in refused.json()["error"]

        never = asyncio.Event()
        chunked = await client.post("/v2/models/mlp/infer", content=slowly(body, never))  # no length: piecewise
        assert chunked.status_code == 429 and "the next piece of this one" in chunked.json()["error"]
        gate.set()
        answers = await asyncio.gather(*held)
        assert [r.status_code for r in answers] == [200, 200, 200], answers[0].text
        assert app.state.body_budget.held == 0
        assert (await client.post("/v2/models/mlp/infer", content=body)).status_code == 200  # room again
        metrics = (await client.get("/metrics")).text
    assert metric_value(metrics, "nnserve_rejections_total", reason="overload") == 2
    assert metric_value(metrics, "nnserve_requests_total", outcome="overload", code="429") == 2
