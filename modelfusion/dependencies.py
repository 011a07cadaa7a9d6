"""Optional dependencies: import one, or raise one message saying what needs it and how to install it.

Examples
--------
>>> optuna = require("optuna", extra="optuna", purpose="OptimizedWeights(method='bayes')")
"""

from __future__ import annotations

import importlib
from types import ModuleType

from modelfusion.errors import MissingDependencyError


def require(
    module: str,
    *,
    purpose: str,
    extra: str | None = None,
    package: str | None = None,
    alternative: str | None = None,
) -> ModuleType:
    """``import module``, or a :class:`MissingDependencyError` naming ``purpose`` and the install command.

    ``extra`` is the modelfusion extra that installs it (``pip install "modelfusion[extra]"``);
    without one the message names the pip ``package`` (default: the module's top-level name).
    ``alternative`` is appended as what to do instead (``"or use method='softmax'"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        install = (
            f'pip install "modelfusion[{extra}]"'
            if extra
            else f"pip install {package or module.split('.')[0]}"
        )
        message = (
            f"{purpose} needs {package or module.split('.')[0]}, which is not installed ({exc}); {install}"
        )
        raise MissingDependencyError(message + (f" ({alternative})" if alternative else "")) from exc
