"""The four model families, one module each, with the config dataclass that rebuilds them."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from torch import nn

from training.models.cnn import CNN, CNNConfig
from training.models.lstm import LSTMClassifier, LSTMConfig
from training.models.mlp import MLP, MLPConfig
from training.models.resnet import ResNet, ResNetConfig

MODELS: dict[str, tuple[type[nn.Module], type[Any]]] = {
    "mlp": (MLP, MLPConfig),
    "cnn": (CNN, CNNConfig),
    "resnet": (ResNet, ResNetConfig),
    "lstm": (LSTMClassifier, LSTMConfig),
}


def build_model(family: str, config: dict[str, Any] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build a model from its family and config dict; return it with its full config (defaults filled in)."""
    module_class, config_class = MODELS[family]
    cfg = config_class(**(config or {}))
    return module_class(cfg), asdict(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
