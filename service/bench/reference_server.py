"""The reference ``nnserve bench --reference`` measures nnserve against: the same models behind the simplest
FastAPI endpoint that calls onnxruntime in its event loop, one process, no batching, no queue, no metrics, no
access log, onnxruntime's own session defaults (its threads spin) but for the graph optimisation nnserve picks.
It speaks the Open Inference Protocol at the same path with nnserve's own codec, so decoding and encoding cost
the same on both sides and the difference is what serving adds (batcher, hand-offs, metrics, logging).

    python -m service.bench.reference_server --repository models --port 8100 --models mlp,resnet
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response

from service.bench.helper_process import helper_server


def build_app(repository: Path, models: list[str]) -> FastAPI:
    import onnxruntime as ort

    from service.dataplane import InferResponse
    from service.protocols.oip_codec import HEADER, decode_request, encode_response
    from service.repository import MODEL_FILE, list_versions

    sessions: dict[str, tuple[ort.InferenceSession, list[str], int]] = {}
    for name in models:
        version = list_versions(repository / name)[-1]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(repository / name / str(version) / MODEL_FILE), options,
                                       providers=["CPUExecutionProvider"])
        sessions[name] = (session, [o.name for o in session.get_outputs()], version)

    app = FastAPI()

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> Response:
        session, outputs, version = sessions[name]
        decoded = decode_request(await request.body(), request.headers.get(HEADER), name, None)
        results = session.run(None, decoded.request.inputs)
        content, header_length = encode_response(
            InferResponse(name, version, dict(zip(outputs, results, strict=True)), decoded.request.id), decoded)
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(header_length)})

    return app


@contextlib.contextmanager
def reference_server(repository: Path, models: list[str], port: int) -> Iterator[tuple[str, int]]:
    """Start it on 127.0.0.1:``port``; yield (url, pid) once it answers; stop it."""
    url = f"http://127.0.0.1:{port}"
    with helper_server("service.bench.reference_server", ["--repository", str(repository), "--port", str(port),
                                                           "--models", ",".join(models)],
                       f"{url}/v2/health/ready", timeout_s=60) as pid:
        yield url, pid


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--models", required=True)
    args = parser.parse_args()
    app = build_app(args.repository, [m for m in args.models.split(",") if m])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, loop="auto",
                http="auto")


if __name__ == "__main__":
    main()
