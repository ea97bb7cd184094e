"""What the endpoints of one app share: its settings, metrics and model registry, and whether it still
accepts requests (not once shutdown has begun)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastapi.responses import Response

from service.errors import NotReady
from service.metrics import ServiceMetrics
from service.registry import ModelRegistry
from service.settings import Settings


@dataclass(eq=False)
class AppContext:
    settings: Settings
    metrics: ServiceMetrics
    registry: ModelRegistry
    started: bool = False
    accepting: bool = False
    # The inference endpoints, by name, for the ASGI fast path (service.protocols.hot_routes) to call directly.
    endpoints: dict[str, Callable[..., Awaitable[Response]]] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.started and self.accepting and bool(self.registry.models)

    def require_accepting(self) -> None:
        if not self.accepting:
            raise NotReady("server is starting up or shutting down; not accepting requests")
