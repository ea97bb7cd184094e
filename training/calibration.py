"""The inputs an INT8 variant is calibrated on and judged on, made by the service's own processors, so that the
activation ranges it learns are those of what the server will feed it.

Three sources:
- a built-in model's data set, named by its report (``fashion-mnist``, ``japanese-vowels``): calibration draws
  ``count`` training inputs (seeded), evaluation takes the whole test split with its labels. Pixels go through
  ``normalize_pixels`` and frames through ``sequences_to_tensors``: what ``/predict`` calls.
- a user's ``.npz``: arrays named like the model's inputs, the first axis indexing the samples; an array named
  ``labels`` (class indices, one per sample) makes the set labelled. Each sample is checked by the data plane's
  own ``InputCheck``, so a bad file is refused naming the input, expected and received.
- a folder of pictures, for a model with an image processor: each decoded by the server's ``ImageInput``
  (``from_files``, exactly as an upload). Pictures in sub-folders named by the model's labels make it labelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from service.backends import Tensors
from service.config import ImageProcessor, ModelConfig, SequenceProcessor
from service.errors import NNServeError
from service.input_check import InputCheck
from service.loading import LoadedVersion
from service.processors.image import ImageInput, normalize_pixels
from service.processors.sequence import sequences_to_tensors
from service.report import InputSet as InputSetInfo
from service.settings import Settings

BATCH = 64  # rows per feed: calibration statistics and gate runs alike
DATASETS = ("fashion-mnist", "japanese-vowels")
PICTURE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
LABELS_ARRAY = "labels"


class CalibrationError(ValueError):
    """The calibration or evaluation inputs cannot be used; the message names the file and the reason."""


@dataclass
class InputSet:
    info: InputSetInfo
    batches: list[Tensors]
    labels: np.ndarray | None

    @property
    def first_sample(self) -> Tensors:
        """One row of the first feed (the speed measurement repeats it)."""
        return {name: array[:1] if array.ndim else array for name, array in self.batches[0].items()}


def draw(total: int, count: int | None, seed: int) -> tuple[np.ndarray, int | None]:
    """Indices of ``count`` of ``total`` samples drawn without replacement (sorted), or all of them (seed None)."""
    if count is None or count >= total:
        return np.arange(total), None
    return np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False)), seed


def rows_per_feed(loaded: LoadedVersion) -> int:
    return min(BATCH, loaded.policy.max_batch_size) if loaded.policy.batching else 1


def dataset_set(loaded: LoadedVersion, split: Literal["train", "test"], count: int | None, seed: int,
                data_dir: Path | None) -> InputSet:
    """A built-in model's own data set, as its report names it, through its config's processor."""
    report, config = loaded.report, loaded.config
    dataset = report.dataset.name if report and report.dataset else None
    if dataset not in DATASETS:
        named = f"its report names {dataset!r}" if dataset else "its report names no data set"
        raise CalibrationError(f"model '{config.name}': {named} (nnserve has {', '.join(DATASETS)}): give "
                               f"calibration inputs, an .npz of arrays named like its inputs or a folder of pictures")
    rows = rows_per_feed(loaded)
    spec = config.processor
    if dataset == "fashion-mnist" and isinstance(spec, ImageProcessor):
        from training.data import load_fashion_mnist

        images = load_fashion_mnist(data_dir)
        pixels, labels = (images.train_images, images.train_labels) if split == "train" else \
            (images.test_images, images.test_labels)
        index, drawn = draw(len(labels), count, seed)
        datatype = config.input(spec.input).datatype
        batches = [{spec.input: normalize_pixels(pixels[index[i:i + rows]], spec, datatype)}
                   for i in range(0, len(index), rows)]
        file = "train-images-idx3-ubyte.gz" if split == "train" else "t10k-images-idx3-ubyte.gz"
    elif dataset == "japanese-vowels" and isinstance(spec, SequenceProcessor):
        from training.data import load_japanese_vowels

        vowels = load_japanese_vowels(data_dir)
        sequences, labels = (vowels.train_sequences, vowels.train_labels) if split == "train" else \
            (vowels.test_sequences, vowels.test_labels)
        index, drawn = draw(len(labels), count, seed)
        batches = [sequences_to_tensors([sequences[j] for j in index[i:i + rows]], spec)
                   for i in range(0, len(index), rows)]
        file = f"JapaneseVowels_{split.upper()}.ts"
    else:
        raise CalibrationError(f"model '{config.name}': data set {dataset} does not fit its processor "
                               f"({spec.kind if spec else 'none'})")
    info = InputSetInfo(source=f"{dataset} {split} split ({file})", count=len(index), seed=drawn,
                        labelled=split == "test")
    return InputSet(info, batches, np.asarray(labels)[index] if split == "test" else None)


def user_set(path: Path, loaded: LoadedVersion, count: int | None, seed: int) -> InputSet:
    """A user's ``.npz`` or folder of pictures (see the module's docstring)."""
    if path.is_dir():
        return _pictures(path, loaded, count, seed)
    if path.suffix != ".npz" or not path.is_file():
        raise CalibrationError(f"{path}: expected an .npz file of arrays named like the model's inputs, or a folder "
                               f"of pictures")
    return _npz(path, loaded, count, seed)


def _npz(path: Path, loaded: LoadedVersion, count: int | None, seed: int) -> InputSet:
    config = loaded.config
    names = [t.name for t in config.inputs]
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as error:
        raise CalibrationError(f"{path}: not a readable .npz ({error})") from error
    if set(arrays) - {LABELS_ARRAY} != set(names) - {LABELS_ARRAY}:
        raise CalibrationError(f"{path}: expected arrays named like the model's inputs {names} (and optionally "
                               f"'{LABELS_ARRAY}'), received {sorted(arrays)}")
    sizes = {name: (len(a) if a.ndim else 0) for name, a in arrays.items()}
    total = sizes[names[0]]
    labels = arrays.pop(LABELS_ARRAY, None) if LABELS_ARRAY not in names else None
    if set(sizes.values()) != {total} or total == 0:
        raise CalibrationError(f"{path}: every array's first axis counts the samples and must agree (at least 1), "
                               f"received {sizes}")
    index, drawn = draw(total, count, seed)
    samples = {name: a[index] for name, a in arrays.items()}
    rows = rows_per_feed(loaded)
    check = InputCheck(config, loaded.policy.batching)
    batches = []
    for start in range(0, len(index), rows):
        feed = {name: _rows(a, start, rows, config, name, loaded.policy.batching) for name, a in samples.items()}
        try:
            check.check(feed)
        except NNServeError as error:
            raise CalibrationError(f"{path}: samples {start}..{start + len(next(iter(feed.values()))) - 1}: "
                                   f"{error.message}") from error
        batches.append(feed)
    chosen = _labels(labels, config, path)
    return InputSet(InputSetInfo(source=str(path), count=len(index), seed=drawn, labelled=chosen is not None),
                    batches, chosen[index] if chosen is not None else None)


def _rows(array: np.ndarray, start: int, rows: int, config: ModelConfig, name: str, batching: bool) -> np.ndarray:
    """Rows ``start:start + rows``; for a model that does not batch, one sample as its input's rank wants it."""
    if batching or array.ndim == len(config.input(name).shape):
        return array[start:start + rows]
    return np.asarray(array[start])


