"""Hugging Face members: a transformers model with a sequence- or image-classification head.

``transformers`` is imported only when a member is built, so ``import modelfusion`` stays fast.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from modelfusion.dependencies import require
from modelfusion.errors import (
    ArgumentTypeError,
    InputError,
    MemberFileNotFoundError,
    MemberLoadError,
    UnsafeFormatError,
)
from modelfusion.members.base import Member, MemberOptions
from modelfusion.members.torch import state_dict_fingerprint
from modelfusion.outputs import Task

if TYPE_CHECKING:
    from typing_extensions import Unpack


class HFMember(Member, nn.Module):
    """A transformers classifier (text or image) with its tokenizer or image processor.

    :meth:`predict` accepts what a user has at hand: a list of strings (tokenized with
    padding and truncation), images (numpy ``[N, H, W, C]`` or ``[N, C, H, W]``, or PIL
    images, run through the image processor), a dict of model inputs (passed through), or
    a tensor of ready model inputs (``input_ids`` or ``pixel_values``). It returns the
    logits; classes come from ``config.id2label`` in id order.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A model with a classification head (``...ForSequenceClassification`` or
        ``...ForImageClassification``).
    tokenizer, processor : optional
        The text tokenizer or image processor the model was trained with.
    **options : name, task, classes, n_outputs, preprocess, source_path
        See :class:`~modelfusion.members.base.Member`; task follows ``config.problem_type``.
    output_kind : str, optional
        Default ``"logits"`` (``"values"`` for regression heads).
    device : str
        Where the model runs (default ``"cpu"``).
    max_length : int, optional
        Truncation length for text (default: the tokenizer's or the model's limit).

    Examples
    --------
    >>> member = load_member("models/sentiment", framework="hf")   # a save_pretrained folder
    >>> member.predict(["great film", "dull plot"]).shape
    (2, 2)
    """

    framework = "hf"

    def __init__(
        self,
        model: nn.Module,
        *,
        tokenizer: Any = None,
        processor: Any = None,
        device: str | torch.device = "cpu",
        max_length: int | None = None,
        **options: Unpack[MemberOptions],
    ):
        name = options.setdefault("name", "hf")
        if not isinstance(model, nn.Module) or not hasattr(model, "config"):
            raise MemberLoadError(
                f"member {name!r}: HFMember wraps a transformers PreTrainedModel, got {type(model).__name__}"
            )
        nn.Module.__init__(self)
        config = model.config
        if options.get("task") is None:
            problem_tasks: dict[str, Task] = {
                "multi_label_classification": "multilabel",
                "regression": "regression",
            }
            options["task"] = problem_tasks.get(getattr(config, "problem_type", None) or "", "classification")
        task = options["task"]
        if options.get("output_kind") is None:
            options["output_kind"] = "values" if task == "regression" else "logits"
        id2label = getattr(config, "id2label", None)
        if options.get("classes") is None and task != "regression" and id2label:
            options["classes"] = [id2label[k] for k in sorted(id2label, key=int)]
        Member.__init__(self, **options)
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.tokenizer = tokenizer
        self.processor = processor
        self.max_length = max_length

    @property
    def modality(self) -> str:
        """``"image"`` for models fed ``pixel_values``, else ``"text"``."""
        return "image" if getattr(self.model, "main_input_name", "input_ids") == "pixel_values" else "text"

    def forward(self, batch: Any = None, **inputs: torch.Tensor) -> torch.Tensor:
        """Logits [samples, classes], with gradients, so the member can sit inside a larger network.

        ``batch`` is a tensor of the model's main input (``input_ids`` [samples, tokens] or
        ``pixel_values`` [samples, channels, height, width]), a dict of model inputs, or a
        list of strings (tokenized here); keyword inputs (``attention_mask=...``) are added.
        """
        if batch is not None:
            inputs = {**self._encode(batch), **inputs}
        return self.model(**inputs).logits

    def _predict(self, batch: Any) -> np.ndarray:
        inputs = self._encode(batch)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                logits = self.model(**inputs).logits
        finally:
            if was_training:
                self.model.train()
        return logits.detach().float().cpu().numpy()

    def _encode(self, batch: Any) -> dict[str, torch.Tensor]:
        main_input = getattr(self.model, "main_input_name", "input_ids")
        inputs: Mapping[str, Any]
        if isinstance(batch, Mapping):
            inputs = dict(batch)
        elif isinstance(batch, torch.Tensor):
            inputs = {main_input: batch}
        elif _is_text(batch):
            inputs = self._tokenize([batch] if isinstance(batch, str) else [str(s) for s in batch])
        elif self.modality == "image":
            inputs = self._process_images(batch)
        elif isinstance(batch, np.ndarray) and batch.dtype.kind in "iu":
            inputs = {main_input: batch}
        else:
            raise ArgumentTypeError(
                f"member {self.name!r} (a {self.modality} model) cannot take a {type(batch).__name__}; pass "
                "a list of strings, images, or a dict of model inputs"
            )
        accepted = inspect.signature(self.model.forward).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
        dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), torch.float32)
        encoded = {}
        for key, value in inputs.items():
            if not takes_any and key not in accepted:
                continue  # e.g. token_type_ids for models that have none
            tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
            if tensor.is_floating_point():
                tensor = tensor.to(dtype)
            encoded[key] = tensor.to(self.device)
        return encoded

    def _tokenize(self, texts: list[str]) -> Mapping[str, Any]:
        if self.tokenizer is None:
            raise InputError(
                f"member {self.name!r} got text but has no tokenizer; load it with tokenizer= (a path or "
                "a tokenizer object) or pass a dict of input_ids"
            )
        max_length = self.max_length
        if max_length is None:
            limit = getattr(self.tokenizer, "model_max_length", None)
            max_length = (
                limit
                if limit and limit < 1_000_000
                else getattr(self.model.config, "max_position_embeddings", None)
            )
        return self.tokenizer(
            texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )

    def _process_images(self, batch: Any) -> Mapping[str, Any]:
        if self.processor is None:
            raise InputError(
                f"member {self.name!r} got images but has no image processor; load it with processor= or "
                "pass a tensor of pixel_values"
            )
        images = list(batch) if isinstance(batch, np.ndarray) and batch.ndim == 4 else batch
        return self.processor(images=images, return_tensors="pt")

    @property
    def n_parameters(self) -> int:
        """Number of elements in the model's parameters."""
        return sum(p.numel() for p in self.model.parameters())

    def fingerprint(self) -> str:
        """sha256 over the model's state-dict tensors."""
        return state_dict_fingerprint(self.model)

    def cache_settings(self) -> dict[str, Any]:
        """The tokenizer, image processor and ``max_length``: each changes the outputs."""
        return {
            "max_length": self.max_length,
            "tokenizer": _tool_digest(self.tokenizer),
            "processor": _tool_digest(self.processor),
        }

    def save(self, directory: Path) -> dict[str, Any]:
        """``save_pretrained`` the model (safetensors) and its tokenizer/processor into ``model/``."""
        target = Path(directory) / "model"
        target.mkdir(parents=True, exist_ok=True)
        options = {}
        model: Any = self.model  # a transformers PreTrainedModel
        if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
            options["safe_serialization"] = True  # transformers 4.x; always safetensors from 5.0
        model.save_pretrained(target, **options)
        for tool in (self.tokenizer, self.processor):
            if tool is not None:
                tool.save_pretrained(target)
        return {**self._common_spec(), "file": "model", "max_length": self.max_length}

    @classmethod
    def load_saved(cls, directory: Path, spec: dict[str, Any], *, trust: bool = False) -> HFMember:
        """Rebuild a member from what :meth:`save` wrote (no remote code is trusted).

        Without ``trust``, a ``config.json`` that names files to load (a ``checkpoint_path`` in
        a timm wrapper's ``model_args``, say) is refused: transformers would read them from
        outside the bundle.
        """
        if not trust:
            check_saved_configs(Path(directory) / spec["file"], owner=f"member {spec.get('name')!r}")
        kwargs = cls._common_kwargs(spec)
        name = kwargs.pop("name")
        return load_hf(Path(directory) / spec["file"], name=name, max_length=spec.get("max_length"), **kwargs)


