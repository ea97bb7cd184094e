"""Multi-layer perceptron: fully connected layers, ReLU, dropout."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class MLPConfig:
    input_size: int = 28 * 28
    hidden: list[int] = field(default_factory=lambda: [512, 256])
    dropout: float = 0.2
    num_classes: int = 10


class MLP(nn.Module):
    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = config.input_size
        for hidden in config.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Dropout(config.dropout)]
            width = hidden
        layers.append(nn.Linear(width, config.num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``[N, 1, 28, 28]`` -> logits ``[N, classes]``."""
        return self.net(image)  # type: ignore[no-any-return]
