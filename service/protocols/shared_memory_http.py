"""Triton's shared memory extensions over HTTP, as tritonclient calls them: ``/v2/systemsharedmemory`` registers,
lists and unregisters regions (``service.shared_memory``); ``/v2/cudasharedmemory`` lists none and refuses to
register, naming the system extension instead (CUDA IPC handles are not taken)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.dataplane import DataPlane
from service.errors import Forbidden, InvalidSharedMemory
from service.protocols.http_io import json_response, parse_json
from service.shared_memory import SharedMemoryRegions, same_host


def build_router(plane: DataPlane) -> APIRouter:
    router = APIRouter(prefix="/v2", tags=["shared memory"])

    def regions() -> SharedMemoryRegions:
        if plane.shared_memory is None:
            raise InvalidSharedMemory("system shared memory is turned off on this server (--no-shared-memory)")
        return plane.shared_memory

    def local(request: Request, what: str) -> None:
        client = request.client.host if request.client else None
        if not same_host(client):
            raise Forbidden(f"{what}: system shared memory is for clients on this host; refused for {client}")

    def listed(name: str | None) -> Response:
        return json_response([{"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size}
                              for r in regions().status(name)])

    @router.get("/systemsharedmemory/status", summary="Registered system shared memory regions")
    async def status_all() -> Response:
        return listed(None)

    @router.get("/systemsharedmemory/region/{name}/status", summary="One registered region")
    async def status_one(name: str) -> Response:
        return listed(name)

    @router.post("/systemsharedmemory/region/{name}/register",
                 summary="Register a region of a POSIX shared memory object: {key, offset, byte_size}")
    async def register(request: Request, name: str) -> Response:
        local(request, f"register '{name}'")
        body: Any = parse_json(await request.body(), "register request")
        if not isinstance(body, dict) or "key" not in body or "byte_size" not in body:
            raise InvalidSharedMemory(f"register '{name}': expected {{\"key\": str, \"offset\": int, "
                                      f"\"byte_size\": int}}, received {body!r:.120}")
        regions().register(name, body["key"], body.get("offset", 0), body["byte_size"])
        return json_response({})

    @router.post("/systemsharedmemory/unregister", summary="Unregister every region")
    async def unregister_all(request: Request) -> Response:
        local(request, "unregister")
        regions().unregister(None)
        return json_response({})

    @router.post("/systemsharedmemory/region/{name}/unregister", summary="Unregister one region")
    async def unregister_one(request: Request, name: str) -> Response:
        local(request, f"unregister '{name}'")
        regions().unregister(name)
        return json_response({})

    @router.get("/cudasharedmemory/status", summary="CUDA shared memory regions: none (not supported)")
    @router.get("/cudasharedmemory/region/{name}/status", summary="CUDA shared memory regions: none")
    async def cuda_status(name: str | None = None) -> Response:
        return json_response([])

    @router.post("/cudasharedmemory/region/{name}/register", summary="Refused: CUDA shared memory is not supported")
    async def cuda_register(name: str) -> Response:
        raise InvalidSharedMemory(f"register '{name}': CUDA shared memory is not supported by this server; register "
                                  f"system shared memory (/v2/systemsharedmemory) instead")

    @router.post("/cudasharedmemory/unregister", summary="Nothing to unregister")
    @router.post("/cudasharedmemory/region/{name}/unregister", summary="Nothing to unregister")
    async def cuda_unregister(name: str | None = None) -> Response:
        return json_response({})

    return router
