"""The built-in model families, in one registry: each one's network (module and config class, by import path,
so that this file needs no torch), the data it learns, its description, the accuracy its export gate demands and
its training defaults, and whether the pipeline makes an INT8 variant of it (``int8_skip``: why not, measured). A
new family is one file under ``training/models/`` and one entry here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from training.train_config import TrainConfig


@dataclass(frozen=True)
class Family:
    name: str
    network: str  # "module:Class" of the nn.Module, built from an instance of ...
    network_config: str  # "module:Class" of its config dataclass
    data: Literal["fashion-mnist", "japanese-vowels"]
    description: str
    target_accuracy: float  # the export gate: ONNX test accuracy at least this
    train: TrainConfig
    int8_skip: str | None = None  # why the pipeline makes no INT8 variant (measured); None: it makes one

    @property
    def is_image(self) -> bool:
        return self.data == "fashion-mnist"


# INT8 pays where compute bounds the served throughput (ResNet, CNN: docs/benchmarks.md). Not here:
MLP_INT8 = ("served throughput is bound by the HTTP side, not compute: INT8 runs the MLP ~3.7x faster raw, but "
            "served at c=64 over OIP binary it measured 1.05x (docs/benchmarks.md)")
LSTM_INT8 = ("static QDQ leaves the LSTM operator in FP32 (only the final Gemm runs in int8): 0.98x the raw samples/s "
             "at batch 64 (docs/benchmarks.md)")

FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("mlp", "training.models.mlp:MLP", "training.models.mlp:MLPConfig", "fashion-mnist",
           "Multi-layer perceptron on Fashion-MNIST (28x28 greyscale clothing images, 10 classes)", 0.89,
           TrainConfig(epochs=30, batch_size=128, optimizer="adamw", lr=2e-3, weight_decay=1e-4,
                       label_smoothing=0.05, hflip=True),
           int8_skip=MLP_INT8),
    Family("cnn", "training.models.cnn:CNN", "training.models.cnn:CNNConfig", "fashion-mnist",
           "Convolutional network (3x3 conv + BN + max-pool) on Fashion-MNIST", 0.93,
           TrainConfig(epochs=20, batch_size=128, lr=0.1, weight_decay=5e-4, label_smoothing=0.05, shift=2,
                       hflip=True, channels_last=True, autocast_bf16=True)),
    Family("resnet", "training.models.resnet:ResNet", "training.models.resnet:ResNetConfig", "fashion-mnist",
           "CIFAR-style ResNet-20 with identity/projection shortcuts on Fashion-MNIST", 0.935,
           TrainConfig(epochs=27, batch_size=128, lr=0.1, weight_decay=5e-4, label_smoothing=0.05, shift=2,
                       hflip=True, channels_last=True, autocast_bf16=True, val_fraction=1 / 60, keep="last")),
    Family("lstm", "training.models.lstm:LSTMClassifier", "training.models.lstm:LSTMConfig", "japanese-vowels",
           "Ensemble of 5 bidirectional LSTMs, speaker classifier on Japanese Vowels (12 LPC cepstra per frame, "
           "9 speakers)", 0.975,
           TrainConfig(epochs=60, batch_size=32, optimizer="adamw", lr=1e-2, weight_decay=1e-3, grad_clip=1.0,
                       val_fraction=0.01, keep="last"),
           int8_skip=LSTM_INT8),
)}
