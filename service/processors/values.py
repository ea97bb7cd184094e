"""Small checks every processor shares on JSON values: a non-empty list, nested lists as float32, top-k."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.errors import InvalidShape, InvalidValue


def non_empty_list(value: Any, expected: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise InvalidShape(f"inputs: expected a non-empty list of {expected}")
    return value


def float_array(value: Any, where: str, expected: str) -> np.ndarray:
    """Nested JSON lists as float32, or InvalidShape naming what was expected (ragged or non-numeric data)."""
    try:
        return np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError) as error:
        raise InvalidShape(f"{where}: expected {expected}, got ragged or non-numeric data ({error})") from error


def top_k_count(requested: Any, classes: int) -> int:
    if requested is None:
        return min(3, classes)
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise InvalidValue(f"top_k: expected a positive integer, received {requested!r}")
    return min(requested, classes)
