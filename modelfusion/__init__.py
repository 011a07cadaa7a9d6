"""modelfusion: fuse trained models from any framework into one better, cheaper predictor.

Examples
--------
>>> from modelfusion import load_member, score_members, search_strategies, FusedModel
>>> members = [load_member("models/cnn.pt2"), load_member("models/logreg.skops")]
>>> val = score_members(members, X_val, y=y_val, cache_dir=".modelfusion-cache")
>>> result = search_strategies(val, y_val, metric="nll")
>>> fused = FusedModel(members, result.fit_best(val, y_val))
>>> fused.save("fused")
"""

__version__ = "0.1.0"

from modelfusion.errors import (
    BundleError,
    ConfigError,
    MemberLoadError,
    ModelFusionError,
    ModelFusionWarning,
    PredictionError,
    StrategyError,
    UnsafeFormatError,
)
from modelfusion.fused import FusedModel, FusedModule
from modelfusion.manifest import manifest_digest
from modelfusion.members import Member, ModelLoader, load_member, load_saved_member
from modelfusion.members.architectures import register_architecture
from modelfusion.predictions import PredictionSet, score_members
from modelfusion.strategies import search_strategies

__all__ = [
    "BundleError",
    "ConfigError",
    "FusedModel",
    "FusedModule",
    "Member",
    "MemberLoadError",
    "ModelFusionError",
    "ModelFusionWarning",
    "ModelLoader",
    "PredictionError",
    "PredictionSet",
    "StrategyError",
    "UnsafeFormatError",
    "__version__",
    "load_member",
    "load_saved_member",
    "manifest_digest",
    "register_architecture",
    "score_members",
    "search_strategies",
]
