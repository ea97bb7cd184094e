"""The tensor ``/predict`` builds from a picture is the one the model's own evaluation transform builds.

The reference below is torchvision's ImageNet evaluation transform written out from its definitions (``Resize``:
the shorter side to 256, the longer scaled and truncated; ``CenterCrop``: offsets rounded half to even, padding
with zeros, the odd pixel after, when the crop is larger; ``ToTensor``; ``Normalize``), on PIL as torchvision does
for PIL pictures. Sizes are chosen where truncating and rounding, or flooring and rounding, give different pixels.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.config import ImageProcessor
from service.importer import IMAGENET_MEAN, IMAGENET_STD
from service.processors.image import ImageInput

RNG = np.random.default_rng(11)


def picture(width: int, height: int, mode: str = "RGB") -> bytes:
    channels = {"RGB": 3, "L": 1}[mode]
    pixels = RNG.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def evaluation_transform(data: bytes, crop: tuple[int, int], shorter: int, mean: list[float], std: list[float],
                         bgr: bool = False) -> np.ndarray:
    """[3, H, W] float32, as ``Resize(shorter)``, ``CenterCrop(crop)``, ``ToTensor()``, ``Normalize(mean, std)``."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    if min(width, height) != shorter:
        if width <= height:
            image = image.resize((shorter, int(shorter * height / width)), Image.Resampling.BILINEAR)
        else:
            image = image.resize((int(shorter * width / height), shorter), Image.Resampling.BILINEAR)
    crop_width, crop_height = crop
    pixels = np.asarray(image, dtype=np.float32)
    pad_top = (crop_height - pixels.shape[0]) // 2 if crop_height > pixels.shape[0] else 0
    pad_left = (crop_width - pixels.shape[1]) // 2 if crop_width > pixels.shape[1] else 0
    pad_bottom = (crop_height - pixels.shape[0] + 1) // 2 if crop_height > pixels.shape[0] else 0
    pad_right = (crop_width - pixels.shape[1] + 1) // 2 if crop_width > pixels.shape[1] else 0
    pixels = np.pad(pixels, ((pad_top, pad_bottom), (pad_left, pad_right), (0, 0)))
    top = round((pixels.shape[0] - crop_height) / 2)
    left = round((pixels.shape[1] - crop_width) / 2)
    pixels = pixels[top:top + crop_height, left:left + crop_width]
    if bgr:
        pixels = pixels[:, :, ::-1]
    tensor = (pixels / 255.0 - np.asarray(mean)) / np.asarray(std)
    return tensor.transpose(2, 0, 1).astype(np.float32)


def imagenet(**overrides: object) -> ImageProcessor:
    fields: dict[str, object] = {"input": "x", "height": 224, "width": 224, "channels": 3, "color_mode": "RGB",
                                 "resize": "shorter-side-crop", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    fields.update(overrides)
    return ImageProcessor.model_validate(fields)


def served(spec: ImageProcessor, data: bytes, datatype: str = "FP32") -> np.ndarray:
    tensors = ImageInput(spec, datatype, max_pixels=10_000_000).from_files([("picture.png", data)])
    assert list(tensors) == [spec.input]
    return tensors[spec.input][0]


# (width, height): 350x300 truncates 298.67 to 298 where rounding gives 299; 259x256 is not resized and crops at
# round(17.5) = 18 where flooring gives 17; 301x257 and a portrait 333x500 both ways; 200x180 is enlarged
SIZES = [(350, 300), (259, 256), (301, 257), (333, 500), (640, 480), (200, 180)]


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_an_imagenet_classifier_gets_what_its_evaluation_transform_makes(size: tuple[int, int]) -> None:
    data = picture(*size)
    expected = evaluation_transform(data, (224, 224), 256, IMAGENET_MEAN, IMAGENET_STD)
    got = served(imagenet(), data)
    assert got.shape == (3, 224, 224) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)


def test_bgr_channels_last_and_a_crop_that_is_not_square() -> None:
    data = picture(413, 297)
    spec = imagenet(color_mode="BGR", layout="NHWC", height=200, width=160, resize_shorter_to=230)
    # mean and std are listed in the model's channel order: here the first is the blue channel's
    expected = evaluation_transform(data, (160, 200), 230, IMAGENET_MEAN, IMAGENET_STD, bgr=True)
    got = served(spec, data)
    assert got.shape == (200, 160, 3)
    np.testing.assert_allclose(got, expected.transpose(1, 2, 0), rtol=0, atol=2e-6)


def test_a_crop_larger_than_the_resized_picture_is_padded_around_it() -> None:
    data = picture(300, 250)
    spec = imagenet(resize_shorter_to=211, mean=0.0, std=1.0)  # 253x211, cropped to 224x224: 13 rows of padding
    expected = evaluation_transform(data, (224, 224), 211, [0.0] * 3, [1.0] * 3)
    got = served(spec, data)
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)
    assert not got[:, :6].any() and not got[:, -7:].any() and got[:, 6:-7].any()


def test_a_uint8_model_takes_the_cropped_pixels_as_they_are() -> None:
    data = picture(350, 300)
    expected = evaluation_transform(data, (224, 224), 256, [0.0] * 3, [1.0 / 255.0] * 3)
    got = served(imagenet(layout="NHWC"), data, datatype="UINT8")
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, np.rint(expected.transpose(1, 2, 0)).astype(np.uint8))


def test_a_greyscale_model_gets_one_channel_of_the_same_crop() -> None:
    data = picture(350, 300, mode="L")
    spec = imagenet(channels=1, color_mode="L", mean=0.5, std=0.25)
    image = Image.open(io.BytesIO(data)).resize((298, 256), Image.Resampling.BILINEAR)
    expected = (np.asarray(image, np.float32)[16:240, 37:261] / 255.0 - 0.5) / 0.25
    got = served(spec, data)
    assert got.shape == (1, 224, 224)
    np.testing.assert_allclose(got[0], expected, rtol=0, atol=2e-6)


def test_a_sliver_that_would_grow_past_the_pixel_limit_when_resized_is_refused() -> None:
    """1x4000 pixels pass the limit as sent; shorter side to 256, they would be 256x1024000 before the crop."""
    from service.errors import ImageTooLarge

    data = picture(1, 4000)
    with pytest.raises(ImageTooLarge, match=r"would be 256x1024000 = 262144000 pixels; the limit is 10000000"):
        served(imagenet(), data)
