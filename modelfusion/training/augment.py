"""Label-preserving augmentations of a batch of inputs, for distillation's transfer set.

Each builder returns ``augment(X, rng) -> X'`` (the signature :class:`~modelfusion.distill.Distiller`
takes): same shape and dtype, every random draw from ``rng``, so a seed gives the same copies.
:func:`build_augment` makes one from the ``distill.augment`` section of a run config.

Examples
--------
>>> augment = compose(pixel_shift(1, image_shape=(8, 8)), gaussian_noise(0.1, clip=(0.0, 1.0)))
>>> augment(X, np.random.default_rng(0)).shape == X.shape
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from modelfusion.errors import ParameterError

#: ``augment(X, rng) -> X'``: a batch in, the same shape out.
Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def gaussian_noise(sigma: float, clip: tuple[float, float] | None = None) -> Augment:
    """Add ``N(0, sigma^2)`` noise to every value, then clip to ``clip`` (e.g. pixel range)."""
    if not sigma >= 0:
        raise ParameterError(f"noise must be >= 0, got {sigma!r}")

    def augment(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = X + rng.normal(0.0, sigma, X.shape)
        if clip is not None:
            out = np.clip(out, clip[0], clip[1])
        return out.astype(X.dtype, copy=False)

    return augment


def pixel_shift(max_shift: int, image_shape: Sequence[int] | None = None) -> Augment:
    """Roll each image by up to ``max_shift`` pixels along its last two axes (one draw per image).

    ``image_shape`` reshapes flat rows (``(8, 8)`` for 64 features) before the shift and back after.
    """
    if not isinstance(max_shift, int) or max_shift < 0:
        raise ParameterError(f"shift must be an int >= 0, got {max_shift!r}")
    shape = None if image_shape is None else tuple(int(s) for s in image_shape)

    def augment(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        images = X.reshape(len(X), *shape) if shape is not None else X
        if images.ndim < 3:
            raise ParameterError(
                f"shift needs images (rows of at least 2 axes); the inputs are {list(X.shape)}: "
                "give augment.image_shape, e.g. [8, 8] for 64 features"
            )
        out = images.copy()
        for i, (dy, dx) in enumerate(rng.integers(-max_shift, max_shift + 1, (len(X), 2))):
            out[i] = np.roll(images[i], (int(dy), int(dx)), axis=(-2, -1))
        return out.reshape(X.shape)

    return augment


def compose(*steps: Augment) -> Augment:
    """Apply ``steps`` in order."""

    def augment(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for step in steps:
            X = step(X, rng)
        return X

    return augment


def build_augment(
    *,
    noise: float = 0.0,
    shift: int = 0,
    image_shape: Sequence[int] | None = None,
    clip: tuple[float, float] | None = None,
) -> Augment | None:
    """The shift, then the noise, that a config asks for; None when it asks for neither."""
    steps = []
    if shift:
        steps.append(pixel_shift(shift, image_shape))
    if noise:
        steps.append(gaussian_noise(noise, clip))
    return compose(*steps) if steps else None
