"""The networks of the built-in families (``training.families``), one module each with the config dataclass
that rebuilds it."""

from __future__ import annotations

import importlib
from dataclasses import asdict
from typing import Any

from torch import nn

from training.families import FAMILIES


def _resolve(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def build_model(family: str, config: dict[str, Any] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build a model from its family and config dict; return it with its full config (defaults filled in)."""
    spec = FAMILIES[family]
    cfg = _resolve(spec.network_config)(**(config or {}))
    module: nn.Module = _resolve(spec.network)(cfg)
    return module, asdict(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
