"""``create_app(settings)``: the FastAPI app. Its lifespan loads and warms every model, then opens for requests;
on shutdown it stops accepting, drains each batcher, and exits. No module-level app: build one per settings."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from service.dataplane import DataPlane
from service.hosting.access_log import AccessLogMiddleware, AccessLogWriter
from service.hosting.body_budget import BodyAdmission, BodyBudget
from service.hosting.grpc_server import start_grpc, stop_grpc
from service.hosting.memory import MemoryTrimmer, keep_freed_memory, release_free_memory
from service.metrics import ServiceMetrics
from service.model_views import server_version
from service.protocols import info_http, oip_http, predict_http, repository_http, shared_memory_http
from service.protocols.hot_routes import InferenceFastPath
from service.protocols.http_errors import install_error_handlers
from service.registry import ModelRegistry
from service.settings import Settings
from service.web import page

log = logging.getLogger("nnserve")


class NNServeApp(FastAPI):
    """FastAPI behind a pure ASGI front: the access log, then the inference fast path, then FastAPI's own stack
    for every other request. The front comes first so that the hot routes pay for none of FastAPI's middleware
    (error, telemetry and body-limit layers read settings and wrap ``send`` on every request)."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await (self.front or self.framework)(scope, receive, send)

    async def framework(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> NNServeApp:
    settings = settings or Settings()
    metrics = ServiceMetrics()
    plane = DataPlane(settings, metrics, ModelRegistry(settings, metrics))
    access_log = AccessLogWriter() if settings.access_log else None
    trimmer = MemoryTrimmer(settings.memory_trim_interval_s, lambda: plane.calls + plane.ended)
    budget = BodyBudget(settings.max_body_bytes_in_flight)  # HTTP bodies, gRPC requests, shared memory inputs
    plane.body_budget = budget

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.memory_trim_interval_s > 0:
            keep_freed_memory()  # the trimmer hands it back, when quiet
        await plane.repository.start()
        gc.collect()
        release_free_memory()
        trimmer.start()
        gc.freeze()  # what start-up built lives on: keep it out of the collector's way (shorter pauses, tails)
        plane.started = plane.accepting = True
        grpc_server = await start_grpc(plane, settings, access_log, budget)
        try:
            yield
        finally:
            await stop_grpc(grpc_server, settings.drain_timeout_s)  # its calls in flight finish first
            plane.accepting = False
            await trimmer.stop()
            await plane.repository.stop()
            await plane.registry.close()
            if plane.shared_memory is not None:
                plane.shared_memory.close()
            if access_log is not None:
                access_log.flush()
            log.info("drained and stopped")

    app = NNServeApp(
        title="nnserve", version=server_version(), lifespan=lifespan,
        description="Dynamically batched onnxruntime serving of the models in a nnserve repository.",
    )
    app.state.plane = plane
    install_error_handlers(app)
    routers = [module.build_router(plane) for module in (predict_http, oip_http, repository_http, info_http,
                                                             shared_memory_http)]
    for router in routers:
        app.include_router(router)
    app.include_router(page.build_router())
    app.state.body_budget = budget

    def refused(scope: Scope) -> None:
        path = scope["path"]
        plane.refused_unread("predict" if path == "/predict" else "v2" if path.startswith("/v2/") else "http")

    app.front = AccessLogMiddleware(BodyAdmission(InferenceFastPath(app.framework, routers), budget, refused),
                                    access_log)
    app.state.routers = routers
    return app


def app_from_environment() -> NNServeApp:
    """Factory for ``uvicorn --factory`` and worker processes: settings from ``NNSERVE_*`` variables."""
    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings)


def configure_logging(level: str) -> None:
    """Plain message lines on stdout (the access log's are JSON); idempotent, and run in each worker."""
    logging.basicConfig(level=level.upper(), stream=sys.stdout, format="%(message)s")
