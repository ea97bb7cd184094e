"""A model's outputs -> the body of a ``/predict`` answer: labelled predictions for a classifier (the config's
``classification``: top-k classes with their probabilities, softmax applied where the output holds logits),
named tensors otherwise."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.backends import Tensors
from service.config import Classification
from service.datatypes import datatype_of


def rows_of_scores(scores: np.ndarray) -> np.ndarray:
    """``[rows, classes]`` from an output of shape ``[rows, classes, (1, ...)]`` or ``[classes]``."""
    return scores.reshape(1, -1) if scores.ndim < 2 else scores.reshape(len(scores), -1)


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    out: np.ndarray = shifted / shifted.sum(axis=1, keepdims=True)
    return out


class ClassOutput:
    kind = "classification"

    def __init__(self, spec: Classification) -> None:
        self.spec = spec

    def respond(self, outputs: Tensors, k: int) -> dict[str, Any]:
        labels = self.spec.labels
        scores = rows_of_scores(outputs[self.spec.output])
        if self.spec.activation == "softmax":
            scores = softmax(scores.astype(np.float64))
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        predictions = []
        for row, ranked in zip(scores.tolist(), order.tolist(), strict=True):
            best = ranked[0]
            predictions.append({
                "label": labels[best], "index": best, "probability": row[best],
                "top_k": [{"label": labels[i], "index": i, "probability": row[i]} for i in ranked],
            })
        return {"predictions": predictions}


def tensor_json(array: np.ndarray) -> dict[str, Any]:
    datatype = datatype_of(array)
    data: Any = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in array.ravel()] \
        if datatype == "BYTES" else array.ravel()
    return {"datatype": datatype, "shape": list(array.shape), "data": data}


class TensorOutput:
    kind = "tensors"

    def respond(self, outputs: Tensors, k: int) -> dict[str, Any]:
        return {"outputs": {name: tensor_json(array) for name, array in outputs.items()}}
