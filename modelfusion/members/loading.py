"""``load_member``: one entry point that turns a model object, file, folder or Hub id into a Member."""

from __future__ import annotations

import inspect
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from modelfusion.errors import MemberFileNotFoundError, MemberLoadError, ModelFusionError
from modelfusion.importpath import is_import_path
from modelfusion.members.base import Member, MemberOptions
from modelfusion.members.torch import archive_kind, load_torch_factory

# Accepted spellings of each framework, case-insensitive.
FRAMEWORK_ALIASES: dict[str, str] = {
    "torch": "torch",
    "pytorch": "torch",
    "onnx": "onnx",
    "sklearn": "sklearn",
    "scikit-learn": "sklearn",
    "hf": "hf",
    "transformers": "hf",
    "huggingface": "hf",
    "keras": "keras",
    "tensorflow": "keras",
    "tf": "keras",
}

# File extension -> framework.
EXTENSIONS: dict[str, str] = {
    ".onnx": "onnx",
    ".skops": "sklearn",
    ".pkl": "sklearn",
    ".pickle": "sklearn",
    ".joblib": "sklearn",
    ".keras": "keras",
    ".h5": "keras",
    ".pt2": "torch",
    ".pt": "torch",
    ".pth": "torch",
    ".bin": "torch",
    ".safetensors": "torch",
    ".ts": "torch",
    ".pb": "keras",  # a TensorFlow SavedModel's saved_model.pb: its folder is loaded
}

# State-dict files that are a Hugging Face checkpoint when a transformers config.json sits beside them.
HF_CHECKPOINT_EXTENSIONS = (".bin", ".safetensors", ".pt", ".pth")


#: What load_member passes through to every adapter (MemberOptions, less what it sets itself).
MEMBER_OPTIONS = tuple(k for k in MemberOptions.__annotations__ if k not in ("name", "source_path"))


def load_member(
    source: Any,
    framework: str | None = None,
    *,
    name: str | None = None,
    trust: bool = False,
    **options: Any,
) -> Member:
    """Turn a model object, file, folder or Hub id into a :class:`Member`.

    Parameters
    ----------
    source : model object, path, import path ``"package.module:Factory"``, or Hugging Face Hub id
        Objects: ``nn.Module``, transformers ``PreTrainedModel``, fitted scikit-learn
        estimator, ``onnx.ModelProto`` / ``InferenceSession`` / bytes, ``keras.Model``.
        Files by extension: ``.onnx``; ``.skops``/``.pkl``/``.pickle``/``.joblib``;
        ``.keras``/``.h5``; ``.pt2``/``.pt``/``.pth``/``.bin``/``.safetensors``/``.ts``.
        A folder with ``config.json`` is a transformers model; a state-dict file
        (``pytorch_model.bin``, ``model.safetensors``, any ``*.bin``) with a transformers
        ``config.json`` beside it is a Hugging Face checkpoint; a folder with
        ``saved_model.pb`` is a TensorFlow SavedModel (needs tensorflow). A Hub id
        (``"org/name"``) needs ``framework="hf"``.
        An import path ``"package.module:Factory"`` that is not a file builds a torch member
        by calling the factory (a model class such as ``"vit_pytorch:ViT"``, or a function)
        with the options that are not member options (``image_size=32, num_classes=10``);
        ``weights=`` loads a state-dict file into it. Importing the module runs its code,
        as ``import`` would: name only installed packages or modules you trust.
    framework : str, optional
        torch/pytorch, onnx, sklearn/scikit-learn, hf/transformers/huggingface,
        keras/tensorflow/tf (case-insensitive); inferred when omitted.
    name : str, optional
        Default: the file stem, or the lower-cased class name of an object.
    trust : bool
        Allow formats that run code from the file: pickles, skops files with unknown types,
        Keras Lambda layers, Hub models with remote code. Off by default.
    **options
        Passed to the adapter: ``task``, ``output_kind``, ``classes``, ``preprocess``, and
        framework-specific ones (``architecture``, ``architecture_kwargs``, ``device``,
        ``input_shape``, ``output_name``, ``providers``, ``tokenizer``, ``processor``, ...).

    Raises
    ------
    MemberFileNotFoundError
        the path does not exist.
    MemberLoadError
        unknown framework, extension or option; corrupt file; state dict without architecture.
    UnsafeFormatError
        the format would run code and ``trust`` is False.

    Examples
    --------
    >>> load_member("models/digits.onnx").predict(X[:4]).shape
    (4, 10)
    >>> load_member("weights.safetensors", architecture="resnet18", architecture_kwargs={"num_classes": 3})
    >>> load_member(fitted_forest, name="forest")
    >>> load_member("vit_pytorch:ViT", image_size=32, patch_size=8, num_classes=10, dim=64, depth=1,
    ...             heads=2, mlp_dim=64, weights="vit.safetensors")
    """
    fw = normalize_framework(framework)
    if isinstance(source, Member):
        if options:
            raise MemberLoadError(
                f"member {source.name!r} is already built; options {', '.join(sorted(options))} cannot be "
                "applied to it"
            )
        if name is not None:
            source.name = str(name)
        return source
    if is_import_path(source, allow_file=False) and not Path(source).expanduser().exists():
        return _load_factory(source, fw, name=name, trust=trust, options=options)
    if isinstance(source, (str, os.PathLike)):
        return _load_path(source, fw, name=name, trust=trust, options=options)
    inferred = infer_framework(source)
    if fw is None:
        if inferred is None:
            raise MemberLoadError(
                f"cannot tell which framework a {type(source).__module__}.{type(source).__name__} belongs to; "
                f"pass framework= one of {', '.join(FRAMEWORK_ALIASES)}"
            )
        fw = inferred
    default_name = type(source).__name__.lower()
    return _call_loader(fw, source, name=name or default_name, trust=trust, options=options, where=None)


