"""A checkpoint carries everything needed to rebuild, export and describe its model: the weights, the model's
config, the training config and results, the dataset's file md5s and the processing used."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.models import build_model
from training.train import FitResult
from training.train_config import TrainConfig

DEFAULT_DIR = Path(".nnserve") / "checkpoints"


@dataclass
class Checkpoint:
    name: str
    family: str
    model_config: dict[str, Any]
    train_config: dict[str, Any]
    fit: dict[str, Any]  # FitResult without the weights
    state_dict: dict[str, Any]
    parameters: int

    def build(self) -> nn.Module:
        model, _ = build_model(self.family, self.model_config)
        model.load_state_dict(self.state_dict)
        return model.eval()


def make_checkpoint(name: str, family: str, model_config: dict[str, Any], config: TrainConfig,
                    result: FitResult, parameters: int) -> Checkpoint:
    fit = {k: v for k, v in asdict(result).items() if k != "state_dict"}
    return Checkpoint(name, family, model_config, asdict(config), fit, result.state_dict, parameters)


def save(checkpoint: Checkpoint, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(asdict(checkpoint), tmp)
    tmp.replace(path)


def load(path: Path) -> Checkpoint:
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: run `nnserve train {path.stem}` first")
    return Checkpoint(**torch.load(path, map_location="cpu", weights_only=False))
