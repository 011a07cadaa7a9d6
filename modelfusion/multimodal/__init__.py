"""Feature-level fusion: a model that fuses the features of several encoders (image, text, ...).

Examples
--------
>>> from modelfusion.multimodal import MultimodalFusion, Projection, build_fusion
"""

from modelfusion.multimodal.fusion import MultimodalFusion, NumClassesError
from modelfusion.multimodal.operators import (
    FUSION_OPERATORS,
    Concat,
    CrossAttention,
    FiLM,
    FusionOperator,
    Gated,
    LowRankBilinear,
    ModalityAttention,
    Sum,
    build_fusion,
)
from modelfusion.multimodal.projection import FeatureWidthError, Projection, check_widths

__all__ = [
    "FUSION_OPERATORS",
    "Concat",
    "CrossAttention",
    "FeatureWidthError",
    "FiLM",
    "FusionOperator",
    "Gated",
    "LowRankBilinear",
    "ModalityAttention",
    "MultimodalFusion",
    "NumClassesError",
    "Projection",
    "Sum",
    "build_fusion",
    "check_widths",
]
