"""The gRPC server of one process, on its event loop beside uvicorn's: started once the models are loaded, stopped
first at shutdown with a grace period (calls in flight finish; new ones are refused with UNAVAILABLE). With
``--workers N`` every process binds the port with ``SO_REUSEPORT`` and the kernel spreads connections; with one
process the option is off, so a second server on the same port fails loudly instead of sharing it."""

from __future__ import annotations

import logging
from typing import Any

from service.dataplane import DataPlane
from service.hosting.access_log import AccessLogWriter
from service.hosting.body_budget import BodyBudget
from service.settings import Settings

log = logging.getLogger("nnserve")


async def start_grpc(plane: DataPlane, settings: Settings, access_log: AccessLogWriter | None,
                     budget: BodyBudget) -> Any | None:
    if not settings.grpc_port:
        return None
    from grpc import aio

    from service.protocols.grpc_handlers import checked_handlers
    from service.protocols.grpc_health import HealthServicer
    from service.protocols.grpc_proto import health_pb2_grpc, oip_pb2, reflection_pb2_grpc
    from service.protocols.grpc_reflection import ReflectionServicer
    from service.protocols.oip_grpc import OipServicer

    limit = settings.grpc_max_message_bytes
    server = aio.server(options=[
        ("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 1 if (settings.workers or 1) > 1 else 0),
    ])
    server.add_generic_rpc_handlers((checked_handlers(oip_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"],
                                                      OipServicer(plane, access_log, budget)),))
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(plane), server)  # type: ignore[no-untyped-call]
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(ReflectionServicer(), server)  # type: ignore[no-untyped-call]
    address = f"{settings.host}:{settings.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as error:
        raise RuntimeError(f"gRPC cannot listen on {address} ({error}): another server there? --grpc-port 0 turns "
                           f"gRPC off") from error
    await server.start()
    log.info("gRPC (Open Inference Protocol, health, reflection) on %s", address)
    return server


async def stop_grpc(server: Any | None, grace_s: float) -> None:
    if server is not None:
        await server.stop(grace_s)
