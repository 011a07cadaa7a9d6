"""Encoders for feature-level fusion: a module that maps one modality to features, its width probed.

Every encoder returns vectors [batch, width] (or, with ``tokens=True`` where it has them, a token
sequence [batch, tokens, width]) and knows its ``width`` by running once on an example, never
from a hand-typed number. ``freeze()`` stops its training, ``unfreeze(last=n)`` trains only its
last ``n`` blocks.

An encoder runs in two steps, so that a fused model exports to one ONNX graph:
``prepare(batch)`` turns raw input (strings, arrays) into named tensors (tokenization happens
here, outside the graph), and ``encode(**tensors)`` computes the features (inside the graph);
``encoder(batch)`` is ``encode(**prepare(batch))``. ``spec()`` is the encoder as plain values
(:func:`~modelfusion.multimodal.specs.build_encoder` rebuilds it), which is how a saved model is rebuilt without pickle.

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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import torch
from torch import nn

from modelfusion.errors import ParameterError


class Encoder(nn.Module):
    """The shared part: ``width``, ``prepare``/``encode``, ``spec``, ``freeze``/``unfreeze``.

    Subclasses set ``self.body``, ``self.width`` and write ``encode``; ``kind`` names them in
    specs and ``input_names`` are the tensors ``prepare`` returns.
    """

    width: int
    body: nn.Module
    kind: ClassVar[str] = ""
    input_names: tuple[str, ...] = ("input",)

    def prepare(self, batch: Any) -> dict[str, Any]:
        """Raw batch -> ``{input name: tensor}``, the arguments of :meth:`encode`."""
        return {self.input_names[0]: _as_tensor(batch)}

    if TYPE_CHECKING:  # each subclass names its own tensors
        encode: Callable[..., torch.Tensor]
    else:

        def encode(self, **tensors: Any) -> torch.Tensor:
            """Named tensors (see :meth:`prepare`) -> features [batch, width] or [batch, tokens, width]."""
            raise NotImplementedError

    def forward(self, batch: Any) -> torch.Tensor:
        return self.encode(**self.prepare(batch))

    def spec(self) -> dict[str, Any]:
        """The encoder as plain values, ``{"type": kind, ...}``; ``build_encoder`` rebuilds it."""
        raise ParameterError(
            f"{type(self).__name__} cannot be described by plain values, so it cannot be saved; build it "
            "by name (ImageEncoder('resnet18')) or give ModuleEncoder architecture='package.module:factory'"
        )

    def save_files(self, directory: Any) -> dict[str, Any]:
        """Write files the spec needs beside the weights (a tokenizer); returns the spec pointing at them."""
        return self.spec()

    def train(self, mode: bool = True) -> Encoder:
        """As ``nn.Module.train``, but frozen batch-norm layers stay in eval mode: their running
        statistics are part of what was frozen."""
        super().train(mode)
        if mode:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                    p.requires_grad for p in module.parameters()
                ):
                    module.eval()
        return self

    def freeze(self) -> Encoder:
        """Stop training every parameter of the encoder (frozen batch norms keep their statistics);
        returns self."""
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

    kind = "module"

    def __init__(
        self,
        module: nn.Module,
        *,
        example: Any = None,
        width: int | None = None,
        architecture: str | None = None,
        architecture_kwargs: Mapping[str, Any] | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__()
        self.body = module
        self.architecture, self.architecture_kwargs = architecture, dict(architecture_kwargs or {})
        if example is None and input_shape is not None:
            example = torch.zeros(1, *input_shape)
        self.input_shape = list(input_shape) if input_shape is not None else _shape_of(example)
        if width is None and example is None:
            raise ParameterError(
                f"the width of {type(module).__name__} cannot be probed without an input: pass example= "
                "(one batch of its input) or width="
            )
        self.width = int(width) if width is not None else probe_width(module, example, type(module).__name__)

    @classmethod
    def from_architecture(
        cls,
        architecture: str,
        architecture_kwargs: Mapping[str, Any] | None = None,
        *,
        input_shape: Sequence[int],
    ) -> ModuleEncoder:
        """Build ``package.module:factory(**kwargs)`` (or a torchvision/timm name) as an encoder."""
        from modelfusion.members.torch import build_architecture

        module = build_architecture(architecture, architecture_kwargs)
        return cls(
            module,
            architecture=architecture,
            architecture_kwargs=architecture_kwargs,
            input_shape=input_shape,
        )

    def encode(self, input: Any) -> torch.Tensor:  # noqa: A002  # the graph input's name
        return _first_tensor(self.body(input))

    def spec(self) -> dict[str, Any]:
        if self.architecture is None or self.input_shape is None:
            return super().spec()
        return {
            "type": self.kind,
            "architecture": self.architecture,
            "architecture_kwargs": self.architecture_kwargs,
            "input_shape": self.input_shape,
        }


class ImageEncoder(Encoder):
    """An image backbone's pooled features: a timm or torchvision name (head removed, random
    weights unless ``pretrained=True``, which downloads), a factory path such as
    ``"vit_pytorch.vit:ViT"`` (its arguments in ``**kwargs``; ``image_size`` and ``channels`` passed
    on when it takes them), or any module returning features. A vit-pytorch model's classifier
    head (``mlp_head``, ``to_logits``) is removed, so a ViT gives its pooled token.

    Examples
    --------
    >>> ImageEncoder("resnet18", image_size=64).width
    512
    """

    kind = "image"
    input_names = ("pixels",)

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
        self.backbone = backbone if isinstance(backbone, str) else None
        self.image_size, self.in_channels, self.kwargs = image_size, in_channels, dict(kwargs)
        self.body = (
            _backbone(backbone, image_size, in_channels, pretrained, kwargs)
            if isinstance(backbone, str)
            else _without_vit_head(backbone)
        )
        example = torch.zeros(1, in_channels, image_size, image_size)
        name = backbone if isinstance(backbone, str) else type(backbone).__name__
        self.width = (
            int(width) if width is not None else probe_width(self.body, example, f"image encoder {name!r}")
        )

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        out = _first_tensor(self.body(pixels))
        return out.flatten(1) if out.dim() == 4 else out

    def spec(self) -> dict[str, Any]:
        if self.backbone is None:
            return super().spec()
        return {
            "type": self.kind,
            "backbone": self.backbone,
            "image_size": self.image_size,
            "in_channels": self.in_channels,
            **self.kwargs,
        }


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

    kind = "text"
    input_names: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")

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
        self.input_names = tuple(self._tokenize(["width probe"]))
        self.width = probe_width(self, ["width probe"], f"text encoder {type(model).__name__}")

    @classmethod
    def from_pretrained(cls, name_or_path: str, **options: Any) -> TextEncoder:
        """A Hugging Face model and its tokenizer by hub name or folder (``AutoModel``; downloads
        unless it is a folder or cached). Remote code is never run."""
        from modelfusion.dependencies import require

        transformers = require("transformers", purpose=f"text encoder {name_or_path!r}", extra="hf")
        model = transformers.AutoModel.from_pretrained(name_or_path, trust_remote_code=False)
        tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=False)
        return cls(model, tokenizer, **options)

    def prepare(self, batch: Sequence[str]) -> dict[str, Any]:
        if isinstance(batch, str):
            raise ParameterError("a text encoder takes a batch of texts (a list of str), got one str")
        return self._tokenize([str(t) for t in batch])

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **extra: torch.Tensor
    ) -> torch.Tensor:
        device = next(self.body.parameters()).device
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, **extra}
        hidden = self.body(**{k: v.to(device) for k, v in batch.items()}).last_hidden_state
        if self.tokens:  # [batch, tokens, width]
            return hidden
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.to(device).unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)

    def spec(self) -> dict[str, Any]:
        source = getattr(getattr(self.body, "config", None), "_name_or_path", "") or None
        return {
            "type": self.kind,
            "model": source,
            "pooling": self.pooling,
            "max_length": self.max_length,
            "tokens": self.tokens,
        }

    def save_files(self, directory: Any) -> dict[str, Any]:
        """``config.json`` and the tokenizer's files (``save_pretrained``); the weights go with the model's."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cast(Any, self.body).config.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        return {**self.spec(), "model": None}

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

    kind = "tabular"
    input_names = ("values",)

    def __init__(self, in_features: int, *, width: int = 64, depth: int = 2, dropout: float = 0.0):
        super().__init__()
        self.in_features, self.depth, self.dropout = in_features, depth, dropout
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(in_features if i == 0 else width, width), nn.ReLU(), nn.Dropout(dropout)]
        self.body = nn.Sequential(*layers)
        self.width = probe_width(self.body, torch.zeros(1, in_features), "tabular encoder")

    def encode(self, values: torch.Tensor) -> torch.Tensor:
        return self.body(values.float())

    def spec(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "in_features": self.in_features,
            "width": self.width,
            "depth": self.depth,
            "dropout": self.dropout,
        }


