"""Pictures and raw pixel arrays -> an image model's input, exactly as its config's ``processor`` says.

Training's accuracy gate calls ``normalize_pixels`` too, so the published accuracy is the accuracy of what the
service computes. Everything is validated here, before anything joins a batch.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.backends import Tensors
from service.config import ImageProcessor
from service.datatypes import DTYPES
from service.errors import ImageTooLarge, InvalidImage, InvalidShape, InvalidValue
from service.processors.values import float_array, non_empty_list

ALLOWED_IMAGE_FORMATS = frozenset({"PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF", "MPO"})
IMAGENET_CROP = 0.875  # resize the shorter side to height / 0.875 (224 -> 256), then crop the centre


def _per_channel(value: float | list[float], channels: int) -> np.ndarray | np.float32:
    if isinstance(value, list):
        return np.asarray(value if len(value) == channels else value * channels, dtype=np.float32)
    return np.float32(value)


def normalize_pixels(pixels: np.ndarray, spec: ImageProcessor, datatype: str = "FP32") -> np.ndarray:
    """``[N, H, W]`` (one channel) or ``[N, H, W, C]`` raw pixel values -> the model's input tensor:
    ``(v * scale - mean) / std`` per channel in ``datatype`` and ``spec.layout``; a UINT8 input takes the pixels."""
    values: np.ndarray
    if datatype == "UINT8":
        values = pixels.astype(np.uint8, copy=False)
        if spec.invert:
            values = np.uint8(spec.pixel_max) - values
    else:
        values = pixels.astype(np.float32, copy=False)
        if spec.invert:
            values = spec.pixel_max - values
        scaled = values * np.float32(spec.scale)
        if values.ndim == 4:  # channels last: mean and std broadcast along it
            values = (scaled - _per_channel(spec.mean, spec.channels)) / _per_channel(spec.std, spec.channels)
        else:
            values = (scaled - np.float32(_scalar(spec.mean))) / np.float32(_scalar(spec.std))
    if values.ndim == 3:
        values = values[:, None, :, :] if spec.layout == "NCHW" else values[:, :, :, None]
    elif spec.layout == "NCHW":
        values = values.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(values, dtype=DTYPES[datatype])


def _scalar(value: float | list[float]) -> float:
    return value[0] if isinstance(value, list) else value


def pixels_from_json(value: Any, spec: ImageProcessor) -> np.ndarray:
    """A JSON list of pixel arrays -> ``[N, H, W]`` (one channel) or ``[N, H, W, C]`` float32, validated.
    One-channel images may also come as ``[1, H, W]``."""
    c = spec.channels
    if not isinstance(value, list) or not value:
        non_empty_list(value, f"{_per_image(spec)} pixel arrays")
    array = float_array(value, "inputs", "a list of arrays of numbers")
    if c == 1 and array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    expected = (spec.height, spec.width) if c == 1 else (spec.height, spec.width, c)
    if array.shape[1:] != expected or array.ndim != len(expected) + 1:
        pretty = ", ".join(str(d) for d in expected)
        raise InvalidShape(f"inputs: expected shape [N, {pretty}] (N images of {_per_image(spec)} pixels), received "
                           f"{list(array.shape)}")
    check_finite(array, "inputs")
    low, high = float(array.min()), float(array.max())
    if low < spec.pixel_min or high > spec.pixel_max:
        raise InvalidValue(
            f"inputs: pixel values must lie in [{spec.pixel_min:g}, {spec.pixel_max:g}], "
            f"received values from {low:g} to {high:g}"
        )
    return array


def _per_image(spec: ImageProcessor) -> str:
    return f"{spec.height}x{spec.width}" + (f"x{spec.channels}" if spec.channels > 1 else "")


def check_finite(array: np.ndarray, what: str) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise InvalidValue(f"{what}: {bad} value(s) are NaN or infinite")


@dataclass
class Picture:
    """A decoded picture, ``[H, W]`` or ``[H, W, C]`` uint8 pixels as the model's processor makes them, and what
    was done to it, in order, in words a person reads (the page at ``/`` shows them beside its preview)."""

    pixels: np.ndarray
    steps: list[str]
    inverted: bool = False


def decode_picture(data: bytes, spec: ImageProcessor, max_pixels: int, filename: str = "file") -> Picture:
    """Picture bytes of any size and mode -> ``[H, W]`` or ``[H, W, C]`` uint8 pixels, per the config."""
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
    steps = [f"read a {image.format} picture, {width}x{height}, mode {image.mode}"]
    inverted = False
    try:
        image.load()
        if image.getexif().get(0x0112, 1) != 1:  # the EXIF orientation tag
            steps.append("turned upright as its EXIF orientation says")
        image = ImageOps.exif_transpose(image) or image
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (spec.background,) * 3 + (255,))
            if np.asarray(rgba.getchannel("A")).min() < 255:
                steps.append(f"transparent parts composited over {_shade(spec.background)} ({spec.background})")
            image = Image.alpha_composite(background, rgba)
        mode = "L" if spec.color_mode == "L" else "RGB"
        if image.mode != mode:
            steps.append(f"converted to {'8-bit greyscale' if mode == 'L' else 'RGB'}")
        converted = image.convert(mode)
        if spec.auto_invert:
            border = _border_median(np.asarray(converted.convert("L")))
            light_background = spec.background > (spec.pixel_min + spec.pixel_max) / 2
            if (border > 127.5) != light_background:
                converted = ImageOps.invert(converted)
                inverted = True
                steps.append(f"inverted: its border is {_shade(border)} (median {border:g}) and the model was "
                             f"trained on items on {_shade(spec.background)}")
        fitted = _resize(converted, spec, max_pixels, filename)
        steps.append(_describe_resize(spec, converted.size))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise InvalidImage(f"{filename}: image data is truncated or corrupt ({error})") from error
    pixels = np.asarray(fitted, dtype=np.uint8)
    if spec.color_mode == "BGR":
        steps.append("channels reordered to BGR")
        pixels = pixels[:, :, ::-1]
    return Picture(pixels, steps, inverted)


def _shade(value: float) -> str:
    return "light" if value > 127.5 else "dark"


def _border_median(grey: np.ndarray) -> float:
    """The median of a ring along the picture's edges, 1/32 of its shorter side wide (at least one pixel)."""
    ring = max(1, min(grey.shape) // 32)
    edges = [grey[:ring], grey[-ring:], grey[ring:-ring, :ring], grey[ring:-ring, -ring:]]
    return float(np.median(np.concatenate([edge.ravel() for edge in edges])))


def _describe_resize(spec: ImageProcessor, size: tuple[int, int]) -> str:
    if spec.resize == "fit-pad-bilinear":
        return (f"fitted into {spec.width}x{spec.height} keeping its aspect ratio (bilinear), padded with "
                f"{spec.background}" if size != (spec.width, spec.height) else f"already {spec.width}x{spec.height}")
    shorter = spec.resize_shorter_to or round(min(spec.height, spec.width) / IMAGENET_CROP)
    return f"shorter side resized to {shorter} (bilinear), centre cropped to {spec.width}x{spec.height}"


def _background(spec: ImageProcessor) -> int | tuple[int, int, int]:
    return spec.background if spec.color_mode == "L" else (spec.background,) * 3


def _resize(image: Any, spec: ImageProcessor, max_pixels: int, filename: str) -> Any:
    from PIL import Image, ImageOps

    if spec.resize == "fit-pad-bilinear":
        return ImageOps.pad(image, (spec.width, spec.height), method=Image.Resampling.BILINEAR,
                            color=_background(spec))
    shorter = spec.resize_shorter_to or round(min(spec.height, spec.width) / IMAGENET_CROP)
    size = shorter_side_size(image.size, shorter)
    if size[0] * size[1] > max_pixels:  # a sliver of a picture (1x40000) would become gigabytes before the crop
        raise ImageTooLarge(f"{filename}: its shorter side resized to {shorter}, the {image.width}x{image.height} "
                            f"picture would be {size[0]}x{size[1]} = {size[0] * size[1]} pixels; the limit is "
                            f"{max_pixels}")
    resized = image.resize(size, Image.Resampling.BILINEAR)
    left, top = centre_crop_offsets(resized.size, (spec.width, spec.height))
    if left < 0 or top < 0:  # a crop larger than the picture (resize_shorter_to under the input's size): as
        # CenterCrop does, pad it (with ``background``) on both sides, the odd pixel after, then crop
        padded = Image.new(resized.mode, (max(resized.width, spec.width), max(resized.height, spec.height)),
                           _background(spec))
        padded.paste(resized, (max(0, spec.width - resized.width) // 2, max(0, spec.height - resized.height) // 2))
        resized = padded
        left, top = centre_crop_offsets(resized.size, (spec.width, spec.height))
    return resized.crop((left, top, left + spec.width, top + spec.height))


def shorter_side_size(size: tuple[int, int], shorter: int) -> tuple[int, int]:
    """torchvision's ``Resize(shorter)``: the shorter side becomes ``shorter``, the longer keeps the aspect ratio,
    truncated (``int``, not rounded: ``transforms.functional._compute_resized_output_size``), so the tensor a
    served model sees is the one its evaluation transform made."""
    width, height = size
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def centre_crop_offsets(size: tuple[int, int], crop: tuple[int, int]) -> tuple[int, int]:
    """torchvision's ``CenterCrop``: the left and top offsets, ``round((size - crop) / 2)`` (half to even)."""
    return round((size[0] - crop[0]) / 2), round((size[1] - crop[1]) / 2)


class ImageInput:
    """``/predict`` for a model whose config has an image processor: pictures or raw pixels -> its input."""

    kind = "image"

    def __init__(self, spec: ImageProcessor, datatype: str, max_pixels: int) -> None:
        self.spec = spec
        self.datatype = datatype
        self.max_pixels = max_pixels

    def from_json(self, value: Any) -> Tensors:
        return {self.spec.input: normalize_pixels(pixels_from_json(value, self.spec), self.spec, self.datatype)}

    def from_files(self, files: list[tuple[str, bytes]]) -> Tensors:
        return self.from_pictures(self.pictures(files))

    def pictures(self, files: list[tuple[str, bytes]]) -> list[Picture]:
        return [decode_picture(data, self.spec, self.max_pixels, name) for name, data in files]

    def from_pictures(self, pictures: list[Picture]) -> Tensors:
        pixels = np.stack([picture.pixels for picture in pictures])
        return {self.spec.input: normalize_pixels(pixels, self.spec, self.datatype)}
