"""Loading ``.skops`` files without running code from them.

skops refuses types it does not know and asks the caller to trust them. A type name in a
file is only a string, and skops calls a trusted *callable* with arguments from the file,
so trusting by package prefix would let ``numpy.testing._private.utils.runstring`` run
code. Here a type is trusted only when it resolves to a class defined in scikit-learn,
numpy or scipy; functions and anything else need the user's explicit ``trust=True``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from modelfusion.errors import UnsafeFormatError

_TRUSTED_PACKAGES = ("sklearn", "numpy", "scipy")


def is_safe_type(name: str) -> bool:
    """Whether ``name`` (``module.Qualified.Name``) is a class from scikit-learn, numpy or scipy."""
    if name.split(".")[0] not in _TRUSTED_PACKAGES:
        return False
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return isinstance(obj, type) and obj.__module__.split(".")[0] in _TRUSTED_PACKAGES
    return False


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
            f"'{path}'{who} names types that are not scikit-learn/numpy/scipy classes: {', '.join(foreign)}. "
            "Loading it could run code; review them, then pass trust=True."
        )
    return sio.load(path, trusted=untrusted)
