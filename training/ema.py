"""An exponential moving average of a model's weights (Polyak averaging), the copy that is validated and kept.

Floating-point parameters move towards the trained ones by ``1 - decay`` each step; buffers (batch norm's running
statistics and counters) are copied, since they already average over batches. Early on the decay is lowered to
``(1 + step) / (10 + step)`` so that the average does not remember the random initialisation for long.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightEMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.steps = 0
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        averaged: list[torch.Tensor] = [p for p in self.model.parameters() if p.dtype.is_floating_point]
        current: list[torch.Tensor] = [p.detach() for p in model.parameters() if p.dtype.is_floating_point]
        torch._foreach_lerp_(averaged, current, 1.0 - decay)
        for mine, theirs in zip(self.model.buffers(), model.buffers(), strict=True):
            mine.copy_(theirs)
