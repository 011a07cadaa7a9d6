"""Reading one image file as a float array [channels, height, width] in [0, 1].

Examples
--------
>>> read_image("photos/cat.png", image_size=64, channels=3).shape
(3, 64, 64)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modelfusion.errors import DataError


def read_image(
    path: str | Path, *, image_size: int | Sequence[int] | None = None, channels: int | None = None
) -> np.ndarray:
    """``path`` decoded (Pillow), converted to 1 or 3 channels (default: 1 for grey images, else 3;
    transparency is composited on white) and resized to ``image_size`` (int or (height, width)).

    Raises DataError naming the file when it is missing or does not decode.
    """
    from PIL import Image, UnidentifiedImageError

    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels!r}")
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            image = img.copy()
    except FileNotFoundError:
        raise DataError(f"no such file {str(path)!r}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{str(path)!r} does not decode as an image ({type(exc).__name__})") from None
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


__all__ = ["read_image"]