class WordEncoder(Encoder):
    """A bag of words: the mean of learned word vectors over a fixed vocabulary (lower-cased
    words; unknown words share one vector). Needs no tokenizer files, so built-in tasks run offline.

    Examples
    --------
    >>> enc = WordEncoder(["add", "minus", "one", "two"], width=16)
    >>> enc(["add two", "minus one"]).shape
    torch.Size([2, 16])
    """

    kind = "words"
    input_names = ("word_ids", "word_mask")

    def __init__(self, vocabulary: Sequence[str], *, width: int = 64):
        super().__init__()
        self.vocabulary = sorted({w.lower() for w in vocabulary})
        self.index = {w: i + 1 for i, w in enumerate(self.vocabulary)}  # 0: unknown
        self.body = nn.Embedding(len(self.index) + 1, width)
        self.width = probe_width(self, ["probe"], "word encoder")

    def prepare(self, batch: Sequence[str]) -> dict[str, Any]:
        if isinstance(batch, str):
            raise ParameterError("a word encoder takes a batch of texts (a list of str), got one str")
        ids = [[self.index.get(w, 0) for w in _WORD.findall(str(t).lower())] or [0] for t in batch]
        longest = max((len(row) for row in ids), default=1)
        word_ids = torch.zeros(len(ids), longest, dtype=torch.long)
        word_mask = torch.zeros(len(ids), longest)
        for i, row in enumerate(ids):
            word_ids[i, : len(row)] = torch.tensor(row)
            word_mask[i, : len(row)] = 1.0
        return {"word_ids": word_ids, "word_mask": word_mask}

    def encode(self, word_ids: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        """The mean of the words' vectors (padding masked out)."""
        device = cast(nn.Embedding, self.body).weight.device
        vectors = self.body(word_ids.to(device))
        mask = word_mask.to(device).unsqueeze(-1)
        return (vectors * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)

    def spec(self) -> dict[str, Any]:
        return {"type": self.kind, "vocabulary": self.vocabulary, "width": self.width}


_WORD = re.compile(r"[a-z0-9']+")


def _backbone(
    name: str, image_size: int, in_channels: int, pretrained: bool, kwargs: dict[str, Any]
) -> nn.Module:
    """A timm model with ``num_classes=0`` (pooled features), a torchvision one with its head
    removed, or ``package.module:factory(**kwargs)`` (a vit-pytorch model: its head removed)."""
    if ":" in name:
        return _without_vit_head(
            build_factory_backbone(name, image_size, in_channels, pretrained, kwargs, what="image encoder")
        )
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


def build_factory_backbone(
    name: str, image_size: int, in_channels: int, pretrained: bool, kwargs: dict[str, Any], *, what: str
) -> nn.Module:
    """``package.module:factory(**kwargs)``, given ``image_size`` and ``channels`` when it takes them;
    lists become tuples (a spec read from JSON has lists where vit-pytorch's ``cast_tuple`` wants tuples)."""
    import inspect

    from modelfusion.members.torch import build_architecture, import_factory

    if pretrained:
        raise ParameterError(f"{what} {name!r}: pretrained=True needs a timm or torchvision name")
    takes = inspect.signature(import_factory(name)).parameters
    sizes = {k: v for k, v in {"image_size": image_size, "channels": in_channels}.items() if k in takes}
    return build_architecture(name, {**sizes, **{k: _tuples(v) for k, v in kwargs.items()}})


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _without_vit_head(module: nn.Module) -> nn.Module:
    """A vit-pytorch model with its classifier replaced by Identity (its pooled features out);
    any other module as it is."""
    if not type(module).__module__.startswith("vit_pytorch"):
        return module
    head = getattr(module, "mlp_head", None)
    if isinstance(head, nn.Module):
        module.mlp_head = nn.Identity()
    elif isinstance(getattr(module, "to_logits", None), nn.Sequential):  # CrossFormer: pool, then Linear
        logits: Any = module.to_logits
        if isinstance(logits[-1], nn.Linear):
            logits[-1] = nn.Identity()
    return module


def _longest_block_stack(module: nn.Module) -> nn.Module | None:
    """The ModuleList/Sequential with the most children of one type (the model's blocks), the last
    such stack in module order when several tie."""
    best, size = None, 2
    for child in module.modules():
        if isinstance(child, (nn.ModuleList, nn.Sequential)):
            kinds = {type(c) for c in child.children()}
            n = len(list(child.children()))
            if len(kinds) == 1 and n >= size:  # ties: the later stack (a ResNet's last stage)
                best, size = child, n
    return best


def _as_tensor(batch: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch
    import numpy as np

    if isinstance(batch, np.ndarray) and batch.dtype.kind in "fiub":
        return torch.from_numpy(batch.astype(np.float32) if batch.dtype.kind == "f" else batch)
    return batch  # a module of the user's may take anything


def _shape_of(example: Any) -> list[int] | None:
    return list(example.shape[1:]) if isinstance(example, torch.Tensor) else None


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
