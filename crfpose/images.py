"""Reading images: a file or PIL image -> an ``(h, w, 3)`` uint8 RGB array, the one decoder of the library.

Shape legend: h x w image (after EXIF orientation, where applied).

:func:`decode_image` is what the datasets (:func:`crfpose.data.base.load_image`) and inference
(:func:`crfpose.predict.read_image`) read images with. Conventions:

- Every mode PIL opens becomes 8-bit RGB by its true range, never clipped: 1-bit, grey ``L``, palette
  ``P``, ``RGB``, ``RGBX``, ``CMYK``, ``YCbCr``, ``HSV`` and ``LAB`` through PIL's own conversions; 16-bit grey
  (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``) as ``round(v * 255 / 65535)``; 32-bit integer grey ``I`` (what
  PIL's PPM reader, and older PNG readers, give for 16-bit files) the same way when its values lie in
  0..65535, refused otherwise; 32-bit float grey ``F`` as ``0..1`` (the library's float convention),
  refused outside it. A mode not listed here is refused, naming it.
- Transparency (an alpha channel: ``LA``, ``La``, ``PA``, ``RGBA``, ``RGBa``; or a palette or ``tRNS``
  transparent colour) is composited on white: what a browser or a document shows, and one fixed result
  whatever colour the hidden pixels happen to store.
- EXIF orientation (all 8 values) is applied by default: the array is the picture as viewers show it,
  which is what a user means by "the photo". Datasets read the stored pixel frame instead
  (``apply_exif=False``): COCO, MPII and LSP annotations are taken to be in that frame, the frame their
  reference loaders read (pycocotools' demo via ``skimage.io.imread``, HRNet with OpenCV's
  ``IMREAD_IGNORE_ORIENTATION``); :class:`~crfpose.data.base.PoseDataset` warns about tagged images.
- A multi-frame file (GIF, multi-page TIFF) gives its first frame.

Every failure to read is a one-line ``ValueError`` that names the file (or ``name``) and the problem.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image, ImageOps

__all__ = ["decode_image", "image_header", "in_unit_range", "UNIT_TOLERANCE"]

# How far outside [0, 1] float pixel values may stray (resampling overshoot) before they are refused as
# another convention (0-255, ImageNet-normalised); values within it are clipped to [0, 1].
UNIT_TOLERANCE = 0.1

# What PIL raises on a missing, unidentifiable, truncated, corrupt or oversized (decompression bomb) file.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error, Image.DecompressionBombError)

_ORIENTATION = 0x0112  # the EXIF Orientation tag
_PIL_TO_RGB = frozenset({"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV", "LAB"})
_ALPHA = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_GREY16 = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_SUPPORTED = sorted(_PIL_TO_RGB | _ALPHA | _GREY16 | {"I", "F"})


def in_unit_range(low: float, high: float) -> bool:
    """Whether an image whose values span ``low..high`` is in ``[0, 1]`` (up to :data:`UNIT_TOLERANCE`)."""
    return math.isfinite(low) and math.isfinite(high) and low >= -UNIT_TOLERANCE and high <= 1 + UNIT_TOLERANCE


def _reason(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def image_header(path: Union[str, os.PathLike], name: Optional[str] = None) -> tuple[tuple[int, int], int]:
    """``((w, h), orientation)`` of an image file's stored pixels from its header (nothing decoded);
    ``orientation`` is the EXIF tag (1 = upright, also when absent or not 1..8)."""
    name = name or str(path)
    try:
        with Image.open(path) as im:
            orientation = im.getexif().get(_ORIENTATION, 1)
            return im.size, orientation if orientation in range(1, 9) else 1
    except DECODE_ERRORS as err:
        raise ValueError(f"{name}: cannot read image ({_reason(err)})") from None


def decode_image(image: Union[str, os.PathLike, Image.Image], *, apply_exif: bool = True, name: Optional[str] = None) -> np.ndarray:
    """``(h, w, 3)`` uint8 RGB of an image file or PIL image (the whole file is decoded, so a truncated
    one fails here), by the conventions of the module docstring.

    Args:
        image: a path or a PIL image.
        apply_exif: turn the pixels as the EXIF orientation tag says (all 8 values); ``False`` keeps the
            stored pixel frame (datasets).
        name: what error messages call the image (default: the path, or the PIL image's file name).
    """
    if not isinstance(image, (str, os.PathLike, Image.Image)):
        raise TypeError(f"image: expected a path or a PIL image, got {type(image).__name__}")
    name = name or str(image if not isinstance(image, Image.Image) else getattr(image, "filename", "") or "image")
    if not isinstance(image, Image.Image) and not Path(image).is_file():
        raise ValueError(f"{name}: image file not found")
    try:
        if isinstance(image, Image.Image):
            image.load()
            pil = image
        else:
            with Image.open(image) as pil:
                pil.load()  # the pixels stay in memory when the file closes
        if apply_exif and pil.getexif().get(_ORIENTATION, 1) != 1:
            pil = ImageOps.exif_transpose(pil)  # a turned copy
    except DECODE_ERRORS as err:
        raise ValueError(f"{name}: cannot read image ({_reason(err)})") from None
    return _to_rgb(pil, name)


def _to_rgb(im: Image.Image, name: str) -> np.ndarray:
    """``(h, w, 3)`` uint8 RGB of a loaded PIL image of any supported mode."""
    mode = im.mode
    if mode in _GREY16 or mode == "I":
        values = np.asarray(im)  # (h, w) uint16 or int32
        if mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(
                f"{name}: 32-bit integer image (mode 'I') with values {values.min()}..{values.max()}, outside the 16-bit "
                "range 0..65535 it is read in; convert it to an 8- or 16-bit image"
            )
        grey = ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(v * 255 / 65535): 257 is odd, no ties
        if "transparency" in im.info:
            grey[values == im.info["transparency"]] = 255
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        values = np.asarray(im, dtype=np.float64)  # (h, w)
        low, high = (values.min(), values.max()) if values.size else (0.0, 0.0)
        if not in_unit_range(low, high):
            raise ValueError(
                f"{name}: 32-bit float image (mode 'F') with values {low:g}..{high:g}; float images are read as 0..1, "
                "convert it to an 8- or 16-bit image"
            )
        grey = np.rint(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode in _ALPHA or (mode in _PIL_TO_RGB and "transparency" in im.info):
        rgba = (im.convert("LA") if mode == "La" else im).convert("RGBA")
        return np.asarray(Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB"))
    if mode in _PIL_TO_RGB:
        return np.asarray(im.convert("RGB"))
    raise ValueError(f"{name}: image mode {mode!r} is not supported (supported: {', '.join(_SUPPORTED)}); convert it to RGB")
