"""The gRPC server of one process, on its event loop beside uvicorn's: started once the models are loaded, stopped
first at shutdown with a grace period (calls in flight finish; new ones are refused). With ``--workers N`` every
process binds the port with ``SO_REUSEPORT`` and the kernel spreads connections; with one process the option is
off, so a second server on the same port fails loudly instead of sharing it.

Two implementations serve the same methods (service.protocols.grpc_handlers): nnserve's own HTTP/2 front
(``--grpc-server nnserve``, the default: service.hosting.http2 and service.hosting.grpc_calls, about a quarter of
grpcio's cost per call on the event loop) and grpcio's ``grpc.aio`` server (``--grpc-server grpcio``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from service.dataplane import DataPlane
from service.hosting.access_log import AccessLogWriter
from service.hosting.body_budget import BodyBudget
from service.hosting.listener_close import close_listeners, own_handles
from service.protocols.grpc_handlers import Method
from service.settings import Settings

log = logging.getLogger("nnserve")


def served_services(plane: DataPlane, inference: Any) -> list[Any]:
    """(service descriptor, servicer) of every service: the inference service (``inference``), health,
    reflection."""
    from service.protocols.grpc_health import HealthServicer
    from service.protocols.grpc_proto import health_pb2, oip_pb2, reflection_pb2
    from service.protocols.grpc_reflection import ReflectionServicer

    return [(oip_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"], inference),
            (health_pb2.DESCRIPTOR.services_by_name["Health"], HealthServicer(plane)),
            (reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"], ReflectionServicer())]


class NNServeGrpcServer:
    """nnserve's own gRPC server: HTTP/2 connections on this event loop, each stream a call."""

    def __init__(self, methods: list[Method], max_message_bytes: int, max_connection_age_s: float = 0.0,
                 grace_s: float = 30.0, budget: BodyBudget | None = None,
                 on_refused: Callable[[str, Any], None] | None = None) -> None:
        from service.hosting.grpc_calls import GrpcCalls

        self.calls = GrpcCalls(methods, max_message_bytes, budget, on_refused)
        self.connections: set[Any] = set()
        self.listener: asyncio.Server | None = None
        self.max_connection_age_s = max_connection_age_s
        self.grace_s = grace_s

    def _connection(self) -> Any:
        from service.hosting.http2.connection import Http2Connection

        connection = Http2Connection(self.calls.open, on_close=self.connections.discard)
        self.connections.add(connection)
        if self.max_connection_age_s:  # spread over +-10%, so that connections made together do not go together
            age = self.max_connection_age_s * random.uniform(0.9, 1.1)
            asyncio.get_running_loop().call_later(age, self._retire, connection, time.monotonic() + age + self.grace_s)
        return connection

    def _retire(self, connection: Any, deadline: float) -> None:
        """Asks an old connection to go (GOAWAY: the client opens a new one for its next calls), then closes it
        once its calls are done, or at the deadline."""
        if connection.closed:
            return
        if not connection.going_away:
            connection.goaway()
        if connection.streams and time.monotonic() < deadline:
            asyncio.get_running_loop().call_later(0.05, self._retire, connection, deadline)
        else:
            connection.close()

    async def start(self, host: str, port: int, reuse_port: bool) -> None:
        loop = asyncio.get_running_loop()
        self.listener = await loop.create_server(self._connection, host, port, reuse_port=reuse_port or None,
                                                 backlog=2048)

    async def stop(self, grace_s: float) -> None:
        """New connections and calls are refused (GOAWAY); calls in flight, those still arriving included, get
        ``grace_s`` to finish. The connections queued on the listening socket are accepted first and told GOAWAY
        like the others (``listener_close``): closing it would reset them, and with several processes they are
        clients that another process's GOAWAY sent here, their call already written (1 run in ~15 of
        tests/grpc's drill lost calls with "Stream removed" before)."""
        if self.listener is not None:
            listeners = own_handles(self.listener.sockets)
            self.listener.close()
            loop = asyncio.get_running_loop()
            for queued in await close_listeners(listeners):
                await loop.connect_accepted_socket(self._connection, queued)
        for connection in list(self.connections):
            connection.goaway()
        deadline = time.monotonic() + grace_s
        while (self.calls.running or any(c.streams for c in self.connections)) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for task in list(self.calls.running):
            task.cancel()
        if self.calls.running:
            await asyncio.wait(list(self.calls.running), timeout=1.0)
        for connection in list(self.connections):
            connection.flush()
            connection.close()
        if self.listener is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.listener.wait_closed(), 1.0)


async def start_grpc(plane: DataPlane, settings: Settings, access_log: AccessLogWriter | None,
                     budget: BodyBudget) -> Any | None:
    if not settings.grpc_port:
        return None
    from service.protocols.oip_grpc import OipServicer

    inference = OipServicer(plane, access_log, budget)
    services = served_services(plane, inference)
    address = f"{settings.host}:{settings.grpc_port}"
    reuse_port = (settings.workers or 1) > 1
    server: Any
    if settings.grpc_server == "nnserve":
        from service.protocols.grpc_handlers import service_methods

        server = NNServeGrpcServer([m for d, s in services for m in service_methods(d, s)],
                                   settings.grpc_max_message_bytes, settings.grpc_max_connection_age_s,
                                   settings.drain_timeout_s, budget, inference.refused_on_arrival)
        try:
            await server.start(settings.host, settings.grpc_port, reuse_port)
        except OSError as error:
            raise RuntimeError(f"gRPC cannot listen on {address} ({error}): another server there? --grpc-port 0 "
                               f"turns gRPC off") from error
    else:
        server = await _start_grpcio(services, settings, address, reuse_port)
    log.info("gRPC (Open Inference Protocol, health, reflection; %s server) on %s", settings.grpc_server, address)
    return server


async def _start_grpcio(services: list[Any], settings: Settings, address: str, reuse_port: bool) -> Any:
    from grpc import aio

    from service.protocols.grpc_handlers import checked_handlers

    limit = settings.grpc_max_message_bytes
    server = aio.server(options=[
        ("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        *((("grpc.max_connection_age_ms", int(settings.grpc_max_connection_age_s * 1000)),
           ("grpc.max_connection_age_grace_ms", int(settings.drain_timeout_s * 1000)))
          if settings.grpc_max_connection_age_s else ()),
    ])
    server.add_generic_rpc_handlers(tuple(checked_handlers(d, s) for d, s in services))
    try:
        server.add_insecure_port(address)
    except RuntimeError as error:
        raise RuntimeError(f"gRPC cannot listen on {address} ({error}): another server there? --grpc-port 0 turns "
                           f"gRPC off") from error
    await server.start()
    return server


async def stop_grpc(server: Any | None, grace_s: float) -> None:
    if server is not None:
        await server.stop(grace_s)
