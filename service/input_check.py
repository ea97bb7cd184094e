"""A request's tensors checked against a served model's config, before anything joins a batch.

Built once per served version (the checks are a few comparisons per input on the hot path). Every refusal names
what was expected and what came: unknown or missing inputs, datatype, rank and every fixed axis, rows that disagree
between inputs, NaN or infinite floats, BYTES that are not UTF-8 text, ragged lengths out of range. The result is
the request's rows (along the batch axis; 1 for a model that does not batch) and its batch key: requests may
share a batch only when their keys are equal (the same size on every axis but the batch axis and the ragged
ones).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from service.backends import Tensors
from service.config import ModelConfig
from service.datatypes import DTYPES, datatype_of
from service.errors import InvalidDatatype, InvalidShape, InvalidValue, MalformedRequest
from service.processors.image import check_finite


@dataclass(frozen=True)
class _Input:
    name: str
    datatype: str
    dtype: np.dtype
    shape: tuple[int, ...]
    tail: tuple[int, ...] | None  # the shape after the batch axis, when every axis of it is fixed
    pretty: str
    floating: bool
    text: bool
    open_axes: tuple[int, ...]  # axes (not the batch axis) that may differ between requests and are not ragged


@dataclass(frozen=True)
class _Lengths:
    input: str
    lengths: str | None
    axis: int
    max_size: int | None


class InputCheck:
    def __init__(self, config: ModelConfig, batching: bool) -> None:
        self.model = config.name
        self.batching = batching
        ragged = {(a.input, a.axis) for a in config.ragged}
        self._inputs = [
            _Input(t.name, t.datatype, DTYPES[t.datatype], tuple(t.shape),
                   tuple(t.shape[1:]) if batching and t.shape and -1 not in t.shape[1:] else None,
                   ", ".join(str(d) for d in t.shape),
                   t.datatype in ("FP16", "FP32", "FP64"), t.datatype == "BYTES",
                   tuple(i for i, d in enumerate(t.shape) if d == -1 and (i > 0 or not batching)
                         and (t.name, i) not in ragged))
            for t in config.inputs
        ]
        self._names = {t.name for t in config.inputs}
        self._ragged = [_Lengths(a.input, a.lengths_input, a.axis, a.max_size) for a in config.ragged]
        self._keyed = batching and any(i.open_axes for i in self._inputs)

    def check(self, inputs: Tensors, trusted: bool = False) -> tuple[int, Hashable]:
        """``trusted``: made by a processor from values it checked (no NaN or text check needed again)."""
        if inputs.keys() != self._names:
            self._names_error(inputs)
        rows: int | None = None
        for spec in self._inputs:
            array = inputs[spec.name]
            if array.dtype != spec.dtype and (received := datatype_of(array)) != spec.datatype:
                raise InvalidDatatype(f"input '{spec.name}': expected datatype {spec.datatype}, received "
                                      f"'{received}'")
            shape = array.shape
            if not (shape[1:] == spec.tail and len(shape) == len(spec.shape) if spec.tail is not None
                    else _fits(shape, spec.shape)):
                raise InvalidShape(f"input '{spec.name}': expected shape [{spec.pretty}], received {list(shape)}")
            if self.batching:
                if rows is None:
                    rows = shape[0]
                elif shape[0] != rows:
                    sizes = {i.name: inputs[i.name].shape[0] for i in self._inputs}
                    raise InvalidShape(f"inputs disagree on the batch size: {sizes}")
            if trusted:
                continue
            if spec.floating:
                check_finite(array, f"input '{spec.name}'")
            elif spec.text:
                _check_text(array, spec.name)
        if self.batching and not rows:
            raise InvalidShape(f"inputs of model '{self.model}': empty batch (0 rows)")
        for ragged in self._ragged:
            self._check_ragged(inputs, ragged)
        key = tuple(tuple(inputs[i.name].shape[a] for a in i.open_axes) for i in self._inputs) if self._keyed \
            else None
        return (rows or 0) if self.batching else 1, key

    def _names_error(self, inputs: Tensors) -> None:
        unknown = sorted(set(inputs) - self._names)
        if unknown:
            raise MalformedRequest(f"unknown input '{unknown[0]}'; model '{self.model}' takes {sorted(self._names)}")
        raise MalformedRequest(f"missing input(s) {sorted(self._names - set(inputs))}; model '{self.model}' takes "
                               f"{sorted(self._names)}")

    @staticmethod
    def _check_ragged(inputs: Tensors, ragged: _Lengths) -> None:
        size = inputs[ragged.input].shape[ragged.axis]
        if ragged.max_size is not None and size > ragged.max_size:
            raise InvalidShape(f"input '{ragged.input}': {size} along axis {ragged.axis} exceed the limit of "
                               f"{ragged.max_size}")
        if ragged.lengths is not None:
            lengths = inputs[ragged.lengths]
            if lengths.size and (lengths.min() < 1 or lengths.max() > size):
                raise InvalidValue(f"input '{ragged.lengths}': each length must be 1..{size} (axis {ragged.axis} "
                                   f"of '{ragged.input}'), received {lengths.min()}..{lengths.max()}")


def _fits(shape: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    return len(shape) == len(expected) and all(d == -1 or d == a for d, a in zip(expected, shape, strict=True))


def _check_text(array: np.ndarray, name: str) -> None:
    for i, value in enumerate(array.ravel()):
        try:
            value.decode("utf-8")
        except (UnicodeDecodeError, AttributeError):
            raise InvalidValue(f"input '{name}': element {i} is not UTF-8 text ({value!r:.40}); onnxruntime "
                               f"string tensors hold text") from None