def load_saved_member(directory: Path, spec: dict[str, Any], *, trust: bool = False) -> Member:
    """Rebuild a member from a folder written by ``member.save(directory)`` and its spec.

    ``spec["framework"]`` picks the adapter; raises MemberLoadError for an unknown one.
    ``trust=False`` (the default) refuses anything in the folder or spec that would run code.
    """
    framework = spec.get("framework")
    if framework not in _MEMBER_CLASSES:
        raise MemberLoadError(
            f"member spec {spec.get('name')!r} has framework {framework!r}; expected one of "
            f"{', '.join(_MEMBER_CLASSES)}"
        )
    member_cls = _member_class(framework)
    path = Path(directory) / spec.get("file", "")
    if not path.exists():
        raise MemberFileNotFoundError(
            f"member {spec.get('name')!r}: '{path.resolve()}' does not exist; the saved folder is incomplete"
        )
    return member_cls.load_saved(Path(directory), spec, trust=trust)


class ModelLoader:
    """Load one model as a member from its framework, path and options (a thin alias of :func:`load_member`).

    Parameters
    ----------
    framework : str, optional
        As for :func:`load_member`; inferred from the path when omitted.
    model_path : str or Path
        The model file, folder or Hub id.
    input_shape : sequence of int, optional
        Shape of one sample, without the batch dimension (checked against a Keras or
        SavedModel input; used as the export example for torch).
    tokenizer_path : str or Path, optional
        The tokenizer of a Hugging Face model when it is not next to the model: a folder
        written by ``save_pretrained`` or a single ``tokenizer.json`` file.
    **options
        Passed on to :func:`load_member` (``name``, ``trust``, ``task``, ``architecture``, ...).

    Returns
    -------
    A :class:`Member`. Torch-backed members (PyTorch, Hugging Face, Keras on the torch
    backend) are ``nn.Module`` s too: assign them as submodules and call them on tensors.

    Examples
    --------
    >>> image_model = ModelLoader(framework="tensorflow", model_path="resnet50.h5", input_shape=(224, 224, 3)).load()
    >>> text_model = ModelLoader(framework="pytorch", model_path="bert_base_uncased.bin",
    ...                          tokenizer_path="bert_tokenizer.json").load()   # config.json beside the .bin
    >>> text_model.predict(["a text", "another"]).shape
    (2, 2)
    """

    def __init__(
        self,
        framework: str | None = None,
        model_path: str | Path | None = None,
        input_shape: Sequence[int] | None = None,
        tokenizer_path: str | Path | None = None,
        **options: Any,
    ):
        self.framework = framework
        self.model_path = model_path
        self.input_shape = input_shape
        self.tokenizer_path = tokenizer_path
        self.options = options

    def load(self) -> Member:
        """The member (see :func:`load_member`)."""
        if self.model_path is None:
            raise MemberLoadError("ModelLoader needs model_path= (a model file, folder or Hub id)")
        options = dict(self.options)
        if self.input_shape is not None:
            options["input_shape"] = tuple(self.input_shape)
        if self.tokenizer_path is not None:
            options["tokenizer"] = self.tokenizer_path
        return load_member(self.model_path, self.framework, **options)

    def __repr__(self) -> str:
        return f"ModelLoader(framework={self.framework!r}, model_path={self.model_path!r})"


