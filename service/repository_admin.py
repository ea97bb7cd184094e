"""The model repository extension, the same for every protocol: who may use it (the admin bearer token) and what
it does (index the repository, load or reload a model's versions, unload a model). HTTP (``/v2/repository``) and
gRPC (``RepositoryIndex``, ``RepositoryModelLoad``, ``RepositoryModelUnload``) only decode and encode around it."""

from __future__ import annotations

import hmac
from typing import Any

from service.errors import Conflict, Unauthorized
from service.registry import ModelRegistry
from service.repository import list_models, list_versions
from service.settings import Settings


def authorize(settings: Settings, authorization: str | None) -> None:
    """``authorization``: the ``Authorization`` header's (or gRPC metadata's) value, ``Bearer <token>``."""
    token = settings.admin_token
    if not token:
        raise Unauthorized("the repository API is disabled: start the server with NNSERVE_ADMIN_TOKEN set")
    if settings.workers > 1:
        raise Conflict("the repository API needs --workers 1: with several server processes a load or "
                       "unload would reach only the one process that received it")
    given = authorization or ""
    if not given.startswith("Bearer ") or not hmac.compare_digest(given[7:].encode(), token.encode()):
        raise Unauthorized()


def index(registry: ModelRegistry) -> list[dict[str, Any]]:
    rows = []
    for name in list_models(registry.root):
        loaded = registry.models.get(name, {})
        for v in list_versions(registry.root / name):
            row = {"name": name, "version": str(v), "state": "READY" if v in loaded else "UNAVAILABLE"}
            if v not in loaded and name in registry.failures:
                row["reason"] = registry.failures[name]
            rows.append(row)
    return rows


async def load(registry: ModelRegistry, name: str, versions: list[int] | None) -> list[str]:
    """Load (or reload) ``name``; the versions now served."""
    return [str(m.version) for m in await registry.load(name, versions)]


async def unload(registry: ModelRegistry, name: str) -> None:
    await registry.unload(name)
