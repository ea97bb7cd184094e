"""Published samples: a handful of real test-set inputs with their true labels, kept beside a model version in
``samples/``, so that a person (the page at ``/``, or anyone with ``curl``) can try a model on the data it was
measured on and see right and wrong answers.

    models/<name>/<version>/samples/index.json        {"dataset", "split", "items": [{"file", "label", "index",
                                                       "row", "note"?}]}
    models/<name>/<version>/samples/test-00000.png    a picture: exactly the dataset's pixels, a file /predict takes
    models/<name>/<version>/samples/test-00002.csv    a sequence: one frame per line, its values comma-separated

A few KB per model: one item per class (the first of each class in the test split) and the first test items the
version gets wrong. Written by the pipeline's export (``training.samples``); optional, like the report: a model
without samples is tried with an example built from its signature (``GET /models/{name}/samples``).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

SAMPLES_DIR = "samples"
INDEX_FILE = "index.json"
SAFE_FILE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\.(png|csv)$"


class SampleItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(pattern=SAFE_FILE, description="a file in samples/: a PNG picture or a CSV of frames")
    label: str = Field(description="the true label")
    index: int = Field(ge=0, description="the true label's class index")
    row: int = Field(ge=0, description="the item's row in the dataset's split")
    note: str | None = None


class SampleIndex(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    split: str = "test"
    items: list[SampleItem]

    @classmethod
    def load(cls, version_folder: Path) -> SampleIndex | None:
        path = version_folder / SAMPLES_DIR / INDEX_FILE
        return cls.model_validate_json(path.read_text()) if path.exists() else None

    def file(self, version_folder: Path, name: str) -> Path | None:
        """The path of one listed file; None for a name the index does not list (no other file is ever read)."""
        listed = {item.file for item in self.items}
        return version_folder / SAMPLES_DIR / name if name in listed else None


@dataclass
class Sample:
    """One sample to publish: ``data`` is a picture's ``[H, W]`` (or ``[H, W, C]``) uint8 pixels, or a sequence's
    ``[T, F]`` float frames."""

    row: int
    index: int
    label: str
    data: np.ndarray
    note: str | None = None


def write_samples(version_folder: Path, dataset: str, samples: list[Sample], split: str = "test") -> None:
    folder = version_folder / SAMPLES_DIR
    folder.mkdir()
    items = []
    for sample in samples:
        picture = sample.data.dtype == np.uint8
        name = f"{split}-{sample.row:05d}.{'png' if picture else 'csv'}"
        (folder / name).write_bytes(png_bytes(sample.data) if picture else csv_bytes(sample.data))
        items.append(SampleItem(file=name, label=sample.label, index=sample.index, row=sample.row, note=sample.note))
    index = SampleIndex(dataset=dataset, split=split, items=items)
    (folder / INDEX_FILE).write_text(json.dumps(index.model_dump(exclude_none=True), indent=1) + "\n")


def png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def csv_bytes(frames: np.ndarray) -> bytes:
    """Frames as text, one per line, each float32 value in the shortest form that reads back to the same value."""
    values = frames.astype(np.float32)
    return "".join(",".join(str(v) for v in frame) + "\n" for frame in values).encode()


def read_frames(path: Path) -> list[list[float]]:
    return [[float(v) for v in line.split(",")] for line in path.read_text().splitlines() if line.strip()]
