"""gRPC's standard health service (``grpc.health.v1.Health``), so the usual probes and load balancers work: the
service "" (or the inference service's name) is the whole server, SERVING once every model is loaded and until
shutdown begins; a model's name is that model (NOT_FOUND when it is not served). ``Watch`` streams changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from service.dataplane import DataPlane
from service.errors import NNServeError
from service.protocols.grpc_proto import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
WATCH_INTERVAL_S = 0.5


class HealthServicer(health_pb2_grpc.HealthServicer):
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def status(self, service: str) -> health_pb2.HealthCheckResponse.ServingStatus:
        if service in ("", "inference.GRPCInferenceService"):
            return SERVING if self.plane.ready else NOT_SERVING
        try:
            self.plane.model(service)
        except NNServeError:
            return SERVICE_UNKNOWN
        return SERVING if self.plane.accepting else NOT_SERVING

    async def Check(self, request: Any, context: Any) -> Any:
        status = self.status(request.service)
        if status == SERVICE_UNKNOWN:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service or model {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: Any, context: Any) -> AsyncIterator[Any]:
        last = None
        while True:
            status = self.status(request.service)
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            await asyncio.sleep(WATCH_INTERVAL_S)