# -- inference of the framework -------------------------------------------------------------


def normalize_framework(framework: str | None) -> str | None:
    """The canonical framework name for an accepted spelling; MemberLoadError for an unknown one."""
    if framework is None:
        return None
    canonical = FRAMEWORK_ALIASES.get(str(framework).strip().lower())
    if canonical is None:
        raise MemberLoadError(
            f"unknown framework {framework!r}; expected one of {', '.join(FRAMEWORK_ALIASES)}"
        )
    return canonical


def infer_framework(obj: Any) -> str | None:
    """The framework a model object belongs to, or None. Imports nothing that is not already loaded."""
    if isinstance(obj, (bytes, bytearray)):
        return "onnx"
    # Keras 3 models on the torch backend and transformers models are nn.Modules too: check them first.
    for framework, module, attr in _OBJECT_TYPES:
        cls = getattr(sys.modules.get(module), attr, None)
        if isinstance(cls, type) and isinstance(obj, cls):
            return framework
    if callable(getattr(obj, "fit", None)) and callable(getattr(obj, "predict", None)):
        return "sklearn"  # scikit-learn compatible (xgboost, lightgbm, ...)
    return None


_OBJECT_TYPES = (
    ("hf", "transformers", "PreTrainedModel"),
    ("keras", "keras", "Model"),
    ("torch", "torch.nn", "Module"),
    ("onnx", "onnx", "ModelProto"),
    ("onnx", "onnxruntime", "InferenceSession"),
    ("sklearn", "sklearn.base", "BaseEstimator"),
)


def framework_for_path(path: Path) -> str:
    """The framework a file or folder belongs to; MemberLoadError listing what is supported."""
    if path.is_dir():
        if (path / "config.json").exists():
            return "hf"
        if (path / "saved_model.pb").exists():
            return "keras"
        raise MemberLoadError(
            f"'{path.resolve()}' is a folder without config.json or saved_model.pb; folders are loaded as "
            "transformers models (written by save_pretrained) or TensorFlow SavedModels. For other "
            "frameworks give the model file itself."
        )
    framework = EXTENSIONS.get(path.suffix.lower())
    if framework is None:
        raise MemberLoadError(
            f"'{path.resolve()}' has extension {path.suffix or '(none)'!r}, which no adapter reads; supported: "
            f"{', '.join(EXTENSIONS)} (or a transformers folder). Pass framework= if the extension is misleading."
        )
    return framework


# -- internals --------------------------------------------------------------------------------


def _load_path(
    source: str | os.PathLike, fw: str | None, *, name: str | None, trust: bool, options: dict
) -> Member:
    path = Path(source).expanduser()
    if not path.exists():
        if fw == "hf" and isinstance(source, str) and not source.startswith((".", "/", "~")):
            hub_name = name or source.rstrip("/").split("/")[-1]
            return _call_loader("hf", source, name=hub_name, trust=trust, options=options, where=source)
        hint = (
            " If it is a Hugging Face Hub id, pass framework='hf'."
            if isinstance(source, str) and "/" in source
            else ""
        )
        raise MemberFileNotFoundError(f"model file '{path.resolve()}' does not exist.{hint}")
    wants_tokenizer = bool({"tokenizer", "processor"} & set(options))
    if path.is_dir() and fw == "torch" and (path / "config.json").exists() and "architecture" not in options:
        fw = "hf"  # a save_pretrained folder is PyTorch too
    elif path.is_file() and fw in (None, "torch", "hf") and "architecture" not in options:
        if is_hf_checkpoint_file(path):
            fw = "hf"  # PyTorch weights of a transformers model: the config says how to build it
        elif fw == "hf" or (
            wants_tokenizer and (fw == "torch" or path.suffix.lower() in HF_CHECKPOINT_EXTENSIONS)
        ):
            raise MemberLoadError(
                f"'{path.resolve()}' is a single weights file, so it loads as a Hugging Face checkpoint only "
                f"with the model's config.json in the same folder ('{path.parent.resolve() / 'config.json'}'), "
                "and none is there. Copy the config.json the checkpoint was saved with next to it (or give "
                "the save_pretrained folder); for a plain PyTorch state dict, pass architecture= instead of "
                "tokenizer=/processor="
            )
    if fw is None:
        fw = framework_for_path(path)
    default_name = path.name if path.is_dir() else path.stem
    return _call_loader(fw, path, name=name or default_name, trust=trust, options=options, where=path)


