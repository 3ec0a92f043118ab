"""Decoding images: any datasets/bytes/path/PIL value to a PIL image, and an 8-bit RGB copy of it."""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import PIL.Image

from .bad_examples import ExampleProblem

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def open_image(value: Any, what: str) -> PIL.Image.Image:
    """Decode a PIL image from a datasets Image value ({'bytes', 'path'}), bytes, a path or a PIL image.

    Raises ExampleProblem with reason 'unreadable_<what>' when it cannot be decoded.
    """
    reason = f"unreadable_{what}"
    if value is None or (isinstance(value, dict) and value.get("bytes") is None and not value.get("path")):
        raise ExampleProblem(reason, f"the {what} is missing (empty value)")
    try:
        if isinstance(value, PIL.Image.Image):
            image = value
        elif isinstance(value, dict) and (value.get("bytes") is not None or value.get("path")):
            if value.get("bytes") is not None:
                image = PIL.Image.open(io.BytesIO(value["bytes"]))
            else:
                image = PIL.Image.open(value["path"])
        elif isinstance(value, (bytes, bytearray)):
            image = PIL.Image.open(io.BytesIO(value))
        elif isinstance(value, (str, os.PathLike)):
            image = PIL.Image.open(value)
        else:
            raise ExampleProblem(reason, f"{what} has unsupported type {type(value).__name__}")
        image.load()  # force the decode here so truncated/corrupt files fail now, with context
    except ExampleProblem:
        raise
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        raise ExampleProblem(reason, f"cannot decode the {what} ({type(err).__name__}: {err})") from err
    return image


# PIL modes of high-bit-depth grayscale images: PNG/TIFF 16-bit open as I;16* (or I in older Pillow).
_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """An 8-bit RGB copy of ``image``, scaled by its bit depth.

    ``Image.convert("RGB")`` clips 16-bit grayscale (``I;16``, ``I``) at 255 instead of scaling it; here 0..65535
    maps linearly onto 0..255 (as ``DSNetImageProcessor`` maps it onto [0, 1]). A 32-bit ``I`` image must hold
    16-bit values; float ``F`` images must hold values in [0, 1].
    """
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        array = np.asarray(image).astype(np.float64)
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ExampleProblem(
                "unreadable_image", f"the {image.mode} image has values in [{array.min():g}, {array.max():g}], outside "
                "the 16-bit range 0..65535; convert it to 8- or 16-bit first")
        grey = PIL.Image.fromarray(np.round(array / 257.0).astype(np.uint8))  # 65535 / 255 = 257
        return grey.convert("RGB")
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        if array.size and (array.min() < 0 or array.max() > 1):
            raise ExampleProblem(
                "unreadable_image", f"the float image has values in [{array.min():g}, {array.max():g}]; float images "
                "must be in [0, 1] (or convert them to 8- or 16-bit)")
        return PIL.Image.fromarray(np.round(array * 255.0).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def is_image_value(value: Any) -> bool:
    return isinstance(value, (PIL.Image.Image, dict, bytes, bytearray, str, os.PathLike))