def load_hf(
    source: Any,
    *,
    name: str,
    trust: bool = False,
    tokenizer: Any = None,
    processor: Any = None,
    device: str | torch.device = "cpu",
    max_length: int | None = None,
    **member_options: Any,
) -> HFMember:
    """An :class:`HFMember` from a model object, a ``save_pretrained`` folder, a checkpoint file or a Hub id.

    A checkpoint file (``pytorch_model.bin``, ``model.safetensors``, any ``*.bin``) needs the
    model's ``config.json`` in the same folder: the architecture is built from the config and
    the weights are read without unpickling (``torch.load(weights_only=True)`` or safetensors).
    ``tokenizer``/``processor`` may be objects or paths (a folder, or a single
    ``tokenizer.json``); by default they are loaded from the model's folder. ``trust=True``
    allows the model's remote code (``trust_remote_code``).
    """
    transformers = import_transformers()
    options = dict(name=name, device=device, max_length=max_length, **member_options)
    if isinstance(source, nn.Module):
        return HFMember(
            source,
            tokenizer=_load_tool(tokenizer, transformers.AutoTokenizer, None, trust),
            processor=_load_tool(processor, transformers.AutoImageProcessor, None, trust),
            **options,
        )
    if isinstance(source, (str, Path)) and Path(source).is_file():
        return _load_checkpoint_file(Path(source), transformers, trust, tokenizer, processor, options)
    where = str(source)
    try:
        config = transformers.AutoConfig.from_pretrained(where, trust_remote_code=trust)
    except Exception as exc:
        raise MemberLoadError(
            f"could not read a transformers config from {where!r} ({type(exc).__name__}: {exc}); give a "
            "folder written by save_pretrained (with config.json) or a Hub id available offline"
        ) from exc
    image = is_vision_config(config)
    auto = (
        transformers.AutoModelForImageClassification
        if image
        else transformers.AutoModelForSequenceClassification
    )
    try:
        model = auto.from_pretrained(where, config=config, trust_remote_code=trust)
    except Exception as exc:
        head = "image" if image else "sequence"
        raise MemberLoadError(
            f"could not load {where!r} as a {head}-classification model with {auto.__name__} "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    if image:
        processor = _load_tool(processor, transformers.AutoImageProcessor, where, trust)
    else:
        tokenizer = _load_tool(tokenizer, transformers.AutoTokenizer, where, trust)
    source_path = Path(where) if Path(where).exists() else None
    return HFMember(model, tokenizer=tokenizer, processor=processor, source_path=source_path, **options)


def _load_checkpoint_file(
    path: Path, transformers: Any, trust: bool, tokenizer: Any, processor: Any, options: dict[str, Any]
) -> HFMember:
    """An HFMember from one weights file whose config.json sits in the same folder."""
    folder = path.parent
    if not (folder / "config.json").is_file():
        raise MemberLoadError(
            f"'{path}' is a weights file; a Hugging Face checkpoint also needs the model's config.json in "
            f"the same folder ('{folder / 'config.json'}'), and none is there"
        )
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder), trust_remote_code=trust)
    except Exception as exc:
        raise MemberLoadError(
            f"could not read '{folder / 'config.json'}' as a transformers config ({type(exc).__name__}: {exc})"
        ) from exc
    image = is_vision_config(config)
    head = "image" if image else "sequence"
    mapping = (
        transformers.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING
        if image
        else transformers.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING
    )
    try:
        model_class = mapping[type(config)]
    except KeyError:
        raise MemberLoadError(
            f"'{folder / 'config.json'}' describes a {config.model_type!r} model, which has no "
            f"{head}-classification class in transformers; save the model with save_pretrained and load "
            "the folder, or wrap it in a torch module and pass that"
        ) from None
    state_dict = _read_state_dict(path)
    try:
        model, info = model_class.from_pretrained(
            None, config=config, state_dict=state_dict, output_loading_info=True
        )
    except Exception as exc:
        raise MemberLoadError(
            f"the weights in '{path}' do not fit the {model_class.__name__} that '{folder / 'config.json'}' "
            f"describes ({type(exc).__name__}: {exc}); check num_labels/id2label and the sizes in the config"
        ) from exc
    missing = sorted(info.get("missing_keys") or [])
    unexpected = info.get("unexpected_keys") or []
    if len(missing) >= len(model.state_dict()) or len(unexpected) >= len(state_dict):
        raise MemberLoadError(
            f"none of the weights in '{path}' belong to the {model_class.__name__} that "
            f"'{folder / 'config.json'}' describes; the config and the checkpoint are from different models"
        )
    if missing:
        warnings.warn(
            f"'{path}' has no weights for {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}: "
            f"they are freshly initialised (a base checkpoint without a {head}-classification head). "
            "Fine-tune the member, or give a checkpoint that was saved with its head.",
            UserWarning,
            stacklevel=4,
        )
    if image:
        processor = _load_tool(processor, transformers.AutoImageProcessor, str(folder), trust)
    else:
        if isinstance(tokenizer, (str, Path)) and Path(tokenizer).suffix == ".json":
            tokenizer = load_tokenizer_file(tokenizer, config)
        tokenizer = _load_tool(tokenizer, transformers.AutoTokenizer, str(folder), trust)
        if tokenizer is not None:
            ensure_pad_token(tokenizer, config)
    return HFMember(model.eval(), tokenizer=tokenizer, processor=processor, source_path=path, **options)


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    """Tensors of a safetensors file or of a ``torch.save`` file read with ``weights_only=True``."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(str(path), weights_only=True, map_location="cpu")
    except Exception as exc:
        raise MemberLoadError(
            f"could not read the weights in '{path}' ({type(exc).__name__}: {exc}); expected a state dict "
            "written by torch.save(model.state_dict()) or safetensors, read without unpickling code"
        ) from exc
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MemberLoadError(
            f"'{path}' holds a {type(state).__name__}, not a state dict of tensors; save model.state_dict()"
        )
    return state


def load_tokenizer_file(path: str | Path, config: Any = None) -> Any:
    """A fast tokenizer from one ``tokenizer.json`` (written by ``tokenizers`` or ``save_pretrained``).

    A pad token is set when the file names none (see :func:`ensure_pad_token`; ``config``
    is the model's transformers config, whose ``pad_token_id`` is preferred). Raises MemberFileNotFoundError when the file is missing, MemberLoadError naming the file
    when it is not a tokenizer.
    """
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    if not path.is_file():
        raise MemberFileNotFoundError(f"tokenizer file '{path.resolve()}' does not exist")
    try:
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path))
    except Exception as exc:
        raise MemberLoadError(
            f"'{path}' is not a tokenizer file ({type(exc).__name__}: {exc}); expected the tokenizer.json "
            "written by tokenizers' Tokenizer.save or by a fast tokenizer's save_pretrained, or a folder "
            "written by save_pretrained"
        ) from exc
    ensure_pad_token(tokenizer, config)
    return tokenizer


_PAD_TOKENS = ("[PAD]", "<pad>", "<|pad|>", "[pad]", "<PAD>")


def ensure_pad_token(tokenizer: Any, config: Any = None) -> None:
    """Give a tokenizer without a pad token one, so batches of texts of different lengths can be padded.

    Taken from the tokenizer's own padding settings, else the model config's ``pad_token_id``,
    else a conventional name in the vocabulary ([PAD], <pad>, ...). Left unset when none fits.
    """
    if getattr(tokenizer, "pad_token", None) is not None:
        return
    backend = getattr(tokenizer, "backend_tokenizer", None)
    padding = getattr(backend, "padding", None) or {}
    vocab = tokenizer.get_vocab()
    candidates = [padding.get("pad_token")]
    pad_id = getattr(config, "pad_token_id", None)
    if isinstance(pad_id, int):
        candidates.append(tokenizer.convert_ids_to_tokens(pad_id))
    candidates.extend(_PAD_TOKENS)
    token = next((t for t in candidates if t is not None and t in vocab), None)
    if token is not None:
        tokenizer.pad_token = token


def import_transformers() -> Any:
    """``import transformers``, or a MemberLoadError saying how to install it."""
    return require("transformers", purpose="loading a Hugging Face member", extra="hf")


def is_vision_config(config: Any) -> bool:
    """True when a transformers config belongs to an image model (so it takes an image-classification head)."""
    from transformers.models.auto import modeling_auto

    model_type = getattr(config, "model_type", None)
    images = modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES
    texts = modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
    if model_type in images or model_type in texts:
        return model_type in images and model_type not in texts
    auto_map = getattr(config, "auto_map", None) or {}
    return (
        "AutoModelForImageClassification" in auto_map and "AutoModelForSequenceClassification" not in auto_map
    )


def _load_tool(given: Any, auto: Any, folder: str | None, trust: bool) -> Any:
    """A tokenizer/processor: the object given, loaded from a given path, or found next to the model."""
    if given is not None and not isinstance(given, (str, Path)):
        return given
    if given is not None and auto.__name__ == "AutoTokenizer" and Path(given).suffix == ".json":
        return load_tokenizer_file(given)
    where = str(given) if given is not None else folder
    if where is None:
        return None
    try:
        return auto.from_pretrained(where, trust_remote_code=trust)
    except Exception as exc:
        if given is None:
            return None  # the folder has none; predict() explains what to pass if it is needed
        raise MemberLoadError(
            f"could not load a {auto.__name__.removeprefix('Auto')} from {where!r} ({type(exc).__name__}: {exc})"
        ) from exc


def _is_text(batch: Any) -> bool:
    if isinstance(batch, str):
        return True
    if isinstance(batch, np.ndarray):
        return batch.dtype.kind in "US" or (
            batch.dtype == object and batch.size > 0 and isinstance(batch.flat[0], str)
        )
    return isinstance(batch, (list, tuple)) and len(batch) > 0 and isinstance(batch[0], str)


def _tool_digest(tool: Any) -> str | None:
    """A sha256 of a tokenizer's or processor's full definition (vocabulary, rules, settings)."""
    if tool is None:
        return None
    h = hashlib.sha256(type(tool).__name__.encode())
    backend = getattr(tool, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        h.update(backend.to_str().encode())  # vocabulary, normalizer, pre-tokenizer, post-processor
    elif hasattr(tool, "get_vocab"):
        h.update(json.dumps(tool.get_vocab(), sort_keys=True).encode())
    if hasattr(tool, "to_json_string"):  # image processors
        h.update(tool.to_json_string().encode())
    settings = {
        k: getattr(tool, k, None)
        for k in ("model_max_length", "padding_side", "truncation_side", "do_lower_case")
    }
    h.update(
        json.dumps({**getattr(tool, "init_kwargs", {}), **settings}, sort_keys=True, default=str).encode()
    )
    return h.hexdigest()


#: Config keys that make transformers (or a backbone library it calls) load a file or fetch weights.
_LOADING_KEY = re.compile(r"checkpoint|pretrained_cfg|(^|_)(path|file|dir|url)s?$|^auto_map$", re.IGNORECASE)
#: Keys every saved config has that name a path but load nothing.
_INERT_KEYS = {"_name_or_path"}


#: The JSON files of a saved model, tokenizer or processor that transformers reads settings from.
SAVED_CONFIGS = (
    "config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "processor_config.json",
    "generation_config.json",
)


def check_saved_configs(folder: Path, *, owner: str) -> None:
    """:func:`check_saved_config` on every settings file of a save_pretrained folder.

    ``tokenizer_config.json`` can name other tokenizer files (``fast_tokenizer_files``) that
    transformers opens instead of the folder's own.
    """
    for name in SAVED_CONFIGS:
        check_saved_config(Path(folder) / name, owner=owner)


def check_saved_config(path: Path, *, owner: str) -> None:
    """Raise UnsafeFormatError when a saved model's ``config.json`` names files to load or remote code."""
    if not path.is_file():
        return
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MemberLoadError(f"{owner}: '{path}' is not a valid JSON config ({exc})") from None
    stack: list[tuple[str, Any]] = [("", config)]
    while stack:
        where, node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            here = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and key not in _INERT_KEYS and _LOADING_KEY.search(key) and value:
                raise UnsafeFormatError(
                    f"{owner}: '{path}' sets {here!r}, which makes transformers load files or code named by the "
                    "config; load the bundle with trust=True (CLI: --trust) only if you trust where it came from"
                )
            stack.append((here, value))
