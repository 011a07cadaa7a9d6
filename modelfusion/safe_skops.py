"""Loading ``.skops`` files without running code from them.

skops refuses types it does not know and asks the caller to trust them. A type name in a
file is only a string, and skops calls a trusted *callable* with arguments from the file,
so trusting by package prefix would let ``numpy.testing._private.utils.runstring`` run
code, and trusting every numpy class would let ``numpy.memmap`` open any file. Here a type
is trusted only when it resolves to a class on a short list (:func:`is_safe_type`);
functions and anything else need the user's explicit ``trust=True``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from modelfusion.errors import UnsafeFormatError

_TRUSTED_PACKAGES = ("sklearn", "numpy", "scipy")
#: Parts of scikit-learn whose classes read files, fetch data or exist for tests.
_DENIED_SKLEARN = ("sklearn.datasets", "sklearn.utils._testing", "sklearn.externals", "sklearn._build_utils")


def is_safe_type(name: str) -> bool:
    """Whether ``name`` (``module.Qualified.Name``) is a class a ``.skops`` file may build without trust.

    skops calls a class with arguments from the file, so "any class of numpy" is too much
    (``numpy.memmap(path, mode="w+")`` opens, creates or truncates any file). Allowed:
    scikit-learn classes outside its data-fetching and test modules; numpy's dtypes, scalar
    types, ``ndarray`` and random generators; scipy's sparse matrices.
    """
    obj = _resolve(name)
    if not isinstance(obj, type):
        return False
    module = obj.__module__
    root = module.split(".")[0]
    if root == "sklearn":
        return not module.startswith(_DENIED_SKLEARN)
    if root == "numpy":
        import numpy as np

        if issubclass(obj, np.memmap):
            return False
        return (
            issubclass(obj, (np.generic, np.dtype)) or obj is np.ndarray or module.startswith("numpy.random")
        )
    if root == "scipy":
        return module.startswith("scipy.sparse") and not module.startswith("scipy.sparse.linalg")
    return False


def _resolve(name: str) -> Any:
    """The object ``module.Qualified.Name`` names, importing only sklearn/numpy/scipy modules."""
    parts = name.split(".")
    if parts[0] not in _TRUSTED_PACKAGES:
        return None
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def load_skops(path: str | Path, *, trust: bool = False, owner: str = "") -> Any:
    """``skops.io.load`` trusting only scikit-learn/numpy/scipy classes unless ``trust=True``.

    Raises UnsafeFormatError listing the other types (e.g. functions) the file names.
    """
    import skops.io as sio

    path = Path(path)
    untrusted = sio.get_untrusted_types(file=path)
    foreign = [t for t in untrusted if not is_safe_type(t)]
    if foreign and not trust:
        who = f" ({owner})" if owner else ""
        raise UnsafeFormatError(
            f"'{path}'{who} names types that modelfusion does not build without trust: {', '.join(foreign)}. "
            "Loading it could run code or open files; review them, then pass trust=True."
        )
    return sio.load(path, trusted=untrusted)
