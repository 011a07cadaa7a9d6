"""CLIP's image and text towers (transformers ``CLIPModel``) as encoders, projected into CLIP's
joint space (``projected=True``) or as the towers' pooled outputs.

Examples
--------
>>> towers = clip_encoders(CLIPModel.from_pretrained("openai/clip-vit-base-patch32"), tokenizer)
>>> towers["image"](pixels).shape, towers["text"](["a photo of a cat"]).shape
(torch.Size([8, 512]), torch.Size([1, 512]))
>>> MultimodalFusion(encoders=towers, fusion="gated", num_classes=2)     # fine-tuned end to end
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from modelfusion.multimodal.encoders import Encoder, TextEncoder, probe_width


class CLIPImageEncoder(Encoder):
    """The vision tower of a ``CLIPModel``: pixels [batch, 3, size, size] -> [batch, width].

    Examples
    --------
    >>> CLIPImageEncoder(clip).width            # the projection's width, e.g. 512
    512
    """

    kind = "clip_image"
    input_names = ("pixels",)

    def __init__(self, model: nn.Module, *, projected: bool = True):
        super().__init__()
        clip: Any = model
        self.body, self.projected, self.config = clip.vision_model, projected, clip.config
        self.projection = clip.visual_projection if projected else nn.Identity()
        size = int(clip.config.vision_config.image_size)
        self.image_size = size
        self.width = probe_width(self, torch.zeros(1, 3, size, size), "CLIP image tower")

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.projection(cast(Any, self.body)(pixel_values=pixels).pooler_output)

    def spec(self) -> dict[str, Any]:
        return {"type": self.kind, "model": _source(self.config), "projected": self.projected}

    def save_files(self, directory: Any) -> dict[str, Any]:
        """The CLIP config (the weights go with the model's)."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(directory)
        return {**self.spec(), "model": None}


class CLIPTextEncoder(TextEncoder):
    """The text tower of a ``CLIPModel`` with its tokenizer inside: strings -> [batch, width]
    (the end-of-text token's state, projected into the joint space with ``projected=True``).

    Examples
    --------
    >>> CLIPTextEncoder(clip, tokenizer)(["a photo of a cat"]).shape
    torch.Size([1, 512])
    """

    kind = "clip_text"

    def __init__(
        self, model: nn.Module, tokenizer: Any, *, projected: bool = True, max_length: int | None = None
    ):
        Encoder.__init__(self)  # not TextEncoder's: the tower pools itself (its end-of-text token)
        clip: Any = model
        self.body, self.tokenizer, self.pooling, self.tokens = clip.text_model, tokenizer, "eos", False
        self.clip_config, self.projected = clip.config, projected
        self.projection = clip.text_projection if projected else nn.Identity()
        self.max_length = max_length or int(clip.config.text_config.max_position_embeddings)
        self._warned = False
        self.input_names = tuple(self._tokenize(["width probe"]))
        self.width = probe_width(self, ["width probe"], "CLIP text tower")

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **extra: torch.Tensor
    ) -> torch.Tensor:
        out = cast(Any, self.body)(input_ids=input_ids, attention_mask=attention_mask)
        return self.projection(out.pooler_output)

    def spec(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "model": _source(self.clip_config),
            "projected": self.projected,
            "max_length": self.max_length,
        }

    def save_files(self, directory: Any) -> dict[str, Any]:
        """The CLIP config and the tokenizer's files."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.clip_config.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        return {**self.spec(), "model": None}


def clip_encoders(model: nn.Module, tokenizer: Any, *, projected: bool = True) -> dict[str, Encoder]:
    """``{"image": CLIPImageEncoder, "text": CLIPTextEncoder}`` sharing ``model``'s towers."""
    return {
        "image": CLIPImageEncoder(model, projected=projected),
        "text": CLIPTextEncoder(model, tokenizer, projected=projected),
    }


def build_clip_encoder(kind: str, options: dict[str, Any], files: Path | None, owner: str) -> Encoder:
    """A CLIP tower from a spec: by hub name or folder, or (``files``) from a saved config, offline."""
    from modelfusion.dependencies import require

    transformers = require("transformers", purpose=owner, extra="hf")
    source = options.pop("model", None)
    if files is not None:
        from modelfusion.members.hf import check_saved_configs

        check_saved_configs(files, owner=owner)
        config = transformers.CLIPConfig.from_pretrained(files, local_files_only=True)
        model = transformers.CLIPModel(config)
        location: Any = files
    else:
        if not source:
            from modelfusion.errors import ParameterError

            raise ParameterError(f"{owner}.model: name a CLIP model (hub name or folder)")
        model = transformers.CLIPModel.from_pretrained(str(source), trust_remote_code=False)
        location = str(source)
    if kind == "clip_image":
        return CLIPImageEncoder(model, **options)
    local = {"local_files_only": True} if files is not None else {}
    tokenizer = transformers.AutoTokenizer.from_pretrained(location, trust_remote_code=False, **local)
    return CLIPTextEncoder(model, tokenizer, **options)


def _source(config: Any) -> str | None:
    return getattr(config, "_name_or_path", "") or None


__all__ = ["CLIPImageEncoder", "CLIPTextEncoder", "build_clip_encoder", "clip_encoders"]
