"""A LeNet-lineage CNN, modernised: 3x3 same-padded convolutions, batch norm, ReLU, 2x2 max pooling, dropout,
and a fully connected head."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class CNNConfig:
    channels: list[int] = field(default_factory=lambda: [32, 64])
    convs_per_stage: int = 2
    hidden: int = 256
    conv_dropout: float = 0.1
    head_dropout: float = 0.4
    image_size: int = 28
    num_classes: int = 10


def conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class CNN(nn.Module):
    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin, size = 1, config.image_size
        for cout in config.channels:
            for _ in range(config.convs_per_stage):
                layers += conv_bn_relu(cin, cout)
                cin = cout
            layers += [nn.MaxPool2d(2), nn.Dropout(config.conv_dropout)]
            size //= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(cin * size * size, config.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(config.head_dropout),
            nn.Linear(config.hidden, config.num_classes),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image))  # type: ignore[no-any-return]
