"""Encoders for feature-level fusion: a module that maps one modality to features, its width probed.

Every encoder returns vectors [batch, width] (or, with ``tokens=True`` where it has them, a token
sequence [batch, tokens, width]) and knows its ``width`` by running once on an example, never
from a hand-typed number. ``freeze()`` stops its training, ``unfreeze(last=n)`` trains only its
last ``n`` blocks.

- :class:`ModuleEncoder`: any ``nn.Module``, probed on ``example=`` (or told ``width=``);
- :class:`ImageEncoder`: a timm or torchvision backbone by name (its head removed) or a module;
- :class:`TextEncoder`: a Hugging Face model with its tokenizer applied inside, CLS or mean pooling;
- :class:`TabularEncoder`: an MLP over numeric columns;
- :class:`WordEncoder`: a bag of words over a fixed vocabulary (no download, no tokenizer files).

Examples
--------
>>> image = ImageEncoder("resnet18", image_size=64)            # width 512, probed
>>> text = TextEncoder(bert, tokenizer, pooling="mean")        # width = hidden size, probed
>>> text(["a red apple", "two cats"]).shape
torch.Size([2, 128])
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from modelfusion.errors import ParameterError


class Encoder(nn.Module):
    """The shared part: ``width``, ``freeze``/``unfreeze``; subclasses set ``self.body`` and ``forward``."""

    width: int
    body: nn.Module

    def freeze(self) -> Encoder:
        """Stop training every parameter of the encoder; returns self."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def unfreeze(self, last: int | None = None) -> Encoder:
        """Train every parameter again, or (``last=n``) only the last ``n`` blocks of its longest
        stack of blocks (transformer layers, ResNet stages...); returns self."""
        if last is None:
            for p in self.parameters():
                p.requires_grad_(True)
            return self
        blocks = _longest_block_stack(self.body)
        if blocks is None:
            raise ParameterError(
                f"{type(self).__name__}: found no stack of blocks to unfreeze the last {last} of"
            )
        stack = list(blocks.children())
        if not 1 <= last <= len(stack):
            raise ParameterError(f"unfreeze(last={last}): the encoder has {len(stack)} blocks")
        self.freeze()
        for block in stack[-last:]:
            for p in block.parameters():
                p.requires_grad_(True)
        return self


def probe_width(module: nn.Module, example: Any, what: str) -> int:
    """The last dimension of ``module(example)`` (eval mode, no gradients)."""
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(example)
    except Exception as exc:  # the user's module on the user's example: say which encoder failed
        raise ParameterError(
            f"{what}: probing its width failed ({type(exc).__name__}: {exc}); pass width= or a matching example="
        ) from exc
    finally:
        module.train(was)
    out = _first_tensor(out)
    if out.dim() not in (2, 3):
        raise ParameterError(
            f"{what} returns {list(out.shape)}; an encoder returns [batch, width] or [batch, tokens, width]"
        )
    return int(out.shape[-1])


class ModuleEncoder(Encoder):
    """Any module as an encoder; its width probed on ``example`` unless given.

    Examples
    --------
    >>> enc = ModuleEncoder(nn.Sequential(nn.Flatten(), nn.Linear(64, 32)), example=torch.zeros(1, 1, 8, 8))
    >>> enc.width
    32
    """

    def __init__(self, module: nn.Module, *, example: Any = None, width: int | None = None):
        super().__init__()
        self.body = module
        if width is None and example is None:
            raise ParameterError(
                f"the width of {type(module).__name__} cannot be probed without an input: pass example= "
                "(one batch of its input) or width="
            )
        self.width = int(width) if width is not None else probe_width(module, example, type(module).__name__)

    def forward(self, x: Any) -> torch.Tensor:
        return _first_tensor(self.body(x))


