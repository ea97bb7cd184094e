"""The datasets nnserve trains on, as numpy arrays with their class names and the md5s of the files read."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.data.idx import read_idx
from training.data.sources import DataError, locate
from training.data.ts_format import read_ts

FASHION_MNIST_LABELS = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
MNIST_LABELS = [str(d) for d in range(10)]


@dataclass
class ImageDataset:
    name: str
    train_images: np.ndarray  # uint8 [N, H, W]
    train_labels: np.ndarray  # int64 [N]
    test_images: np.ndarray
    test_labels: np.ndarray
    labels: list[str]
    files: dict[str, str] = field(default_factory=dict)


@dataclass
class SequenceDataset:
    name: str
    train_sequences: list[np.ndarray]  # float32 [T_i, F]
    train_labels: np.ndarray
    test_sequences: list[np.ndarray]
    test_labels: np.ndarray
    labels: list[str]
    files: dict[str, str] = field(default_factory=dict)


def load_idx_dataset(dataset: str, labels: list[str], data_dir: Path | None = None) -> ImageDataset:
    """Fashion-MNIST or MNIST from their four IDX files."""
    arrays: dict[str, np.ndarray] = {}
    files: dict[str, str] = {}
    for split in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            name = f"{split}-{kind}-ubyte.gz"
            path, md5 = locate(dataset, name, data_dir)
            arrays[f"{split}-{kind}"] = read_idx(path)
            files[name] = md5
    result = ImageDataset(
        name=dataset,
        train_images=arrays["train-images-idx3"],
        train_labels=arrays["train-labels-idx1"].astype(np.int64),
        test_images=arrays["t10k-images-idx3"],
        test_labels=arrays["t10k-labels-idx1"].astype(np.int64),
        labels=labels,
        files=files,
    )
    for split, images, targets in (("train", result.train_images, result.train_labels),
                                   ("test", result.test_images, result.test_labels)):
        if len(images) != len(targets):
            raise DataError(f"{dataset} {split}: {len(images)} images but {len(targets)} labels")
    return result


def load_fashion_mnist(data_dir: Path | None = None) -> ImageDataset:
    return load_idx_dataset("fashion-mnist", FASHION_MNIST_LABELS, data_dir)


def load_japanese_vowels(data_dir: Path | None = None) -> SequenceDataset:
    files: dict[str, str] = {}
    splits: dict[str, tuple[list[np.ndarray], list[str]]] = {}
    declared: list[str] = []
    for split in ("TRAIN", "TEST"):
        name = f"JapaneseVowels_{split}.ts"
        path, md5 = locate("japanese-vowels", name, data_dir)
        sequences, labels, declared = read_ts(path)
        splits[split] = (sequences, labels)
        files[name] = md5
    classes = declared or sorted({*splits["TRAIN"][1], *splits["TEST"][1]}, key=lambda c: (len(c), c))
    index = {c: i for i, c in enumerate(classes)}
    for split, (_, labels) in splits.items():
        unknown = set(labels) - set(index)
        if unknown:
            raise DataError(f"JapaneseVowels_{split}.ts: labels {sorted(unknown)} not in declared {classes}")
    return SequenceDataset(
        name="japanese-vowels",
        train_sequences=splits["TRAIN"][0],
        train_labels=np.array([index[c] for c in splits["TRAIN"][1]], dtype=np.int64),
        test_sequences=splits["TEST"][0],
        test_labels=np.array([index[c] for c in splits["TEST"][1]], dtype=np.int64),
        labels=[f"speaker {c}" for c in classes],
        files=files,
    )
