"""How a model is trained: the optimiser, schedule and augmentation settings ``fit()`` follows. No torch here, so
the family registry (and the command line) can name every family's defaults without importing it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    epochs: int
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd (Nesterov momentum 0.9) or adamw
    lr: float = 0.1  # the one-cycle peak
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    shift: int = 0  # random translation of images by up to this many pixels (pad + crop)
    hflip: bool = False
    seed: int = 0
    val_fraction: float = 1 / 12  # 5,000 of Fashion-MNIST's 60,000
    channels_last: bool = False
