"""Projection to a common width, and the width check that names the encoder at fault."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from modelfusion.errors import FeatureWidthError, ParameterError

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class Projection(nn.Module):
    """Map features [batch, in_features] to [batch, out_features]: Linear, then optional LayerNorm and activation.

    Use it to bring encoders of different widths to a common one (an image encoder's 1024
    features to a text encoder's 512) before fusing them.

    Parameters
    ----------
    in_features, out_features : widths of the input and output features.
    norm : apply ``LayerNorm(out_features)`` after the linear map.
    activation : ``"relu"``, ``"gelu"``, ``"tanh"``, an ``nn.Module``, or None (linear).

    Examples
    --------
    >>> project = Projection(1024, 512, norm=True, activation="gelu")
    >>> project(torch.randn(8, 1024)).shape
    torch.Size([8, 512])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        norm: bool = False,
        activation: str | nn.Module | None = None,
    ):
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f"Projection {name} must be a positive int, got {value!r}")
        self.in_features, self.out_features = in_features, out_features
        self.linear = nn.Linear(in_features, out_features)
        self.norm = nn.LayerNorm(out_features) if norm else nn.Identity()
        self.activation = _activation(activation)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[-1] != self.in_features:
            raise FeatureWidthError(
                f"Projection({self.in_features} -> {self.out_features}) got features of width "
                f"{features.shape[-1]} (shape {tuple(features.shape)}); build it as "
                f"Projection({features.shape[-1]}, {self.out_features})"
            )
        return self.activation(self.norm(self.linear(features)))


def check_widths(features: Mapping[str, torch.Tensor], expected: Mapping[str, int]) -> None:
    """Raise FeatureWidthError naming each encoder whose features [batch, width] have the wrong width.

    features : ``{encoder name: features [batch, width]}``
    expected : ``{encoder name: width}``; encoders not listed are not checked.

    Examples
    --------
    >>> check_widths({"image": image_feat, "text": text_feat}, expected={"image": 512, "text": 512})
    """
    wrong = {
        name: int(feat.shape[-1])
        for name, feat in features.items()
        if name in expected and int(feat.shape[-1]) != int(expected[name])
    }
    if wrong:
        details = "; ".join(
            f"encoder {name!r} gives width {got}, expected {expected[name]} "
            f"(add Projection({got}, {expected[name]}) after it)"
            for name, got in wrong.items()
        )
        raise FeatureWidthError(f"feature widths do not match: {details}")


def _activation(activation: str | nn.Module | None) -> nn.Module:
    if activation is None:
        return nn.Identity()
    if isinstance(activation, nn.Module):
        return activation
    if activation not in ACTIVATIONS:
        raise ParameterError(
            f"Projection activation {activation!r} is not one of {', '.join(ACTIVATIONS)} (or pass an nn.Module)"
        )
    return ACTIVATIONS[activation]()