class ImageEncoder(Encoder):
    """An image backbone's pooled features: a timm or torchvision name (head removed, random
    weights unless ``pretrained=True``, which downloads), or any module returning features.

    Examples
    --------
    >>> ImageEncoder("resnet18", image_size=64).width
    512
    """

    def __init__(
        self,
        backbone: str | nn.Module,
        *,
        image_size: int = 224,
        in_channels: int = 3,
        pretrained: bool = False,
        width: int | None = None,
        **kwargs: Any,
    ):
        super().__init__()
        self.body = (
            _backbone(backbone, in_channels, pretrained, kwargs) if isinstance(backbone, str) else backbone
        )
        example = torch.zeros(1, in_channels, image_size, image_size)
        name = backbone if isinstance(backbone, str) else type(backbone).__name__
        self.width = (
            int(width) if width is not None else probe_width(self.body, example, f"image encoder {name!r}")
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = _first_tensor(self.body(images))
        return out.flatten(1) if out.dim() == 4 else out


class TextEncoder(Encoder):
    """A Hugging Face encoder (``AutoModel``) with its tokenizer applied inside: strings in,
    ``pooling="cls"`` (the first token) or ``"mean"`` (mask-weighted mean) vectors out; with
    ``tokens=True`` the token sequence. Texts over ``max_length`` are truncated, with one warning.

    Examples
    --------
    >>> enc = TextEncoder(BertModel(BertConfig(num_hidden_layers=2, hidden_size=64, ...)), tokenizer)
    >>> enc(["a red apple"]).shape
    torch.Size([1, 64])
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        pooling: str = "cls",
        max_length: int | None = None,
        tokens: bool = False,
    ):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ParameterError(f"pooling={pooling!r} is not 'cls' or 'mean'")
        self.body, self.tokenizer, self.pooling, self.tokens = model, tokenizer, pooling, tokens
        limit = getattr(tokenizer, "model_max_length", None)
        self.max_length = max_length or (limit if isinstance(limit, int) and limit < 100_000 else 512)
        self._warned = False
        self.width = probe_width(self, ["width probe"], f"text encoder {type(model).__name__}")

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        batch = self._tokenize(list(texts))
        device = next(self.body.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        hidden = self.body(**batch).last_hidden_state  # [batch, tokens, width]
        if self.tokens:
            return hidden
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)

    def _tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if not self._warned:
            lengths = [len(ids) for ids in self.tokenizer(texts)["input_ids"]]
            if max(lengths, default=0) > self.max_length:
                warnings.warn(
                    f"text encoder: {sum(n > self.max_length for n in lengths)} text(s) longer than the "
                    f"tokenizer's limit of {self.max_length} tokens are truncated (warned once)",
                    stacklevel=3,
                )
                self._warned = True
        out = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: out[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in out}


class TabularEncoder(Encoder):
    """An MLP over numeric columns [batch, in_features] -> [batch, width].

    Examples
    --------
    >>> TabularEncoder(12, width=32)(torch.zeros(4, 12)).shape
    torch.Size([4, 32])
    """

    def __init__(self, in_features: int, *, width: int = 64, depth: int = 2, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(in_features if i == 0 else width, width), nn.ReLU(), nn.Dropout(dropout)]
        self.body = nn.Sequential(*layers)
        self.width = probe_width(self.body, torch.zeros(1, in_features), "tabular encoder")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class WordEncoder(Encoder):
    """A bag of words: the mean of learned word vectors over a fixed vocabulary (lower-cased
    words; unknown words share one vector). Needs no tokenizer files, so built-in tasks run offline.

    Examples
    --------
    >>> enc = WordEncoder(["add", "minus", "one", "two"], width=16)
    >>> enc(["add two", "minus one"]).shape
    torch.Size([2, 16])
    """

    def __init__(self, vocabulary: Sequence[str], *, width: int = 64):
        super().__init__()
        self.vocabulary = sorted({w.lower() for w in vocabulary})
        self.index = {w: i + 1 for i, w in enumerate(self.vocabulary)}  # 0: unknown
        self.body = nn.EmbeddingBag(len(self.index) + 1, width, mode="mean")
        self.width = probe_width(self, ["probe"], "word encoder")

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        ids = [[self.index.get(w, 0) for w in _WORD.findall(t.lower())] or [0] for t in texts]
        offsets = torch.tensor([0, *torch.tensor([len(i) for i in ids]).cumsum(0)[:-1].tolist()])
        flat = torch.tensor([i for row in ids for i in row])
        device = next(self.body.parameters()).device
        return self.body(flat.to(device), offsets.to(device))


_WORD = re.compile(r"[a-z0-9']+")


def _backbone(name: str, in_channels: int, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    """A timm model with ``num_classes=0`` (pooled features), else a torchvision one with its head removed."""
    try:
        import timm

        if timm.is_model(name):
            return timm.create_model(
                name, pretrained=pretrained, num_classes=0, in_chans=in_channels, **kwargs
            )
    except ImportError:
        pass
    from modelfusion.dependencies import require

    torchvision = require("torchvision", purpose=f"image encoder {name!r}", extra="vision")
    if name not in torchvision.models.list_models():
        raise ParameterError(f"image encoder {name!r} is neither a timm nor a torchvision model name")
    model = torchvision.models.get_model(name, weights="DEFAULT" if pretrained else None, **kwargs)
    for head in ("fc", "classifier", "heads", "head"):
        if isinstance(getattr(model, head, None), nn.Module):
            setattr(model, head, nn.Identity())
            return model
    raise ParameterError(f"image encoder {name!r}: found no head (fc, classifier, heads) to remove")


def _longest_block_stack(module: nn.Module) -> nn.Module | None:
    """The ModuleList/Sequential with the most children of one type (the model's blocks)."""
    best, size = None, 1
    for child in module.modules():
        if isinstance(child, (nn.ModuleList, nn.Sequential)):
            kinds = {type(c) for c in child.children()}
            n = len(list(child.children()))
            if len(kinds) == 1 and n > size:
                best, size = child, n
    return best


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    for attr in ("pooler_output", "last_hidden_state"):
        if getattr(out, attr, None) is not None:
            return getattr(out, attr)
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ParameterError(f"an encoder must return a tensor, got {type(out).__name__}")


__all__ = [
    "Encoder",
    "ImageEncoder",
    "ModuleEncoder",
    "TabularEncoder",
    "TextEncoder",
    "WordEncoder",
    "probe_width",
]
