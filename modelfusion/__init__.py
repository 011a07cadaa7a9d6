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

from modelfusion.errors import (
    ArgumentTypeError,
    BundleError,
    CheckpointError,
    ConfigError,
    DataError,
    DataFileNotFoundError,
    ExecutionProviderError,
    ExportError,
    ExportWarning,
    FeatureWidthError,
    InputError,
    MemberFileNotFoundError,
    MemberLoadError,
    MemberSaveError,
    MissingDependencyError,
    ModelFusionError,
    ModelFusionWarning,
    NumClassesError,
    ParameterError,
    PredictionError,
    QuantizationError,
    StrategyError,
    TensorRTUnavailableError,
    TrainingError,
    UnknownNameError,
    UnsafeFormatError,
    UnseenClassWarning,
)
from modelfusion.lazy import lazy_attributes
from modelfusion.version import __version__

#: Public names and the module each lives in, imported on first use (PEP 562): ``import
#: modelfusion`` and ``modelfusion --help`` stay light, torch and scikit-learn load when needed.
_LAZY = {
    "ConversionResult": "modelfusion.conversion",
    "ServeSettings": "modelfusion.serving",
    "create_app": "modelfusion.serving",
    "convert_model": "modelfusion.conversion",
    "FusedModel": "modelfusion.fused",
    "FusedModule": "modelfusion.fused",
    "manifest_digest": "modelfusion.manifest",
    "CCAMatcher": "modelfusion.multimodal.matching",
    "MultimodalFusion": "modelfusion.multimodal",
    "load_multimodal": "modelfusion.multimodal",
    "register_architecture": "modelfusion.members.architectures",
    "Member": "modelfusion.members",
    "ModelLoader": "modelfusion.members",
    "load_member": "modelfusion.members",
    "load_saved_member": "modelfusion.members",
    "PredictionSet": "modelfusion.predictions",
    "score_members": "modelfusion.predictions",
    "search_strategies": "modelfusion.strategies",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())

__all__ = [
    "TrainingError",
    "CheckpointError",
    "ArgumentTypeError",
    "CCAMatcher",
    "ConversionResult",
    "ServeSettings",
    "BundleError",
    "ConfigError",
    "DataError",
    "DataFileNotFoundError",
    "ExecutionProviderError",
    "ExportError",
    "ExportWarning",
    "FeatureWidthError",
    "FusedModel",
    "FusedModule",
    "InputError",
    "Member",
    "MemberFileNotFoundError",
    "MemberLoadError",
    "MemberSaveError",
    "MissingDependencyError",
    "ModelFusionError",
    "ModelFusionWarning",
    "ModelLoader",
    "MultimodalFusion",
    "NumClassesError",
    "ParameterError",
    "PredictionError",
    "PredictionSet",
    "QuantizationError",
    "StrategyError",
    "TensorRTUnavailableError",
    "UnknownNameError",
    "UnsafeFormatError",
    "UnseenClassWarning",
    "__version__",
    "convert_model",
    "create_app",
    "load_member",
    "load_multimodal",
    "load_saved_member",
    "manifest_digest",
    "register_architecture",
    "score_members",
    "search_strategies",
]