def is_hf_checkpoint_file(path: Path) -> bool:
    """True for a state-dict file (``.bin``, ``.safetensors``, ``.pt``, ``.pth``) with a transformers config beside it.

    The ``config.json`` must hold a ``model_type`` (what ``save_pretrained`` writes);
    TorchScript and ``torch.export`` archives are never checkpoints.
    """
    config = path.parent / "config.json"
    if path.suffix.lower() not in HF_CHECKPOINT_EXTENSIONS or not config.is_file():
        return False
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return False
    if not model_type:
        return False
    if path.suffix.lower() in (".pt", ".pth"):
        return archive_kind(path) is None
    return True


def _load_factory(factory: str, fw: str | None, *, name: str | None, trust: bool, options: dict) -> Member:
    """A torch member from ``"package.module:Factory"``: member options apart, the rest are its arguments."""
    if fw not in (None, "torch"):
        raise MemberLoadError(
            f"{factory!r} is an import path of a model factory, which builds a torch member, but "
            f"framework={fw!r} was given; drop framework= or pass 'torch' (or give a file path)"
        )
    if "architecture" in options:
        raise MemberLoadError(
            f"{factory!r} already names the architecture; drop architecture={options['architecture']!r}"
        )

    accepted = _keyword_only(load_torch_factory) - {"name", "trust"}
    member_options = {k: v for k, v in options.items() if k in accepted}
    factory_kwargs = {k: v for k, v in options.items() if k not in accepted}
    member_options["architecture_kwargs"] = {
        **(member_options.get("architecture_kwargs") or {}),
        **factory_kwargs,
    }
    default_name = factory.rpartition(":")[2].rpartition(".")[2].lower()
    where = member_options.get("weights")
    return _call_loader(
        "torch",
        factory,
        name=name or default_name,
        trust=trust,
        options=member_options,
        where=where,
        loader=load_torch_factory,
    )


def _keyword_only(func: Callable[..., Any]) -> set[str]:
    return {
        n for n, p in inspect.signature(func).parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def _call_loader(
    fw: str,
    source: Any,
    *,
    name: str,
    trust: bool,
    options: dict,
    where: Any,
    loader: Callable[..., Member] | None = None,
) -> Member:
    loader = loader or _loader(fw)
    _check_options(fw, loader, options)
    try:
        return loader(source, name=name, trust=trust, **options)
    except ModelFusionError:
        raise
    except Exception as exc:
        if where is None:
            raise
        raise MemberLoadError(
            f"could not load '{where}' as a {fw} model ({type(exc).__name__}: {exc}); the file may be "
            "corrupt or truncated, or written by another framework (pass framework= to choose one)"
        ) from exc


def _check_options(fw: str, loader: Callable[..., Any], options: dict) -> None:
    params = inspect.signature(loader).parameters
    accepted = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY} - {"name", "trust"}
    member_cls = _member_class(fw)
    accepted |= {
        n
        for n, p in inspect.signature(member_cls.__init__).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    } - {"name", "source_path"}
    accepted |= set(MEMBER_OPTIONS)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise MemberLoadError(
            f"option(s) {', '.join(unknown)} are not understood by {fw} members; accepted: "
            f"{', '.join(sorted(accepted))}"
        )


_MEMBER_CLASSES = {
    "torch": ("modelfusion.members.torch", "TorchMember", "load_torch"),
    "onnx": ("modelfusion.members.onnx", "OnnxMember", "load_onnx"),
    "sklearn": ("modelfusion.members.sklearn", "SklearnMember", "load_sklearn"),
    "hf": ("modelfusion.members.hf", "HFMember", "load_hf"),
    "keras": ("modelfusion.members.keras", "KerasMember", "load_keras"),
}


def _member_class(fw: str) -> type[Member]:
    import importlib

    module, cls, _ = _MEMBER_CLASSES[fw]
    return getattr(importlib.import_module(module), cls)


def _loader(fw: str) -> Callable[..., Member]:
    import importlib

    module, _, func = _MEMBER_CLASSES[fw]
    return getattr(importlib.import_module(module), func)
