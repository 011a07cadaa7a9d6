"""Multi-scale image features: the maps of several stages of one backbone, fused into one vector.

:func:`extract_multi_scale_features` returns a backbone's per-stage maps [batch, channels, h, w],
finest first, from whichever door the backbone has: a vit-pytorch CrossFormer (its stages one by
one, as in the tutorials), a timm ``features_only`` model, a timm model's
``forward_intermediates``, or a torchvision feature extractor (``create_feature_extractor``).
:class:`MultiScaleEncoder` fuses them by ``"concat"`` (each map average-pooled, concatenated) or
``"fpn"`` (torchvision's FeaturePyramidNetwork: a top-down path that gives every scale the same
width ``pyramid_dim`` and the coarse scales' context, then pooled), as a vector or, with ``tokens=True``
and ``fuse="fpn"``, one token per scale for cross-attention.

Examples
--------
>>> maps = extract_multi_scale_features(crossformer, images)      # 4 maps, 1/4 ... 1/32 of the size
>>> encoder = MultiScaleEncoder("resnet18", image_size=64, fuse="fpn", pyramid_dim=128)   # timm, features_only
>>> encoder(images).shape
torch.Size([8, 640])
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from modelfusion.errors import ParameterError
from modelfusion.multimodal.encoders import Encoder, build_factory_backbone, probe_width

#: How the scales are fused.
FUSES = ("concat", "fpn")


def extract_multi_scale_features(
    model: nn.Module, img: torch.Tensor, stages: Sequence[int] | None = None
) -> list[torch.Tensor]:
    """The feature maps [batch, channels, h, w] of ``model``'s stages on ``img``, finest first
    (``stages``: their indices, default all). Raises ParameterError for a model with none of the
    supported doors.

    Examples
    --------
    >>> [m.shape[-1] for m in extract_multi_scale_features(crossformer, torch.rand(1, 3, 224, 224))]
    [56, 28, 14, 7]
    """
    net: Any = model  # its doors are attributes nn.Module's typing does not know
    if _is_crossformer(net):
        maps, x = [], img
        for cel, transformer in net.layers:
            x = transformer(cel(x))
            maps.append(x)
    elif hasattr(model, "feature_info") and not hasattr(model, "forward_intermediates"):
        maps = list(model(img))  # timm features_only: the stages it was built with
        return maps  # already the selected stages (out_indices)
    elif hasattr(model, "forward_intermediates"):
        maps = list(net.forward_intermediates(img, intermediates_only=True))
    else:
        out = model(img)
        if isinstance(out, dict):  # torchvision create_feature_extractor
            maps = list(out.values())
        elif isinstance(out, (list, tuple)) and all(isinstance(m, torch.Tensor) for m in out):
            maps = list(out)
        else:
            raise ParameterError(
                f"{type(model).__name__} gives no multi-scale features: use a vit-pytorch CrossFormer, a timm "
                "model (features_only=True or forward_intermediates), a torchvision create_feature_extractor, "
                "or a module returning a list of maps"
            )
    return _select(maps, stages, type(model).__name__)


class MultiScaleEncoder(Encoder):
    """Features of several stages of one image backbone, fused by pooled concatenation or an FPN.

    Parameters
    ----------
    backbone : a timm name (built ``features_only``), a torchvision name (its stages through
        ``create_feature_extractor``: ``layer1``-``layer4``, or the last block of ``features`` at each
        resolution), ``"vit_pytorch.crossformer:CrossFormer"`` (its arguments in ``**kwargs``), or a
        module :func:`extract_multi_scale_features` can read.
    stages : indices of the stages to use (default all).
    fuse : ``"concat"`` (width: the stages' channels summed) or ``"fpn"`` (width ``pyramid_dim`` x stages).
    tokens : with ``fuse="fpn"``, return one token per stage [batch, stages, pyramid_dim].

    Attributes
    ----------
    width : the feature width, probed.
    stage_widths : each stage's channels (with ``fuse="concat"``, the blocks of the features, e.g.
        ``CCAMatcher(x_widths=encoder.stage_widths)``).

    Examples
    --------
    >>> MultiScaleEncoder("resnet18", image_size=64, in_channels=1).width     # 64+64+128+256+512
    1024
    """

    kind = "multiscale"
    input_names = ("pixels",)

    def __init__(
        self,
        backbone: str | nn.Module,
        *,
        image_size: int = 224,
        in_channels: int = 3,
        stages: Sequence[int] | None = None,
        fuse: str = "concat",
        pyramid_dim: int = 128,
        tokens: bool = False,
        pretrained: bool = False,
        **kwargs: Any,
    ):
        super().__init__()
        if fuse not in FUSES:
            raise ParameterError(f"fuse={fuse!r} is not one of {', '.join(FUSES)}")
        if tokens and fuse != "fpn":
            raise ParameterError("tokens=True needs fuse='fpn' (the stages' widths differ before the FPN)")
        self.backbone = backbone if isinstance(backbone, str) else None
        self.image_size, self.in_channels, self.kwargs = image_size, in_channels, dict(kwargs)
        self.stages, self.fuse, self.pyramid_dim, self.tokens = (
            list(stages) if stages is not None else None,
            fuse,
            pyramid_dim,
            tokens,
        )
        self.body = (
            _multiscale_backbone(backbone, image_size, in_channels, self.stages, pretrained, kwargs)
            if isinstance(backbone, str)
            else backbone
        )
        example = torch.zeros(2, in_channels, image_size, image_size)  # 2: batch norm in train mode
        channels = [m.shape[1] for m in self._maps(example, probe=True)]
        self.stage_widths = channels  # the blocks of a concat encoder's features
        self.pyramid = _pyramid(channels, pyramid_dim) if fuse == "fpn" else None
        name = self.backbone or type(backbone).__name__
        self.width = probe_width(self, example, f"multi-scale encoder {name!r}")

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        maps = self._maps(pixels)
        if self.pyramid is not None:
            maps = list(self.pyramid(OrderedDict((str(i), m) for i, m in enumerate(maps))).values())
        pooled = [m.mean(dim=(2, 3)) for m in maps]
        return torch.stack(pooled, dim=1) if self.tokens else torch.cat(pooled, dim=1)

    def spec(self) -> dict[str, Any]:
        if self.backbone is None:
            return super().spec()
        return {
            "type": self.kind,
            "backbone": self.backbone,
            "image_size": self.image_size,
            "in_channels": self.in_channels,
            "stages": self.stages,
            "fuse": self.fuse,
            "pyramid_dim": self.pyramid_dim,
            "tokens": self.tokens,
            **self.kwargs,
        }

    def _maps(self, pixels: torch.Tensor, probe: bool = False) -> list[torch.Tensor]:
        stages = None if _selects_itself(self.body) else self.stages
        if not probe:
            return extract_multi_scale_features(self.body, pixels, stages)
        was = self.body.training
        self.body.eval()
        try:
            with torch.no_grad():
                maps = extract_multi_scale_features(self.body, pixels, stages)
        finally:
            self.body.train(was)
        bad = [list(m.shape) for m in maps if m.dim() != 4]
        if bad:
            raise ParameterError(
                f"multi-scale features must be maps [batch, channels, h, w], got shapes {bad}"
            )
        return maps


def _multiscale_backbone(
    name: str,
    image_size: int,
    in_channels: int,
    stages: list[int] | None,
    pretrained: bool,
    kwargs: dict[str, Any],
) -> nn.Module:
    if ":" in name:
        return build_factory_backbone(
            name, image_size, in_channels, pretrained, kwargs, what="multi-scale encoder"
        )
    try:
        import timm

        if timm.is_model(name):
            selected: dict[str, Any] = {"out_indices": tuple(stages)} if stages is not None else {}
            return timm.create_model(
                name, pretrained=pretrained, features_only=True, in_chans=in_channels, **selected, **kwargs
            )
    except ImportError:
        pass
    return _torchvision_stages(name, image_size, in_channels, pretrained, kwargs)


def _torchvision_stages(
    name: str, image_size: int, in_channels: int, pretrained: bool, kwargs: dict[str, Any]
) -> nn.Module:
    """A torchvision model as a feature extractor over its stages."""
    from modelfusion.dependencies import require

    torchvision = require("torchvision", purpose=f"multi-scale encoder {name!r}", extra="vision")
    from torchvision.models.feature_extraction import create_feature_extractor

    if name not in torchvision.models.list_models():
        raise ParameterError(f"multi-scale encoder {name!r} is neither a timm nor a torchvision model name")
    if in_channels != 3:
        raise ParameterError(
            f"multi-scale encoder {name!r}: torchvision models take 3 channels; use a timm name"
        )
    model = torchvision.models.get_model(name, weights="DEFAULT" if pretrained else None, **kwargs)
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)):
        nodes = [f"layer{i}" for i in range(1, 5)]
    elif isinstance(getattr(model, "features", None), nn.Sequential):
        nodes = _last_block_per_resolution(model.features, image_size)
    else:
        raise ParameterError(f"multi-scale encoder {name!r}: found no stages (layer1-4 or features)")
    return create_feature_extractor(model, return_nodes={node: node for node in nodes})


def _last_block_per_resolution(features: nn.Sequential, image_size: int) -> list[str]:
    x, nodes, last = torch.zeros(1, 3, image_size, image_size), [], None
    features.eval()
    with torch.no_grad():
        for i, block in enumerate(features):
            x = block(x)
            if last is not None and x.shape[-1] != last[1]:
                nodes.append(last[0])
            last = (f"features.{i}", x.shape[-1])
    return [*nodes, last[0]] if last else nodes


def _pyramid(channels: list[int], dim: int) -> nn.Module:
    from modelfusion.dependencies import require

    require("torchvision", purpose="fuse='fpn' (torchvision.ops.FeaturePyramidNetwork)", extra="vision")
    from torchvision.ops import FeaturePyramidNetwork

    return FeaturePyramidNetwork(channels, dim)


def _select(maps: list[torch.Tensor], stages: Sequence[int] | None, name: str) -> list[torch.Tensor]:
    if stages is None:
        return maps
    bad = [s for s in stages if not -len(maps) <= s < len(maps)]
    if bad:
        raise ParameterError(f"stages={list(stages)}: {name} has {len(maps)} stages (0-{len(maps) - 1})")
    return [maps[s] for s in stages]


def _is_crossformer(model: Any) -> bool:
    layers = getattr(model, "layers", None)
    return (
        type(model).__name__ == "CrossFormer"
        and isinstance(layers, nn.ModuleList)
        and all(isinstance(stage, nn.ModuleList) and len(stage) == 2 for stage in layers)
    )


def _selects_itself(model: nn.Module) -> bool:
    """timm features_only models are built with their stages (``out_indices``)."""
    return hasattr(model, "feature_info") and not hasattr(model, "forward_intermediates")


__all__ = ["FUSES", "MultiScaleEncoder", "extract_multi_scale_features"]
