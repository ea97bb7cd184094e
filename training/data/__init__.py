"""Datasets: IDX (Fashion-MNIST, MNIST) and UEA ``.ts`` (Japanese Vowels) readers, checked and located."""

from training.data.datasets import ImageDataset, SequenceDataset, load_fashion_mnist, load_japanese_vowels
from training.data.sources import DataError

__all__ = [
    "DataError",
    "ImageDataset",
    "SequenceDataset",
    "load_fashion_mnist",
    "load_japanese_vowels",
]
