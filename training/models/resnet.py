"""A CIFAR-style ResNet (He et al. 2016, section 4.2) sized for 28x28 inputs.

Three stages of ``blocks_per_stage`` residual blocks at 28x28, 14x14 and 7x7; each block is two 3x3 conv + BN
with ReLU, and ``y = F(x, {W_i}) + x`` — an identity shortcut, or ``+ W_s x`` (1x1 conv + BN projection) where the
shape changes. ``blocks_per_stage = 3`` is ResNet-20.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class ResNetConfig:
    blocks_per_stage: int = 3
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])
    num_classes: int = 10


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))  # type: ignore[no-any-return]


class ResNet(nn.Module):
    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        first = config.widths[0]
        self.stem = nn.Sequential(nn.Conv2d(1, first, 3, padding=1, bias=False), nn.BatchNorm2d(first),
                                  nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        cin = first
        for stage, width in enumerate(config.widths):
            for block in range(config.blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                blocks.append(BasicBlock(cin, width, stride))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, config.num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        for module in self.modules():  # zero-init the last BN of each block: it starts as an identity
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.blocks(self.stem(image)))
        return self.fc(torch.flatten(out, 1))  # type: ignore[no-any-return]
