"""Members: trained models from any framework behind one ``predict`` interface.

Importing this package imports no framework: each adapter (and torch, transformers, keras)
is imported when it is first used (PEP 562), so the prediction store and the strategies can
use :class:`Member` without paying for torch.
"""

import importlib
from typing import Any

from modelfusion.members.base import Member

_LAZY = {
    "HFMember": "modelfusion.members.hf",
    "KerasMember": "modelfusion.members.keras",
    "ModelLoader": "modelfusion.members.loading",
    "load_member": "modelfusion.members.loading",
    "load_saved_member": "modelfusion.members.loading",
    "OnnxMember": "modelfusion.members.onnx",
    "SklearnMember": "modelfusion.members.sklearn",
    "TorchMember": "modelfusion.members.torch",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelfusion.members' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "HFMember",
    "KerasMember",
    "Member",
    "ModelLoader",
    "OnnxMember",
    "SklearnMember",
    "TorchMember",
    "load_member",
    "load_saved_member",
]