def _pictures(folder: Path, loaded: LoadedVersion, count: int | None, seed: int) -> InputSet:
    config = loaded.config
    spec = config.processor
    if not isinstance(spec, ImageProcessor):
        raise CalibrationError(f"{folder}: a folder of pictures needs a model with an image processor; model "
                               f"'{config.name}' takes {spec.kind + 's' if spec else 'named tensors'}: give an .npz "
                               f"of arrays named like its inputs")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in PICTURE_SUFFIXES and p.is_file())
    if not files:
        raise CalibrationError(f"{folder}: no pictures ({', '.join(sorted(PICTURE_SUFFIXES))}) found")
    nested = [p for p in files if p.parent != folder]
    labels = None
    if nested:
        if config.classification is None:
            raise CalibrationError(f"{folder}: pictures in sub-folders are labelled by the folder's name, but model "
                                   f"'{config.name}' has no labels: put them all at the top")
        if len(nested) != len(files):
            raise CalibrationError(f"{folder}: pictures in sub-folders are labelled by the folder's name; expected "
                                   f"every picture in one, received {len(files) - len(nested)} at the top")
        names = config.classification.labels
        unknown = sorted({p.relative_to(folder).parts[0] for p in files} - set(names))
        if unknown:
            raise CalibrationError(f"{folder}: sub-folders {unknown} are not labels of model '{config.name}' "
                                   f"(expected some of {names})")
        labels = np.array([names.index(p.relative_to(folder).parts[0]) for p in files])
    index, drawn = draw(len(files), count, seed)
    processor = ImageInput(spec, config.input(spec.input).datatype, Settings().max_image_pixels)
    rows = rows_per_feed(loaded)
    batches = []
    for start in range(0, len(index), rows):
        chosen = [files[i] for i in index[start:start + rows]]
        try:
            feed = processor.from_files([(str(p.relative_to(folder)), p.read_bytes()) for p in chosen])
        except NNServeError as error:
            raise CalibrationError(f"{folder}: {error.message}") from error
        batches.append(feed)
    return InputSet(InputSetInfo(source=f"{folder} ({len(files)} pictures)", count=len(index), seed=drawn,
                                 labelled=labels is not None), batches, labels[index] if labels is not None else None)


def _labels(labels: np.ndarray | None, config: ModelConfig, path: Path) -> np.ndarray | None:
    if labels is None:
        return None
    classes = len(config.classification.labels) if config.classification else None
    ok = labels.ndim == 1 and labels.dtype.kind in "iu"
    if ok and classes is not None and labels.size:
        ok = int(labels.min()) >= 0 and int(labels.max()) < classes
    if not ok:
        expected = f"integers in 0..{classes - 1}" if classes else "integers"
        found = f", values {labels.min()}..{labels.max()}" if labels.size and labels.dtype.kind in "iuf" else ""
        raise CalibrationError(f"{path}: '{LABELS_ARRAY}' must hold one class index per sample ({expected}), "
                               f"received {labels.dtype} {list(labels.shape)}{found}")
    return labels
