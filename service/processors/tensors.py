"""``/predict`` for a model with no processor: named tensors in, as JSON (``{"inputs": {name: nested lists}}``),
each converted to its input's datatype; its shape is the nesting's. The data plane checks them against the config
as it checks OIP tensors."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.backends import Tensors
from service.config import ModelConfig
from service.datatypes import DTYPES, as_bytes_tensor
from service.errors import InvalidDatatype, MalformedRequest


class TensorInput:
    kind = "tensors"

    def __init__(self, config: ModelConfig) -> None:
        self.datatypes = {t.name: t.datatype for t in config.inputs}
        self.model = config.name

    def from_json(self, value: Any) -> Tensors:
        if not isinstance(value, dict):
            raise MalformedRequest(f"inputs: model '{self.model}' takes named tensors, expected an object "
                                   f"{{name: values}} with {sorted(self.datatypes)}")
        tensors: Tensors = {}
        for name, values in value.items():
            datatype = self.datatypes.get(name)
            if datatype is None:
                raise MalformedRequest(f"unknown input {name!r}; model '{self.model}' takes {sorted(self.datatypes)}")
            tensors[name] = self._array(name, values, datatype)
        return tensors

    @staticmethod
    def _array(name: str, values: Any, datatype: str) -> np.ndarray:
        if datatype == "BYTES":
            shape = np.asarray(values, dtype=object).shape
            flat = np.asarray(values, dtype=object).ravel().tolist() if shape else [values]
            return as_bytes_tensor(flat, shape)
        try:
            return np.asarray(values, dtype=DTYPES[datatype])
        except (ValueError, TypeError, OverflowError) as error:
            raise InvalidDatatype(f"input '{name}': expected a (regular) array of {datatype} values: {error}") from None
