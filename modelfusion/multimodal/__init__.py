"""Feature-level fusion: a model that fuses the features of several encoders (image, text, ...).

Examples
--------
>>> from modelfusion.multimodal import MultimodalFusion, ImageEncoder, WordEncoder
>>> model = MultimodalFusion(encoders={"image": ImageEncoder("resnet18"), "text": WordEncoder(words)},
...                          fusion="gated", num_classes=10)
>>> model.save("model", example=batch)      # spec + safetensors + one ONNX graph (fp32, int8)
>>> MultimodalFusion.load("model")
"""

from modelfusion.multimodal.clip import CLIPImageEncoder, CLIPTextEncoder, clip_encoders
from modelfusion.multimodal.contrastive import (
    ContrastiveAlignment,
    contrastive_loss,
    recall_at_k,
    retrieval_recall,
)
from modelfusion.multimodal.data import ModalityDataset
from modelfusion.multimodal.encoders import (
    Encoder,
    ImageEncoder,
    ModuleEncoder,
    TabularEncoder,
    TextEncoder,
    WordEncoder,
    probe_width,
)
from modelfusion.multimodal.export import MultimodalGraph, export_multimodal_onnx
from modelfusion.multimodal.fusion import MultimodalFusion, NumClassesError, load_multimodal
from modelfusion.multimodal.late import LateFusion, late_fusion_loss
from modelfusion.multimodal.manifest_dataset import MultimodalDataset
from modelfusion.multimodal.matching import CCAMatcher
from modelfusion.multimodal.multiscale import MultiScaleEncoder, extract_multi_scale_features
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
from modelfusion.multimodal.pretrain import MaskedImagePretraining, MaskedImageView, linear_probe_accuracy
from modelfusion.multimodal.projection import FeatureWidthError, Projection, check_widths
from modelfusion.multimodal.saving import save_multimodal
from modelfusion.multimodal.specs import ENCODERS, build_encoder

__all__ = [
    "ENCODERS",
    "CCAMatcher",
    "FUSION_OPERATORS",
    "CLIPImageEncoder",
    "CLIPTextEncoder",
    "ContrastiveAlignment",
    "Concat",
    "CrossAttention",
    "Encoder",
    "FeatureWidthError",
    "FiLM",
    "FusionOperator",
    "Gated",
    "ImageEncoder",
    "LateFusion",
    "LowRankBilinear",
    "MaskedImagePretraining",
    "MaskedImageView",
    "ModalityAttention",
    "ModalityDataset",
    "ModuleEncoder",
    "MultimodalFusion",
    "MultiScaleEncoder",
    "MultimodalDataset",
    "MultimodalGraph",
    "NumClassesError",
    "Projection",
    "Sum",
    "TabularEncoder",
    "TextEncoder",
    "WordEncoder",
    "build_encoder",
    "build_fusion",
    "clip_encoders",
    "contrastive_loss",
    "check_widths",
    "export_multimodal_onnx",
    "extract_multi_scale_features",
    "late_fusion_loss",
    "linear_probe_accuracy",
    "load_multimodal",
    "probe_width",
    "recall_at_k",
    "retrieval_recall",
    "save_multimodal",
]
