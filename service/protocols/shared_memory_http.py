"""Triton's shared memory extensions over HTTP, as tritonclient calls them: ``/v2/systemsharedmemory`` registers,
lists and unregisters regions (``service.shared_memory``); ``/v2/cudasharedmemory`` lists none and refuses to
register, naming the system extension instead (CUDA IPC handles are not taken)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.dataplane import DataPlane
from service.errors import InvalidSharedMemory, SharedMemoryNotFound
from service.protocols.http_io import json_response, parse_json, peer
from service.shared_memory import SharedMemoryRegions, permitted


def build_router(plane: DataPlane) -> APIRouter:
    router = APIRouter(prefix="/v2", tags=["shared memory"])

    def regions(request: Request, what: str) -> SharedMemoryRegions:
        return permitted(plane.shared_memory, *peer(request), what)

    def listed(request: Request, name: str | None) -> Response:
        return json_response([r.shown() for r in regions(request, "status").status(name)])

    @router.get("/systemsharedmemory/status", summary="Registered system shared memory regions")
    async def status_all(request: Request) -> Response:
        return listed(request, None)

    @router.get("/systemsharedmemory/region/{name}/status", summary="One registered region")
    async def status_one(request: Request, name: str) -> Response:
        return listed(request, name)

    @router.post("/systemsharedmemory/region/{name}/register",
                 summary="Register a region of a POSIX shared memory object: {key, offset, byte_size}")
    async def register(request: Request, name: str) -> Response:
        chosen = regions(request, f"register '{name}'")
        body: Any = parse_json(await request.body(), "register request")
        if not isinstance(body, dict) or "key" not in body or "byte_size" not in body:
            raise InvalidSharedMemory(f"register '{name}': expected {{\"key\": str, \"offset\": int, "
                                      f"\"byte_size\": int}}, received {body!r:.120}")
        chosen.register(name, body["key"], body.get("offset", 0), body["byte_size"])
        return json_response({})

    @router.post("/systemsharedmemory/unregister", summary="Unregister every region")
    async def unregister_all(request: Request) -> Response:
        regions(request, "unregister").unregister(None)
        return json_response({})

    @router.post("/systemsharedmemory/region/{name}/unregister", summary="Unregister one region")
    async def unregister_one(request: Request, name: str) -> Response:
        regions(request, f"unregister '{name}'").unregister(name)
        return json_response({})

    @router.get("/cudasharedmemory/status", summary="CUDA shared memory regions: none (not supported)")
    @router.get("/cudasharedmemory/region/{name}/status", summary="CUDA shared memory regions: none")
    async def cuda_status(name: str | None = None) -> Response:
        if name is not None:
            raise SharedMemoryNotFound(f"no CUDA shared memory region '{name}' is registered (none can be)")
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
