"""Encoders from plain values: the ``{"type": ..., ...}`` specs that saved models and configs carry.

Examples
--------
>>> build_encoder({"type": "words", "vocabulary": ["add", "two"], "width": 16}).width
16
>>> build_encoder({"type": "multiscale", "backbone": "resnet18", "fuse": "fpn", "image_size": 64})
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelfusion.errors import ParameterError
from modelfusion.members.architectures import check_architecture
from modelfusion.multimodal.clip import CLIPImageEncoder, CLIPTextEncoder, build_clip_encoder
from modelfusion.multimodal.encoders import (
    Encoder,
    ImageEncoder,
    ModuleEncoder,
    TabularEncoder,
    TextEncoder,
    WordEncoder,
)
from modelfusion.multimodal.multiscale import MultiScaleEncoder


def build_encoder(
    spec: Mapping[str, Any], *, files: Path | None = None, trust: bool = False, owner: str = "encoder"
) -> Encoder:
    """The encoder a spec describes (``{"type": "image", "backbone": "resnet18", ...}``, see
    :meth:`Encoder.spec`).

    With ``files`` (the folder :meth:`Encoder.save_files` wrote, when a saved model is loaded)
    nothing downloads: weights come afterwards from the saved state, and without ``trust``
    only known architectures with plain arguments are built. Raises ParameterError naming
    ``owner`` for an unknown type or argument.

    Examples
    --------
    >>> build_encoder({"type": "words", "vocabulary": ["add", "two"], "width": 16}).width
    16
    """
    options = dict(spec)
    kind = options.pop("type", None)
    if kind not in ENCODERS:
        raise ParameterError(f"{owner}.type: {kind!r} is not one of {', '.join(ENCODERS)}")
    saved = files is not None
    try:
        if kind in ("image", "multiscale"):
            cls = ENCODERS[kind]
            if saved:
                options["pretrained"] = False
                if not trust:
                    check_architecture(options.get("backbone"), _extra(options, cls), owner=owner)
            return cls(**options)
        if kind == "module":
            if saved and not trust:
                check_architecture(
                    options.get("architecture"), options.get("architecture_kwargs"), owner=owner
                )
            return ModuleEncoder.from_architecture(**options)
        if kind == "text":
            return _text_encoder(options, files, owner)
        if kind in ("clip_image", "clip_text"):
            return build_clip_encoder(kind, options, files, owner)
        return ENCODERS[kind](**options)
    except TypeError as exc:
        raise ParameterError(f"{owner} ({kind}): {exc}") from None


def _extra(options: Mapping[str, Any], cls: type) -> dict[str, Any]:
    """The options beyond the constructor's own parameters (passed on to timm/torchvision)."""
    import inspect

    own = set(inspect.signature(cls).parameters)
    return {k: v for k, v in options.items() if k not in own}


def _text_encoder(options: dict[str, Any], files: Path | None, owner: str) -> TextEncoder:
    source = options.pop("model", None)
    if files is None:
        if not source:
            raise ParameterError(f"{owner}.model: name a Hugging Face model (hub name or folder)")
        return TextEncoder.from_pretrained(str(source), **options)
    from modelfusion.dependencies import require
    from modelfusion.members.hf import check_saved_configs

    transformers = require("transformers", purpose=owner, extra="hf")
    check_saved_configs(files, owner=owner)
    config = transformers.AutoConfig.from_pretrained(files, local_files_only=True, trust_remote_code=False)
    model = transformers.AutoModel.from_config(config, trust_remote_code=False)
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        files, local_files_only=True, trust_remote_code=False
    )
    return TextEncoder(model, tokenizer, **options)


#: Encoder classes by the ``type`` their specs carry.
ENCODERS: dict[str, type[Encoder]] = {
    cls.kind: cls
    for cls in (
        ImageEncoder,
        MultiScaleEncoder,
        TextEncoder,
        TabularEncoder,
        WordEncoder,
        ModuleEncoder,
        CLIPImageEncoder,
        CLIPTextEncoder,
    )
}

__all__ = ["ENCODERS", "build_encoder"]
