"""Feature-level fusion: a model that fuses the features of several encoders (image, text, ...).

Examples
--------
>>> from modelfusion.multimodal import MultimodalFusion, Projection
"""

from modelfusion.multimodal.fusion import MultimodalFusion, NumClassesError
from modelfusion.multimodal.projection import FeatureWidthError, Projection, check_widths

__all__ = ["FeatureWidthError", "MultimodalFusion", "NumClassesError", "Projection", "check_widths"]
