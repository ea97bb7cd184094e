"""Lists of frames -> a sequence model's ``sequence [N, T, F]`` and ``lengths [N]``, as its config says.

Training builds its tensors with ``sequences_to_tensors`` too, so what the service computes is what was measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from service.backends import Tensors
from service.config import SequenceProcessor
from service.errors import InvalidShape
from service.processors.image import check_finite
from service.processors.values import float_array, non_empty_list


def sequences_from_json(value: Any, spec: SequenceProcessor) -> list[np.ndarray]:
    """A JSON list of sequences (each a list of ``features``-value frames) -> float32 ``[T, F]`` arrays."""
    sequences = []
    for i, item in enumerate(non_empty_list(value, f"sequences of {spec.features}-value frames")):
        array = float_array(item, f"inputs[{i}]", f"a list of frames of {spec.features} numbers")
        if array.ndim != 2 or array.shape[1] != spec.features:
            raise InvalidShape(
                f"inputs[{i}]: expected shape [T, {spec.features}] (T frames of {spec.features} features), "
                f"received {list(array.shape)}"
            )
        if not spec.min_length <= array.shape[0] <= spec.max_length:
            raise InvalidShape(
                f"inputs[{i}]: sequence length must be {spec.min_length}..{spec.max_length}, "
                f"received {array.shape[0]}"
            )
        check_finite(array, f"inputs[{i}]")
        sequences.append(array)
    return sequences


def standardize_sequence(sequence: np.ndarray, spec: SequenceProcessor) -> np.ndarray:
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    return ((sequence - mean) / std).astype(np.float32, copy=False)


def pad_sequences(sequences: Sequence[np.ndarray], pad_value: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``[T_i, F]`` arrays -> ``[N, max T, F]`` padded after each sequence, and ``[N]`` int64 lengths."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    features = sequences[0].shape[1]
    batch = np.full((len(sequences), int(lengths.max()), features), pad_value, dtype=np.float32)
    for i, sequence in enumerate(sequences):
        batch[i, : len(sequence)] = sequence
    return batch, lengths


def sequences_to_tensors(sequences: Sequence[np.ndarray], spec: SequenceProcessor) -> Tensors:
    """Raw sequences -> the model's sequence and lengths inputs."""
    batch, lengths = pad_sequences([standardize_sequence(s, spec) for s in sequences], spec.pad_value)
    return {spec.input: batch, spec.lengths_input: lengths}


class SequenceInput:
    """``/predict`` for a model whose config has a sequence processor."""

    kind = "sequence"

    def __init__(self, spec: SequenceProcessor) -> None:
        self.spec = spec

    def from_json(self, value: Any) -> Tensors:
        return sequences_to_tensors(sequences_from_json(value, self.spec), self.spec)
