"""Members: trained models from any framework behind one ``predict`` interface.

Importing this package imports no framework: each adapter (and torch, transformers, keras)
is imported when it is first used (PEP 562), so the prediction store and the strategies can
use :class:`Member` without paying for torch.
"""

from modelfusion.lazy import lazy_attributes
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


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())


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
