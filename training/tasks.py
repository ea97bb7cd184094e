"""A dataset turned into what training needs: train / validation / test tensors, the config's processor, and
the raw test inputs that the ONNX accuracy gate sends through the service's own processing.

The validation split is carved from the training set (stratified, seeded); the test set is only for the final
report. Tensors are made by ``service.processors``, so training sees exactly what the service will compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from service.config import ImageProcessor, SequenceProcessor
from service.processors.image import normalize_pixels
from service.processors.sequence import sequences_to_tensors
from training.data import load_fashion_mnist, load_japanese_vowels
from training.families import FAMILIES

SEQUENCE_MAX_LENGTH = 1000  # accepted by the service; the data has 7..29 frames


@dataclass
class Split:
    inputs: tuple[torch.Tensor, ...]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        return tuple(t[index] for t in self.inputs), self.labels[index]


@dataclass
class Task:
    dataset: str
    labels: list[str]
    files: dict[str, str]
    train: Split
    val: Split
    test: Split
    processor: ImageProcessor | SequenceProcessor
    raw_test: np.ndarray | list[np.ndarray]  # what a user would send: pixels 0-255, or raw frames
    test_labels: np.ndarray

    @property
    def is_image(self) -> bool:
        return isinstance(self.processor, ImageProcessor)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation): ``fraction`` of each class goes to validation."""
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        val.append(members[: max(1, round(len(members) * fraction))])
    val_index = np.sort(np.concatenate(val))
    train_index = np.setdiff1d(np.arange(len(labels)), val_index)
    return rng.permutation(train_index), val_index


def _limit(index: np.ndarray, limit: int | None) -> np.ndarray:
    return index if limit is None else index[:limit]


def image_task(data_dir: Path | None, seed: int, val_fraction: float, limit: int | None) -> Task:
    ds = load_fashion_mnist(data_dir)
    train_index, val_index = stratified_split(ds.train_labels, val_fraction, seed)
    train_index, val_index = _limit(train_index, limit), _limit(val_index, limit and max(limit // 4, 100))
    pixels = ds.train_images[train_index].astype(np.float32) / 255.0
    spec = ImageProcessor(
        input="image", height=ds.train_images.shape[1], width=ds.train_images.shape[2],
        mean=round(float(pixels.mean()), 4), std=round(float(pixels.std()), 4), auto_invert=True,
    )
    test_count = len(ds.test_labels) if limit is None else min(len(ds.test_labels), 1000)

    def split(images: np.ndarray, labels: np.ndarray) -> Split:
        return Split((torch.from_numpy(normalize_pixels(images, spec)),), torch.from_numpy(labels))

    return Task(
        dataset=ds.name, labels=ds.labels, files=ds.files,
        train=split(ds.train_images[train_index], ds.train_labels[train_index]),
        val=split(ds.train_images[val_index], ds.train_labels[val_index]),
        test=split(ds.test_images[:test_count], ds.test_labels[:test_count]),
        processor=spec, raw_test=ds.test_images[:test_count], test_labels=ds.test_labels[:test_count],
    )


def sequence_task(data_dir: Path | None, seed: int, val_fraction: float, limit: int | None) -> Task:
    ds = load_japanese_vowels(data_dir)
    labels = ds.train_labels
    train_index, val_index = stratified_split(labels, val_fraction, seed)
    train_index = _limit(train_index, limit)
    frames = np.concatenate([ds.train_sequences[i] for i in train_index])
    spec = SequenceProcessor(
        features=frames.shape[1],
        max_length=SEQUENCE_MAX_LENGTH,
        mean=[round(float(v), 5) for v in frames.mean(axis=0)],
        std=[round(float(v), 5) for v in frames.std(axis=0)],
    )

    def split(sequences: list[np.ndarray], targets: np.ndarray) -> Split:
        tensors = sequences_to_tensors(sequences, spec)
        return Split((torch.from_numpy(tensors[spec.input]), torch.from_numpy(tensors[spec.lengths_input])),
                     torch.from_numpy(targets))

    return Task(
        dataset=ds.name, labels=ds.labels, files=ds.files,
        train=split([ds.train_sequences[i] for i in train_index], labels[train_index]),
        val=split([ds.train_sequences[i] for i in val_index], labels[val_index]),
        test=split(ds.test_sequences, ds.test_labels),
        processor=spec, raw_test=ds.test_sequences, test_labels=ds.test_labels,
    )


def load_task(family: str, data_dir: Path | None, seed: int, val_fraction: float, limit: int | None) -> Task:
    if FAMILIES[family].is_image:
        return image_task(data_dir, seed, val_fraction, limit)
    return sequence_task(data_dir, seed, val_fraction, limit)
