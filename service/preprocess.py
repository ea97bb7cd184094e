"""Raw user input -> model tensors, exactly as the manifest's preprocessing says.

Training's ONNX accuracy gate calls these same functions, so the published accuracy is the accuracy of what the
service computes. Everything is validated here, before anything joins a batch.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from service.errors import ImageTooLarge, InvalidImage, InvalidShape, InvalidValue
from service.manifest import ImagePreprocessing, SequencePreprocessing

ALLOWED_IMAGE_FORMATS = frozenset({"PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF", "MPO"})


def normalize_pixels(pixels: np.ndarray, spec: ImagePreprocessing) -> np.ndarray:
    """``[N, H, W]`` raw pixel values (0–255) -> ``[N, 1, H, W]`` float32 model input."""
    values = pixels.astype(np.float32, copy=False)
    if spec.invert:
        values = spec.pixel_max - values
    scaled = values * np.float32(spec.scale)
    out = (scaled - np.float32(spec.mean)) / np.float32(spec.std)
    return np.ascontiguousarray(out[:, None, :, :], dtype=np.float32)


def _non_empty_list(value: Any, expected: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise InvalidShape(f"inputs: expected a non-empty list of {expected}")
    return value


def _float_array(value: Any, where: str, expected: str) -> np.ndarray:
    """Nested JSON lists as float32, or InvalidShape naming what was expected (ragged or non-numeric data)."""
    try:
        return np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError) as error:
        raise InvalidShape(f"{where}: expected {expected}, got ragged or non-numeric data ({error})") from error


def pixels_from_json(value: Any, spec: ImagePreprocessing) -> np.ndarray:
    """A JSON list of ``H×W`` pixel arrays -> ``[N, H, W]`` float32, validated."""
    images = _non_empty_list(value, f"{spec.height}x{spec.width} pixel arrays")
    array = _float_array(images, "inputs", f"a list of {spec.height}x{spec.width} arrays of numbers")
    if array.ndim == 4 and array.shape[1] == spec.channels:
        array = array[:, 0]
    expected = (spec.height, spec.width)
    if array.ndim != 3 or array.shape[1:] != expected:
        raise InvalidShape(
            f"inputs: expected shape [N, {spec.height}, {spec.width}] (N images of {spec.height}x{spec.width} "
            f"pixels), received {list(array.shape)}"
        )
    check_finite(array, "inputs")
    low, high = float(array.min()), float(array.max())
    if low < spec.pixel_min or high > spec.pixel_max:
        raise InvalidValue(
            f"inputs: pixel values must lie in [{spec.pixel_min:g}, {spec.pixel_max:g}], "
            f"received values from {low:g} to {high:g}"
        )
    return array


def check_finite(array: np.ndarray, what: str) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise InvalidValue(f"{what}: {bad} value(s) are NaN or infinite")


def decode_image(data: bytes, spec: ImagePreprocessing, max_pixels: int, filename: str = "file") -> np.ndarray:
    """Picture bytes of any size and mode -> ``[H, W]`` uint8 pixels, per the manifest."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise InvalidImage(f"{filename}: empty file")
    try:
        image: Image.Image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as error:
        raise InvalidImage(
            f"{filename}: not a recognised image (expected one of {', '.join(sorted(ALLOWED_IMAGE_FORMATS))}; "
            f"first bytes {data[:8].hex()})"
        ) from error
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(f"{filename}: {error}; the limit is {max_pixels} pixels") from error
    except (OSError, ValueError) as error:
        raise InvalidImage(f"{filename}: cannot read image header ({error})") from error
    if image.format not in ALLOWED_IMAGE_FORMATS:
        raise InvalidImage(f"{filename}: image format {image.format} is not accepted")
    width, height = image.size
    if width * height > max_pixels or width <= 0 or height <= 0:
        raise ImageTooLarge(
            f"{filename}: image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    try:
        image.load()
        image = ImageOps.exif_transpose(image) or image
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (spec.background,) * 3 + (255,))
            image = Image.alpha_composite(background, rgba)
        gray = image.convert(spec.color_mode)
        fitted = ImageOps.pad(
            gray, (spec.width, spec.height), method=Image.Resampling.BILINEAR, color=spec.background
        )
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise InvalidImage(f"{filename}: image data is truncated or corrupt ({error})") from error
    return np.asarray(fitted, dtype=np.uint8)


def sequences_from_json(value: Any, spec: SequencePreprocessing) -> list[np.ndarray]:
    """A JSON list of sequences (each a list of ``features``-value frames) -> float32 ``[T, F]`` arrays."""
    sequences = []
    for i, item in enumerate(_non_empty_list(value, f"sequences of {spec.features}-value frames")):
        array = _float_array(item, f"inputs[{i}]", f"a list of frames of {spec.features} numbers")
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


def standardize_sequence(sequence: np.ndarray, spec: SequencePreprocessing) -> np.ndarray:
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


def sequences_to_tensors(
    sequences: Sequence[np.ndarray], spec: SequencePreprocessing
) -> tuple[np.ndarray, np.ndarray]:
    """Raw sequences -> the model's ``(sequence, lengths)`` inputs."""
    return pad_sequences([standardize_sequence(s, spec) for s in sequences], spec.pad_value)


def top_k_count(requested: Any, classes: int) -> int:
    if requested is None:
        return min(3, classes)
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise InvalidValue(f"top_k: expected a positive integer, received {requested!r}")
    return min(requested, classes)
