"""The model repository extension, the same for every protocol: who may use it (the admin bearer token) and what
it does (index the repository, load or reload a model's versions, unload a model). HTTP (``/v2/repository``) and
gRPC (``RepositoryIndex``, ``RepositoryModelLoad``, ``RepositoryModelUnload``) only decode and encode around it.

A load or unload is an order to every process of the server (``service.model_control``): it answers once all of
them have carried it out, or names those that failed or did not answer in time."""

from __future__ import annotations

import hmac
from typing import Any

from service.errors import ModelLoadFailed, ModelNotFound, NotReady, Unauthorized
from service.model_control import Applied
from service.repository import list_models, list_versions
from service.repository_sync import RepositorySync
from service.settings import Settings

CONVERGE_TIMEOUT_S = 300.0  # every process loads and warms the model: a large one takes a while


def authorize(settings: Settings, authorization: str | None) -> None:
    """``authorization``: the ``Authorization`` header's (or gRPC metadata's) value, ``Bearer <token>``."""
    token = settings.admin_token
    if not token:
        raise Unauthorized("the repository API is disabled: start the server with NNSERVE_ADMIN_TOKEN set")
    given = authorization or ""
    if not given.startswith("Bearer ") or not hmac.compare_digest(given[7:].encode(), token.encode()):
        raise Unauthorized()


def index(sync: RepositorySync) -> list[dict[str, Any]]:
    """Every model version on disk or served, with its state, and for one not served the reason."""
    registry, root = sync.registry, sync.settings.repository
    orders = sync.control.orders()
    rows = []
    for name in sorted(set(list_models(root)) | set(registry.models) | set(registry.problems)):
        served, failed = registry.models.get(name, {}), registry.failed.get(name, {})
        on_disk = list_versions(root / name)
        order = orders.get(name)
        policy = registry.policy(name, on_disk, order.versions if order else None)
        for version in sorted(set(on_disk) | set(served)):
            row = {"name": name, "version": str(version), "state": "READY" if version in served else "UNAVAILABLE"}
            if version in failed:
                row["reason"] = failed[version].message
            elif version not in served and order is not None and order.state == "unloaded":
                row["reason"] = "unloaded through the repository API"
            elif version not in served:
                row["reason"] = f"not selected by the version policy {policy.describe()}"
            rows.append(row)
        if name in registry.problems and not on_disk:
            rows.append({"name": name, "version": "", "state": "UNAVAILABLE", "reason": registry.problems[name]})
    return rows


def _outcome(done: list[Applied], behind: list[int]) -> list[str]:
    """The failures, each naming its process when there are several."""
    several = len(done) + len(behind) > 1
    named = (lambda pid, text: f"process {pid}: {text}") if several else (lambda pid, text: text)
    return [named(a.pid, a.error) for a in done if a.error] + [
        named(pid, f"did not apply the order within {CONVERGE_TIMEOUT_S:.0f} s") for pid in behind]


async def load(sync: RepositorySync, name: str, versions: list[int] | None) -> list[str]:
    """Load (or reload) ``name`` in every process; the versions now served."""
    if not list_versions(sync.settings.repository / name):
        raise ModelLoadFailed(f"model '{name}': no complete version under {sync.settings.repository / name}")
    generation = sync.control.order(name, "loaded", versions)
    await sync.follow()
    errors = _outcome(*await sync.control.converged(name, generation, CONVERGE_TIMEOUT_S))
    if errors:
        raise ModelLoadFailed("; ".join(errors))
    return [str(v) for v in sorted(sync.registry.models.get(name, {}))]


async def unload(sync: RepositorySync, name: str) -> None:
    """Unload ``name`` in every process (each drains its queue first)."""
    if name not in sync.registry.models:
        raise ModelNotFound(f"model '{name}' is not loaded")
    generation = sync.control.order(name, "unloaded")
    await sync.follow()
    errors = _outcome(*await sync.control.converged(name, generation, CONVERGE_TIMEOUT_S))
    if errors:
        raise NotReady("; ".join(errors))
