"""The rows a conversion is checked on: from ``--input-shape``, the model's own input shape, or data.

Examples
--------
>>> parse_input_shape("1,3,32,32")
(1, 3, 32, 32)
>>> sample_rows(member, input_shape=(1, 64)).shape
(16, 64)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelfusion.errors import InputError, ParameterError

#: How many random rows the parity check runs when no data is given.
RANDOM_SAMPLES = 16
#: At most this many rows of ``check=`` data are run (the first ones).
MAX_CHECK_SAMPLES = 1024

_SHAPE_FORM = "comma-separated positive integers, batch first, e.g. 1,3,32,32 (or 1,64 for 64 features)"


def parse_input_shape(value: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """The shape of one input batch, batch first, from ``"1,3,32,32"`` or a sequence of ints.

    Raises ParameterError (saying the expected form) for anything else, and for a shape
    without a dimension after the batch.

    Examples
    --------
    >>> parse_input_shape("1, 64")
    (1, 64)
    """
    if value is None:
        return None
    parts = value.replace("x", ",").split(",") if isinstance(value, str) else list(value)
    try:
        dims = tuple(int(str(p).strip()) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) < 2 or any(d <= 0 for d in dims):
        raise ParameterError(f"--input-shape must be {_SHAPE_FORM}; got {value!r}")
    return dims


def sample_rows(
    member: Any,
    *,
    input_shape: Sequence[int] | None = None,
    check: Any = None,
    samples: int = RANDOM_SAMPLES,
    where: str | None = None,
) -> np.ndarray:
    """What the conversion is checked on: float array [rows, *sample shape].

    Parameters
    ----------
    member : the loaded :class:`~modelfusion.members.base.Member`
    input_shape : the shape of one batch, batch first (see :func:`parse_input_shape`);
        ``samples`` random rows of ``input_shape[1:]`` are drawn (uniform in [0, 1), seeded).
    check : data whose rows are used instead: an array, or anything
        :func:`~modelfusion.data.load_dataset` reads (``"builtin:digits"``, a ``.csv``,
        ``.npy``, ``.npz``, an image folder); at most :data:`MAX_CHECK_SAMPLES` rows.
    where : how to name the model in errors (default: its member name)

    Raises InputError when neither is given and the model does not record its input shape.

    Examples
    --------
    >>> sample_rows(load_member("logreg.skops")).shape      # n_features_in_ is known
    (16, 64)
    """
    if check is not None:
        return _data_rows(check)
    shape = tuple(input_shape[1:]) if input_shape is not None else member.sample_shape()
    if shape is None:
        name = where or f"model {member.name!r}"
        raise InputError(
            f"cannot tell the input shape of {name} ({member.framework}): the file does not record it. "
            "Pass --input-shape with the shape of one batch (input_shape=, batch first, e.g. 1,3,32,32), "
            "or --check DATA (check=) with rows it takes"
        )
    return np.random.default_rng(0).random((samples, *shape), dtype=np.float32)


def _data_rows(check: Any) -> np.ndarray:
    if isinstance(check, (str, Path)):
        from modelfusion.data import load_dataset

        check = load_dataset(check, base_dir=Path.cwd(), labelled=False).X
    x = check.detach().cpu().numpy() if hasattr(check, "detach") else np.asarray(check)
    if x.dtype == object or x.dtype.kind in "USV" or x.ndim < 2 or len(x) == 0:
        raise InputError(
            f"the check data must be numeric rows [samples, features...], got {x.dtype} shaped {list(x.shape)}"
        )
    x = x[:MAX_CHECK_SAMPLES]
    return x.astype(np.int64) if x.dtype.kind in "iu" and x.dtype != np.uint8 else x.astype(np.float32)
