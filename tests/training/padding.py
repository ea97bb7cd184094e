"""The check both LSTM export tests make: a short sequence answered alone and padded beside a long one (its padding
filled with a value far from the data) gets the same probabilities."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort


def alone_and_padded(session: ort.InferenceSession) -> tuple[np.ndarray, np.ndarray]:
    """The short sequence's answer alone, and both sequences' answers as one padded batch."""
    rng = np.random.default_rng(0)
    short, long = rng.normal(size=(7, 12)).astype(np.float32), rng.normal(size=(29, 12)).astype(np.float32)
    alone = session.run(None, {"sequence": short[None], "lengths": np.array([7])})[0]
    batch = np.zeros((2, 29, 12), np.float32)
    batch[0, :7], batch[0, 7:], batch[1] = short, 9.0, long
    together = session.run(None, {"sequence": batch, "lengths": np.array([7, 29])})[0]
    return alone, together
