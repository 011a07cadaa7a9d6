"""Which architectures an untrusted manifest may build: an exact allow-list, and safe arguments.

A bundle's manifest names each torch member's architecture (a torchvision/timm model name or
an import path ``package.module:factory``) and its keyword arguments. Both come from the
file, so without ``trust=True`` only these may be called:

- a factory whose import path is *exactly* in :data:`SAFE_FACTORIES` (modelfusion's own
  example networks, vit-pytorch's model classes) or registered by the caller with
  :func:`register_architecture`; the path is never followed further (``...:torch.os.system``
  is not ``...:SmallCNN``);
- a torchvision or timm model name (a registry look-up, not an import);

and the arguments must be plain values (numbers, strings, booleans, lists of them) that the
factory declares, never one that loads files, downloads weights or switches safety off
(``checkpoint_path``, ``pretrained``, ``weights_only``, ...).
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Mapping
from typing import Any

from modelfusion.errors import ParameterError, UnsafeFormatError

#: Import paths a manifest may name without trust: constructors that only build layers.
SAFE_FACTORIES: set[str] = {
    "modelfusion.examples.digits:SmallCNN",
    "modelfusion.examples.digits:MLP",
    "modelfusion.examples.digit_instructions:digit_cnn",
    "modelfusion.examples.emoji_pairs:efficientnet_lite0_features",
    "modelfusion.training.students:MLPStudent",
    "modelfusion.training.students:CNNStudent",
    "vit_pytorch:ViT",
    "vit_pytorch:SimpleViT",
    "vit_pytorch.vit:ViT",
    "vit_pytorch.simple_vit:SimpleViT",
    "vit_pytorch.distill:DistillableViT",
    "vit_pytorch.cait:CaiT",
    "vit_pytorch.deepvit:DeepViT",
    "vit_pytorch.crossformer:CrossFormer",
}

#: Argument names that load files, fetch weights or relax safety in torchvision, timm or a factory.
_LOADING_ARGUMENT = re.compile(
    r"weight|pretrain|checkpoint|path|file|url|dir|cache|hub|trust|download|load|pickle|code|module",
    re.IGNORECASE,
)


def register_architecture(import_path: str) -> None:
    """Allow bundles to build ``import_path`` (``"mypkg.nets:make_mlp"``) without ``trust=True``.

    Call it in your own code for factories you wrote or vetted: a bundle naming exactly that
    path then loads like one naming a built-in network (its arguments are still checked).

    Examples
    --------
    >>> register_architecture("mypkg.nets:make_mlp")
    >>> FusedModel.load("downloaded/bundle")   # members built by mypkg.nets:make_mlp load
    """
    if ":" not in import_path:
        raise ParameterError(f"register_architecture takes 'package.module:factory', got {import_path!r}")
    SAFE_FACTORIES.add(import_path)


def check_architecture(architecture: Any, kwargs: Any, *, owner: str) -> None:
    """Raise UnsafeFormatError unless building ``architecture(**kwargs)`` is safe for an untrusted file.

    ``owner`` names the member in the message. Call it only without trust.

    Examples
    --------
    >>> check_architecture("modelfusion.examples.digits:SmallCNN", {"channels": 8}, owner="member 'cnn'")
    >>> check_architecture("modelfusion.examples.digits:torch.load", {}, owner="member 'cnn'")
    Traceback (most recent call last):
    UnsafeFormatError: member 'cnn' builds its architecture by importing and calling ...
    """
    hint = "load it with trust=True (CLI: --trust) only if you trust where the file came from"
    if not isinstance(architecture, str) or not architecture:
        raise UnsafeFormatError(
            f"{owner}: architecture must be a name or 'package.module:factory', got {architecture!r}"
        )
    if ":" in architecture and architecture not in SAFE_FACTORIES:
        raise UnsafeFormatError(
            f"{owner} builds its architecture by importing and calling {architecture!r}, which is not a "
            f"known network (see modelfusion.register_architecture); {hint}"
        )
    if kwargs is None:
        return
    if not isinstance(kwargs, Mapping):
        raise UnsafeFormatError(
            f"{owner}: architecture_kwargs must be a mapping, got {type(kwargs).__name__}"
        )
    declared = _declared_parameters(_listed_factory(architecture)) if ":" in architecture else None
    for key, value in kwargs.items():
        if not isinstance(key, str) or _LOADING_ARGUMENT.search(key):
            raise UnsafeFormatError(
                f"{owner}: architecture_kwargs {key!r} of {architecture!r} could load files or code; {hint}"
            )
        if declared is not None and key not in declared:
            raise UnsafeFormatError(
                f"{owner}: {architecture!r} takes no argument {key!r} (it takes {', '.join(sorted(declared))}); {hint}"
            )
        if not _plain(value):
            raise UnsafeFormatError(
                f"{owner}: architecture_kwargs {key!r} must be a number, string, boolean or list of them, "
                f"got {type(value).__name__}; {hint}"
            )


def _listed_factory(architecture: str) -> Any:
    """The callable an allow-listed import path names (importing a listed module is safe)."""
    module_name, _, attr = architecture.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None  # building it fails later with the loader's own message
    return obj


def _declared_parameters(factory: Any) -> set[str] | None:
    """The keyword names ``factory`` declares, or None when unknown or it takes ``**kwargs``."""
    if factory is None:
        return None
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _plain(value: Any, depth: int = 0) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)) and depth < 3:
        return all(_plain(v, depth + 1) for v in value)
    return False
