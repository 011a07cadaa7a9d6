"""Reading one image file as a float array [channels, height, width] in [0, 1].

Examples
--------
>>> read_image("photos/cat.png", image_size=64, channels=3).shape
(3, 64, 64)
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelfusion.errors import DataError


def read_image(
    path: str | Path, *, image_size: int | Sequence[int] | None = None, channels: int | None = None
) -> np.ndarray:
    """``path`` decoded (Pillow), converted to 1 or 3 channels (default: 1 for grey images, else 3;
    transparency is composited on white) and resized to ``image_size`` (int or (height, width)).

    Raises DataError naming the file when it is missing or does not decode.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file {str(path)!r}")
    return _decode(path, repr(str(path)), image_size, channels)


def decode_image(
    data: bytes,
    *,
    image_size: int | Sequence[int] | None = None,
    channels: int | None = None,
    name: str = "the image",
    max_pixels: int | None = None,
) -> np.ndarray:
    """The bytes of an image file (PNG, JPEG, ...) decoded like :func:`read_image`; DataError naming ``name``.

    ``max_pixels``: refuse images with more pixels (read from the header, before decoding).

    Examples
    --------
    >>> decode_image(Path("digit.png").read_bytes(), image_size=8, channels=1).shape
    (1, 8, 8)
    """
    return _decode(io.BytesIO(data), name, image_size, channels, max_pixels)


def _decode(
    source: Any,
    name: str,
    image_size: int | Sequence[int] | None,
    channels: int | None,
    max_pixels: int | None = None,
) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels!r}")
    try:
        with Image.open(source) as img:
            if max_pixels is not None and img.width * img.height > max_pixels:
                too_big = f"{name} has {img.width}x{img.height} pixels; the limit is {max_pixels:,}"
                raise DataError(too_big)
            img.load()
            image = img.copy()
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{name} does not decode as an image ({type(exc).__name__})") from None
    grey = image.mode in ("1", "L", "I", "I;16", "F")
    mode = "L" if (channels or (1 if grey else 3)) == 1 else "RGB"
    if image.mode in ("RGBA", "LA", "P"):  # transparent pixels -> white, not black
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert(mode)
    if image_size is not None:
        height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if (image.height, image.width) != (height, width):
            image = image.resize((int(width), int(height)), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return np.ascontiguousarray(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))


__all__ = ["decode_image", "read_image"]
