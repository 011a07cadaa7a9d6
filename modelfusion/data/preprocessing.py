"""Standard batch preprocessors for members: image resizing/normalisation, reshapes, tokenisation.

Each factory returns a plain callable ``batch -> batch`` that can be passed as a member's
``preprocess=`` or added to a :class:`~modelfusion.data.DataPipeline` with ``batched=True``.
:func:`build_preprocessor` builds one from a config entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelfusion.dependencies import require
from modelfusion.errors import ArgumentTypeError, DataError, DataFileNotFoundError

_PAD_TOKENS = ("[PAD]", "<pad>", "<PAD>", "<|pad|>", "[pad]")


# -- images -------------------------------------------------------------------------------


class ImagePreprocessor:
    """Resize and normalise an image batch; see :func:`image_preprocessor`."""

    def __init__(self, size=None, mean=None, std=None, channels_first=True, input_layout="auto"):
        from torchvision.transforms import v2

        if input_layout not in ("auto", "NCHW", "NHWC"):
            raise DataError(f"input_layout must be 'auto', 'NCHW' or 'NHWC', got {input_layout!r}")
        if size is not None:
            size = [int(size), int(size)] if isinstance(size, (int, np.integer)) else [int(s) for s in size]
            if len(size) != 2 or min(size) <= 0:
                raise DataError(f"image size must be a positive int or [height, width], got {size!r}")
        if (mean is None) != (std is None):
            mean = [0.0] if mean is None else mean
            std = [1.0] if std is None else std
        if mean is not None:
            mean, std = [float(m) for m in np.atleast_1d(mean)], [float(s) for s in np.atleast_1d(std)]
            if len(mean) != len(std):
                raise DataError(f"mean has {len(mean)} values but std has {len(std)}; give one per channel")
            if min(std) <= 0:
                raise DataError(f"std must be > 0, got {std}")
        self.size, self.mean, self.std = size, mean, std
        self.channels_first, self.input_layout = channels_first, input_layout
        steps = []
        if size is not None:
            steps.append(v2.Resize(size, antialias=True))
        if mean is not None:
            steps.append(v2.Normalize(mean, std))
        self._transform = v2.Compose(steps) if steps else None

    def __call__(self, batch: Any) -> np.ndarray:
        if isinstance(batch, (list, tuple)):  # images of possibly different sizes
            items = [self(np.asarray(img)[None]) for img in batch]
            shapes = {x.shape[1:] for x in items}
            if len(shapes) > 1:
                raise DataError(
                    f"images have different shapes after preprocessing ({', '.join(map(str, sorted(shapes)))}); "
                    "pass size= to resize them to one size"
                )
            return np.concatenate(items) if items else np.zeros((0, 1, 1, 1), np.float32)
        import torch

        t = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(batch))
        t = t.detach().cpu()
        if t.ndim == 3:  # [N, H, W]: one grey channel
            t = t[:, None]
        if t.ndim != 4:
            raise DataError(
                f"an image batch must be [N, C, H, W], [N, H, W, C] or [N, H, W], got {tuple(t.shape)}"
            )
        if self._layout(tuple(t.shape)) == "NHWC":
            t = t.permute(0, 3, 1, 2)
        t = t.float() / 255.0 if t.dtype == torch.uint8 else t.to(torch.float32)
        if self.mean is not None and len(self.mean) not in (1, t.shape[1]):
            raise DataError(f"mean/std have {len(self.mean)} values for {t.shape[1]}-channel images")
        if self._transform is not None:
            t = self._transform(t)
        out = t.numpy()
        if not self.channels_first:
            out = out.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(out, dtype=np.float32)

    def _layout(self, shape: tuple[int, ...]) -> str:
        if self.input_layout != "auto":
            return self.input_layout
        first, last = shape[1] in (1, 3, 4), shape[3] in (1, 3, 4)
        if first:  # ambiguous shapes (e.g. [N, 3, 8, 3]) count as channels-first
            return "NCHW"
        if last:
            return "NHWC"
        raise DataError(
            f"cannot find the channel axis of an image batch shaped {shape}; expected 1, 3 or 4 channels "
            "first or last, or pass input_layout='NCHW' / 'NHWC'"
        )

    def __repr__(self) -> str:
        return f"image_preprocessor(size={self.size}, mean={self.mean}, std={self.std}, channels_first={self.channels_first})"


def image_preprocessor(
    size: int | Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    channels_first: bool = True,
    *,
    input_layout: str = "auto",
) -> Callable[[Any], np.ndarray]:
    """A batch preprocessor that resizes and normalises images with ``torchvision.transforms.v2``.

    Parameters
    ----------
    size : output (height, width); an int gives a square image. None keeps the size.
    mean, std : per-channel normalisation applied after scaling to [0, 1], e.g. ImageNet's
        ``[0.485, 0.456, 0.406]`` and ``[0.229, 0.224, 0.225]``
    channels_first : output layout: True -> ``[N, C, H, W]`` (PyTorch, ONNX), False ->
        ``[N, H, W, C]`` (Keras)
    input_layout : ``"auto"`` (the axis of size 1, 3 or 4; channels-first when both could
        be), ``"NCHW"`` or ``"NHWC"``

    Returns
    -------
    callable
        ``batch -> float32 array [N, C, H, W]``. The batch may be a numpy array or tensor
        ``[N, C, H, W]``, ``[N, H, W, C]`` or ``[N, H, W]``, or a list of images of different
        sizes (then ``size`` is needed). ``uint8`` pixels are scaled to [0, 1]; other dtypes
        are used as they are.

    Examples
    --------
    >>> prep = image_preprocessor(size=224, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    >>> prep(np.zeros((2, 32, 32, 3), np.uint8)).shape
    (2, 3, 224, 224)
    """
    return ImagePreprocessor(size, mean, std, channels_first, input_layout)


# -- shapes -------------------------------------------------------------------------------


class ReshapePreprocessor:
    """Reshape every sample of a batch; see :func:`reshape_preprocessor`."""

    def __init__(self, shape: Sequence[int] | None):
        self.shape = None if shape is None else tuple(int(s) for s in shape)

    def __call__(self, batch: Any) -> Any:
        if isinstance(batch, (list, tuple)):
            batch = np.asarray(batch)
        n = batch.shape[0]
        target = (n, int(np.prod(batch.shape[1:]))) if self.shape is None else (n, *self.shape)
        try:
            return batch.reshape(target)
        except (ValueError, RuntimeError) as exc:
            per_sample, shape = int(np.prod(batch.shape[1:])), target[1:]
            raise DataError(
                f"cannot reshape a batch shaped {list(batch.shape)} to [N, {', '.join(map(str, shape))}]: "
                f"each sample has {per_sample} values, the shape holds {int(np.prod(shape))}"
            ) from exc

    def __repr__(self) -> str:
        return "flatten" if self.shape is None else f"reshape_preprocessor({list(self.shape)})"


def reshape_preprocessor(shape: Sequence[int]) -> Callable[[Any], Any]:
    """A batch preprocessor reshaping ``[N, ...]`` to ``[N, *shape]`` (numpy or torch).

    Examples
    --------
    >>> to_image = reshape_preprocessor([1, 8, 8])      # flat digits -> CNN input
    >>> to_image(np.zeros((5, 64), np.float32)).shape
    (5, 1, 8, 8)
    """
    return ReshapePreprocessor(shape)


def flatten_preprocessor() -> Callable[[Any], Any]:
    """A batch preprocessor flattening ``[N, ...]`` to ``[N, features]``."""
    return ReshapePreprocessor(None)


# -- text ---------------------------------------------------------------------------------


class TextPreprocessor:
    """Tokenise a batch of strings; see :func:`text_preprocessor`."""

    def __init__(
        self,
        tokenizer: Any,
        max_length: int = 128,
        padding: bool | str = "max_length",
        return_token_type_ids: bool = False,
    ):
        if padding not in (True, False, "longest", "max_length"):
            raise DataError(f"padding must be 'max_length', 'longest', True or False, got {padding!r}")
        if int(max_length) <= 0:
            raise DataError(f"max_length must be positive, got {max_length!r}")
        self.source = tokenizer if isinstance(tokenizer, (str, Path)) else type(tokenizer).__name__
        self.tokenizer = _load_tokenizer(tokenizer)
        if padding and getattr(self.tokenizer, "pad_token", "") is None:
            _set_pad_token(self.tokenizer, self.source)
        self.max_length, self.padding = int(max_length), padding
        self.return_token_type_ids = return_token_type_ids

    def __call__(self, batch: Any) -> dict[str, np.ndarray]:
        if isinstance(batch, str):
            raise ArgumentTypeError(
                "text_preprocessor takes a batch of strings; wrap a single string in a list"
            )
        texts = batch.tolist() if isinstance(batch, np.ndarray) else list(batch)
        enc = self.tokenizer(
            [str(t) for t in texts],
            padding=self.padding,
            truncation=True,
            max_length=self.max_length,
            return_tensors="np",
            return_token_type_ids=self.return_token_type_ids,
        )
        keys = ["input_ids", "attention_mask"] + (["token_type_ids"] if self.return_token_type_ids else [])
        return {k: np.asarray(enc[k], dtype=np.int64) for k in keys if k in enc}

    def __repr__(self) -> str:
        return f"text_preprocessor({str(self.source)!r}, max_length={self.max_length})"


def text_preprocessor(
    tokenizer: Any,
    max_length: int = 128,
    *,
    padding: bool | str = "max_length",
    return_token_type_ids: bool = False,
) -> Callable[[Any], dict[str, np.ndarray]]:
    """A batch preprocessor that tokenises strings for a transformer member.

    Parameters
    ----------
    tokenizer : a Hugging Face tokenizer, a ``tokenizers.Tokenizer``, or a path to a
        ``tokenizer.json`` file or a tokenizer folder (read locally, never downloaded)
    max_length : longer texts are truncated
    padding : ``"max_length"`` (fixed shape ``[N, max_length]``, what exported ONNX graphs
        usually need) or ``"longest"`` (pad to the longest text in the batch)
    return_token_type_ids : also return ``token_type_ids`` (BERT-style models)

    Returns
    -------
    callable
        ``list of str -> {"input_ids": int64 [N, L], "attention_mask": int64 [N, L]}``.
        A tokenizer without a padding token gets ``[PAD]``/``<pad>`` from its vocabulary,
        or its end-of-sequence token.

    Examples
    --------
    >>> tok = text_preprocessor("models/bert/tokenizer.json", max_length=64)
    >>> tok(["a great film", "dull"])["input_ids"].shape
    (2, 64)
    """
    return TextPreprocessor(tokenizer, max_length, padding, return_token_type_ids)


def _load_tokenizer(tokenizer: Any) -> Any:
    if isinstance(tokenizer, (str, Path)):
        path = Path(tokenizer).expanduser()
        if not path.exists():
            raise DataFileNotFoundError(
                f"tokenizer {str(tokenizer)!r} does not exist (resolved to {path.resolve()})"
            )
        transformers = require("transformers", purpose="loading a tokenizer", extra="hf")
        AutoTokenizer, PreTrainedTokenizerFast = (
            transformers.AutoTokenizer,
            transformers.PreTrainedTokenizerFast,
        )
        if path.is_file():
            return PreTrainedTokenizerFast(tokenizer_file=str(path))
        try:
            return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            if (path / "tokenizer.json").exists():  # a bare tokenizers file with no config
                return PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"))
            raise DataError(f"cannot load a tokenizer from the folder {str(path)!r}: {exc}") from exc
    if type(tokenizer).__module__.startswith("tokenizers"):  # a raw tokenizers.Tokenizer
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(tokenizer_object=tokenizer)
    if not callable(tokenizer):
        raise ArgumentTypeError(
            f"tokenizer must be a Hugging Face tokenizer or a path to one, got {type(tokenizer).__name__}"
        )
    return tokenizer


def _set_pad_token(tok: Any, source: Any) -> None:
    vocab = tok.get_vocab() if hasattr(tok, "get_vocab") else {}
    pad = next((t for t in _PAD_TOKENS if t in vocab), None) or getattr(tok, "eos_token", None)
    if pad is None:
        raise DataError(
            f"tokenizer {str(source)!r} has no padding token and none of {', '.join(_PAD_TOKENS)} is in its "
            "vocabulary; add one, or pass padding=False"
        )
    tok.pad_token = pad


# -- from a config entry ------------------------------------------------------------------


class PreprocessorChain:
    """Preprocessors applied one after another."""

    def __init__(self, steps: Sequence[Callable[[Any], Any]]):
        self.steps = list(steps)

    def __call__(self, batch: Any) -> Any:
        for step in self.steps:
            batch = step(batch)
        return batch

    def __repr__(self) -> str:
        return " -> ".join(map(repr, self.steps))


_IMAGE_KEYS = ("size", "mean", "std", "channels_first", "input_layout")
_TEXT_KEYS = ("tokenizer", "max_length", "padding", "return_token_type_ids")


def build_preprocessor(
    spec: Mapping[str, Any] | Sequence[Any] | str | Callable | None, *, base_dir: str | Path | None = None
) -> Callable[[Any], Any] | None:
    """Turn a config entry into one batch preprocessor (None for None).

    Steps run in the order written:

    - ``"flatten"`` or ``{"flatten": true}``: ``[N, ...]`` -> ``[N, features]``
    - ``{"reshape": [1, 8, 8]}``: see :func:`reshape_preprocessor`
    - ``{"image": {"size": 224, "mean": [...], "std": [...]}}``: see :func:`image_preprocessor`
    - ``{"text": {"tokenizer": "tok/tokenizer.json", "max_length": 64}}`` (or
      ``{"text": "tok/"}``): see :func:`text_preprocessor`; a relative tokenizer path is
      resolved against ``base_dir`` (the config's folder)
    - a list of any of these, applied in turn

    Raises
    ------
    DataError (a ValueError) naming an unknown step or option and listing the valid ones.

    Examples
    --------
    >>> prep = build_preprocessor({"reshape": [1, 8, 8]})
    >>> prep(np.zeros((3, 64))).shape
    (3, 1, 8, 8)
    """
    if spec is None:
        return None
    steps = _build_steps(spec, Path(base_dir) if base_dir is not None else None)
    return steps[0] if len(steps) == 1 else PreprocessorChain(steps)


_STEPS = ("flatten", "image", "reshape", "text")
#: Largest image side a preprocessing spec may ask for (a spec may come from a downloaded bundle).
MAX_IMAGE_SIDE = 4096
#: Longest token sequence a text spec may pad to (every text in a batch is padded to it).
MAX_TEXT_LENGTH = 65_536


def _build_steps(spec: Any, base: Path | None) -> list[Callable[[Any], Any]]:
    if isinstance(spec, str):
        if spec != "flatten":
            raise DataError(
                f"unknown preprocessing step {spec!r}; a string step must be 'flatten', other steps "
                f"are written as a mapping with one of: {', '.join(_STEPS)}"
            )
        return [flatten_preprocessor()]
    if isinstance(spec, Mapping):
        return [_build_step(key, value, base) for key, value in spec.items()]
    if isinstance(spec, (list, tuple)):
        return [step for item in spec for step in _build_steps(item, base)]
    if callable(spec):
        return [spec]
    raise DataError(f"a preprocessing spec is a string, a mapping or a list, got {type(spec).__name__}")


def _build_step(key: str, value: Any, base: Path | None) -> Callable[[Any], Any]:
    if key == "flatten":
        return flatten_preprocessor()
    if key == "reshape":
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) for v in value):
            raise DataError(f"preprocess.reshape must be a list of ints such as [1, 8, 8], got {value!r}")
        return reshape_preprocessor(value)
    if key == "image":
        kwargs = _options(key, value or {}, _IMAGE_KEYS)
        size = kwargs.get("size")
        sides = size if isinstance(size, (list, tuple)) else [] if size is None else [size]
        if not all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_IMAGE_SIDE for v in sides
        ):
            raise DataError(
                f"preprocess.image.size must be 1 to {MAX_IMAGE_SIDE} pixels per side, got {size!r}"
            )
        return image_preprocessor(**kwargs)
    if key == "text":
        kwargs = _options(key, {"tokenizer": value} if isinstance(value, (str, Path)) else value, _TEXT_KEYS)
        if "tokenizer" not in kwargs:
            raise DataError(
                "preprocess.text needs a tokenizer: {'text': {'tokenizer': 'path/to/tokenizer.json'}}"
            )
        length = kwargs.get("max_length")
        if length is not None and not (
            isinstance(length, int) and not isinstance(length, bool) and 1 <= length <= MAX_TEXT_LENGTH
        ):
            raise DataError(
                f"preprocess.text.max_length must be 1 to {MAX_TEXT_LENGTH} tokens, got {length!r}"
            )
        tok = kwargs["tokenizer"]
        if isinstance(tok, (str, Path)) and base is not None and not Path(tok).expanduser().is_absolute():
            kwargs["tokenizer"] = base / tok
        return text_preprocessor(**kwargs)
    import difflib

    close = difflib.get_close_matches(str(key), _STEPS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise DataError(f"unknown preprocessing step {key!r}{hint}; valid steps: {', '.join(_STEPS)}")


def _options(step: str, value: Any, valid: Sequence[str]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise DataError(f"preprocess.{step} must be a mapping of options ({', '.join(valid)}), got {value!r}")
    unknown = [k for k in value if k not in valid]
    if unknown:
        raise DataError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for preprocess.{step}; valid: {', '.join(valid)}"
        )
    return dict(value)
