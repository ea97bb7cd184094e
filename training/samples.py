"""Which test-set items a built-in model publishes as its samples (``service.samples``), and a command that adds them
to versions published before samples existed.

The choice is fixed, not flattering: the first test item of each class, then the first ``WRONG`` items that this
version misclassifies (so a person trying it sees wrong answers as well as right ones).

    python -m training.samples --repository models --data-dir ../shared/data

adds ``samples/`` to every built-in version (its report names the family) that has none; nothing else is written,
and a version that has samples is left alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.config import ImageProcessor, ModelConfig, SequenceProcessor, read_config_file
from service.processors.image import normalize_pixels
from service.processors.sequence import sequences_to_tensors
from service.report import TrainingReport
from service.repository import MODEL_FILE, list_models, list_versions, version_dir
from service.samples import SAMPLES_DIR, Sample, write_samples
from training.families import FAMILIES

WRONG = 2  # misclassified items published beside one item per class
MISCLASSIFIED = "misclassified by this version when it was published"


def choose_rows(labels: np.ndarray, predicted: np.ndarray, wrong: int = WRONG) -> list[tuple[int, str | None]]:
    """(row, note) in test-set order: the first row of each class, then the first ``wrong`` misclassified rows
    not among them; every misclassified row says so."""
    rows = {int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)}
    rows.update([int(r) for r in np.flatnonzero(labels != predicted) if int(r) not in rows][:wrong])
    return [(row, MISCLASSIFIED if labels[row] != predicted[row] else None) for row in sorted(rows)]


def publish_samples(folder: Path, dataset: str, label_names: list[str], raw: np.ndarray | list[np.ndarray],
                    labels: np.ndarray, predicted: np.ndarray) -> None:
    """Write ``samples/`` into a version folder: raw test inputs as a person would send them (pixels 0-255 as PNG,
    raw frames as CSV)."""
    samples = []
    for row, note in choose_rows(labels, predicted):
        data = np.asarray(raw[row])
        samples.append(Sample(row=row, index=int(labels[row]), label=label_names[int(labels[row])],
                              data=data.astype(np.uint8 if data.dtype == np.uint8 else np.float32), note=note))
    write_samples(folder, dataset, samples)


def add_missing_samples(repository: Path, data_dir: Path | None) -> list[Path]:
    """Give every built-in version without ``samples/`` its samples; returns the folders written."""
    written = []
    for name in list_models(repository):
        for version in list_versions(repository / name):
            folder = version_dir(repository, name, version)
            if not (folder / SAMPLES_DIR).exists() and samples_for_version(folder, version, data_dir):
                written.append(folder)
    return written


def samples_for_version(folder: Path, version: int, data_dir: Path | None) -> bool:
    """Write ``samples/`` into the version folder of a built-in family's model (its report names the family: a
    model the pipeline trained, or an INT8 variant of one), chosen by this version's own predictions on the test
    set; False, writing nothing, for any other model."""
    from service.bench.inprocess import cpu_session
    from training.data import load_fashion_mnist, load_japanese_vowels

    report = TrainingReport.load(folder)
    if report is None or report.family not in FAMILIES:
        return False
    config = ModelConfig.model_validate({**read_config_file(folder), "version": version})
    spec = config.processor
    assert isinstance(spec, ImageProcessor | SequenceProcessor), f"{folder}: a built-in has a processor"
    if FAMILIES[report.family].is_image:
        images = load_fashion_mnist(data_dir)
        raw: np.ndarray | list[np.ndarray] = images.test_images
        labels, label_names, dataset = images.test_labels, images.labels, images.name
    else:
        sequences = load_japanese_vowels(data_dir)
        raw = sequences.test_sequences
        labels, label_names, dataset = sequences.test_labels, sequences.labels, sequences.name
    predicted = onnx_predict(cpu_session(folder / MODEL_FILE), spec, raw).argmax(1)
    publish_samples(folder, dataset, label_names, raw, labels, predicted)
    return True


def onnx_predict(session: ort.InferenceSession, spec: ImageProcessor | SequenceProcessor,
                 raw: np.ndarray | list[np.ndarray], batch_size: int = 256) -> np.ndarray:
    """Probabilities of raw test inputs (pixels 0-255, or raw frames) through the service's processors."""
    out = []
    for start in range(0, len(raw), batch_size):
        chunk = raw[start:start + batch_size]
        if isinstance(spec, ImageProcessor):
            feeds = {spec.input: normalize_pixels(np.asarray(chunk), spec)}
        else:
            feeds = sequences_to_tensors(list(chunk), spec)
        out.append(session.run(None, feeds)[0])
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.samples", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=Path("models"))
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    for folder in add_missing_samples(args.repository, args.data_dir):
        print(f"wrote {folder / SAMPLES_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
