"""The UEA/UCR ``.ts`` time-series format: ``#`` comments, ``@`` headers, then one sample per line after ``@data``:
channels separated by ``:``, values within a channel by ``,``, the class label last."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.data.sources import DataError


def parse_ts(text: str, source: str = "<text>") -> tuple[list[np.ndarray], list[str], list[str]]:
    """Return (sequences as ``[time, channels]`` float32 arrays, labels, declared class labels)."""
    sequences: list[np.ndarray] = []
    labels: list[str] = []
    class_labels: list[str] = []
    in_data = False
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            lowered = line.lower()
            if lowered.startswith("@classlabel"):
                parts = line.split()
                class_labels = parts[2:] if len(parts) > 2 and parts[1].lower() == "true" else []
            elif lowered.startswith("@data"):
                in_data = True
            continue
        *channels, label = line.split(":")
        if not channels:
            raise DataError(f"{source}:{number}: a sample needs channels and a label")
        try:
            columns = [np.array([float(v) for v in channel.split(",")], dtype=np.float32) for channel in channels]
        except ValueError as error:
            raise DataError(f"{source}:{number}: bad value ({error})") from error
        lengths = {len(column) for column in columns}
        if len(lengths) != 1:
            raise DataError(f"{source}:{number}: channels of unequal length {sorted(lengths)}")
        sequences.append(np.stack(columns, axis=1))
        labels.append(label.strip())
    if not in_data:
        raise DataError(f"{source}: no @data section")
    if not sequences:
        raise DataError(f"{source}: no samples after @data")
    return sequences, labels, class_labels


def read_ts(path: Path) -> tuple[list[np.ndarray], list[str], list[str]]:
    try:
        text = path.read_text()
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not a text .ts file ({error})") from error
    return parse_ts(text, str(path))
