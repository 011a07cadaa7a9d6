"""Members: trained models from any framework behind one ``predict`` interface.

Importing this package does not import transformers, keras, timm or torchvision; each
adapter imports its framework when a member is built.
"""

from modelfusion.members.base import Member
from modelfusion.members.hf import HFMember
from modelfusion.members.keras import KerasMember
from modelfusion.members.loading import ModelLoader, load_member, load_saved_member
from modelfusion.members.onnx import OnnxMember
from modelfusion.members.sklearn import SklearnMember
from modelfusion.members.torch import TorchMember

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
