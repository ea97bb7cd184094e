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
    random_erasing: float = 0.0  # probability of blanking one random rectangle of an image (Zhong et al. 2017)
    keep: str = "best"  # the weights kept: "best" on validation accuracy, or "last" (a small validation set's best
    # is often an early epoch that merely ties)
    ema_decay: float = 0.0  # > 0: keep an exponential moving average of the weights; it is what is validated and kept
    autocast_bf16: bool = False  # forward/backward in bfloat16 autocast (AMX on recent Xeons); weights stay float32

    def describe_schedule(self) -> str:
        """The schedule and the options the report has no field of its own for, e.g. ``onecycle+ema0.999+bf16``."""
        parts = [self.schedule]
        if self.ema_decay:
            parts.append(f"ema{self.ema_decay:g}")
        if self.random_erasing:
            parts.append(f"erasing{self.random_erasing:g}")
        if self.label_smoothing:
            parts.append(f"smoothing{self.label_smoothing:g}")
        if self.autocast_bf16:
            parts.append("bf16")
        return "+".join(parts)
