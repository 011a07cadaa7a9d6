"""PyTorch members: an ``nn.Module`` in memory, or TorchScript, ``torch.export`` and state-dict files."""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from modelfusion.errors import (
    ArgumentTypeError,
    ExportError,
    MemberFileNotFoundError,
    MemberLoadError,
    MemberSaveError,
    PredictionError,
    UnsafeFormatError,
)
from modelfusion.members.architectures import check_architecture
from modelfusion.members.base import Member, MemberOptions, sha256_arrays
from modelfusion.outputs import OutputKind, Task
from modelfusion.runtime.member_onnx import MemberGraph, at_least_two

if TYPE_CHECKING:
    from typing_extensions import Unpack


class TorchMember(Member, nn.Module):
    """A PyTorch ``nn.Module`` as an ensemble member.

    The member is itself an ``nn.Module``: ``forward(x)`` calls the wrapped module, so a
    ``TorchMember`` can sit inside a larger network. :meth:`predict` takes numpy arrays,
    lists or tensors and runs the module in eval mode without gradients: floats (and uint8
    images) are cast to the module's float dtype, other integers to int64 (token ids).

    Parameters
    ----------
    module : nn.Module
        The trained network; ``module(x)`` must return a tensor [samples, outputs].
    **options : name, task, classes, n_outputs, preprocess, source_path
        :class:`~modelfusion.members.base.MemberOptions`, declared once for every adapter.
    output_kind : {"logits", "proba", "values"}, optional
        Default ``"logits"`` (``"values"`` for ``task="regression"``).
    architecture : str, optional
        How to rebuild the network from a state dict: a torchvision model name
        (``"resnet18"``), a timm model name, or an import path ``"package.module:factory"``.
        When given, :meth:`save` writes ``weights.safetensors``.
    architecture_kwargs : dict, optional
        Keyword arguments for the architecture factory (``{"num_classes": 3}``).
    device : str
        Where the module runs (default ``"cpu"``).
    input_shape : sequence of int, optional
        Shape of one sample; gives :meth:`save` an example input for ``torch.export``
        before :meth:`predict` has seen a batch.

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    >>> member = TorchMember(net, name="mlp")
    >>> member.predict(X[:4]).shape
    (4, 10)
    """

    framework = "torch"

    def __init__(
        self,
        module: nn.Module,
        *,
        architecture: str | None = None,
        architecture_kwargs: Mapping[str, Any] | None = None,
        device: str | torch.device = "cpu",
        input_shape: Sequence[int] | None = None,
        **options: Unpack[MemberOptions],
    ):
        name = options.setdefault("name", "torch")
        if not isinstance(module, nn.Module):
            raise MemberLoadError(
                f"member {name!r}: TorchMember wraps a torch.nn.Module, got {type(module).__name__}"
            )
        nn.Module.__init__(self)
        if options.get("output_kind") is None:
            options["output_kind"] = "values" if options.get("task") == "regression" else "logits"
        Member.__init__(self, **options)
        self.device = torch.device(device)
        self.module = module.to(self.device)
        self.architecture = architecture
        self.architecture_kwargs = dict(architecture_kwargs or {})
        self.example_input_: torch.Tensor | None = (
            None if input_shape is None else torch.zeros((2, *input_shape), dtype=self._float_dtype())
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the wrapped module on a tensor batch (gradients flow as usual)."""
        return _first_tensor(self.module(x))

    def _predict(self, batch: Any) -> np.ndarray:
        x = self._as_tensor(batch)
        if self.example_input_ is None:
            self.example_input_ = x[:2].detach().cpu().clone()
        with eval_mode(self.module), torch.inference_mode():
            out = _first_tensor(self.module(x.to(self.device)))
        return out.detach().float().cpu().numpy()

    def _float_dtype(self) -> torch.dtype:
        return next((p.dtype for p in self.module.parameters() if p.is_floating_point()), torch.float32)

    def _as_tensor(self, batch: Any) -> torch.Tensor:
        if isinstance(batch, torch.Tensor):
            x = batch
        else:
            arr = np.asarray(batch)
            if arr.dtype == object or arr.dtype.kind in "USV":
                raise ArgumentTypeError(
                    f"member {self.name!r} takes numeric arrays or tensors, got an array of {arr.dtype}; "
                    "convert the batch with preprocess= first"
                )
            x = torch.from_numpy(np.array(arr, copy=True) if not arr.flags.writeable else arr)
        if x.is_floating_point() or x.dtype == torch.uint8:
            # uint8 is image data, not token ids: the network wants floats.
            return x.to(self._float_dtype())
        if x.dtype in (torch.int8, torch.int16, torch.int32):
            return x.long()
        return x

    @property
    def n_parameters(self) -> int:
        """Number of elements in the module's parameters."""
        return sum(p.numel() for p in self.module.parameters())

    def to_onnx(self, example: np.ndarray, opset: int) -> MemberGraph:
        """The module (or the TorchScript program itself) through torch's TorchScript-based exporter."""
        return _torch_to_onnx(self, example, opset)

    def example_input(self) -> np.ndarray | None:
        """The rows :meth:`predict` last saw (or ``input_shape=``'s zeros)."""
        return None if self.example_input_ is None else self.example_input_.detach().cpu().float().numpy()

    def sample_shape(self) -> tuple[int, ...] | None:
        return None if self.example_input_ is None else tuple(self.example_input_.shape[1:])

    def fingerprint(self) -> str:
        """sha256 over the module's state-dict tensors."""
        return state_dict_fingerprint(self.module)

    def save(self, directory: Path) -> dict[str, Any]:
        """Write ``weights.safetensors`` (architecture known), ``model.torchscript.pt`` or ``model.pt2``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        spec: dict[str, Any] = self._common_spec()
        if self.architecture is not None:
            from safetensors.torch import save_model

            save_model(self.module, str(directory / "weights.safetensors"))
            spec.update(
                file="weights.safetensors",
                architecture=self.architecture,
                architecture_kwargs=self.architecture_kwargs,
            )
        elif isinstance(self.module, torch.jit.ScriptModule):
            self.module.save(str(directory / "model.torchscript.pt"))
            spec["file"] = "model.torchscript.pt"
        else:
            torch.export.save(self._export(), directory / "model.pt2")
            spec["file"] = "model.pt2"
        return spec

    def _export(self) -> torch.export.ExportedProgram:
        if self.example_input_ is None:
            raise MemberSaveError(
                f"member {self.name!r}: saving a plain nn.Module uses torch.export, which needs an example "
                "input; call member.predict(batch) once first, or load it with input_shape=(...) or "
                "architecture='package.module:factory' (then only the weights are saved)"
            )
        example = self.example_input_
        if example.shape[0] < 2:  # export specialises dimensions of size 0 and 1
            example = torch.cat([example] * 2)
        try:
            with eval_mode(self.module):
                return torch.export.export(
                    self.module,
                    (example.to(self.device),),
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                )
        except Exception as exc:
            raise MemberSaveError(
                f"member {self.name!r}: torch.export could not trace the module with a dynamic batch "
                f"dimension ({type(exc).__name__}: {exc}); pass architecture= so only the weights are "
                "saved, or wrap it with torch.jit.script"
            ) from exc

    @classmethod
    def load_saved(cls, directory: Path, spec: dict[str, Any], *, trust: bool = False) -> TorchMember:
        """Rebuild a member from what :meth:`save` wrote.

        Without ``trust`` the architecture must be a known network with plain arguments
        (:func:`~modelfusion.members.architectures.check_architecture`) and a ``.pt2``
        archive must hold no pickled object (:func:`check_export_archive`).
        """
        path = Path(directory) / spec["file"]
        architecture = spec.get("architecture")
        architecture_kwargs = spec.get("architecture_kwargs") or {}
        if architecture:
            if not trust:
                check_architecture(architecture, architecture_kwargs, owner=f"member {spec.get('name')!r}")
                check_weights_fit(architecture, architecture_kwargs, path)
            module = build_architecture(architecture, architecture_kwargs)
            load_weights(module, path, architecture)
        elif path.suffix == ".pt2":
            module = load_exported(path, trust=trust)
        else:
            module = load_torchscript(path, trust=trust)
        return cls(
            module,
            **cls._common_kwargs(spec),
            source_path=path,
            architecture=architecture,
            architecture_kwargs=architecture_kwargs,
        )


# -- loaders used by load_member ------------------------------------------------------------


def load_torch(
    source: nn.Module | str | Path,
    *,
    name: str,
    trust: bool = False,
    architecture: str | None = None,
    architecture_kwargs: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
    input_shape: Sequence[int] | None = None,
    **member_options: Any,
) -> TorchMember:
    """A :class:`TorchMember` from a module or a file (TorchScript, ``.pt2``, state dict).

    ``trust=True`` also allows ``.pt`` files that pickle a whole module (unpickling runs code).
    """
    options = dict(
        name=name,
        architecture=architecture,
        architecture_kwargs=architecture_kwargs,
        device=device,
        input_shape=input_shape,
        **member_options,
    )
    if isinstance(source, nn.Module):
        return TorchMember(source, **options)
    path = Path(source)
    example = None
    kind = archive_kind(path)
    module: nn.Module
    if kind == "torchscript":
        module = load_torchscript(path, trust=trust)
    elif kind == "export":
        module = load_exported(path, trust=trust)
        example = getattr(module, "example_input_", None)
    elif path.suffix == ".safetensors":
        module = _module_for_state_dict(path, architecture, architecture_kwargs)
        load_weights(module, path, architecture)
    else:
        obj = _torch_load(path, trust=trust)
        if isinstance(obj, nn.Module):
            module = obj
        else:
            module = _module_for_state_dict(path, architecture, architecture_kwargs)
            _load_state_dict(module, _extract_state_dict(obj, path), path, architecture)
    member = TorchMember(module, source_path=path, **options)
    if member.example_input_ is None and example is not None:
        member.example_input_ = example
    return member


def load_torch_factory(
    factory: str,
    *,
    name: str,
    trust: bool = False,
    weights: str | Path | None = None,
    architecture_kwargs: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
    input_shape: Sequence[int] | None = None,
    task: Task = "classification",
    output_kind: OutputKind | None = None,
    classes: Sequence[Any] | np.ndarray | None = None,
    n_outputs: int | None = None,
    preprocess: Callable[[Any], Any] | None = None,
) -> TorchMember:
    """A :class:`TorchMember` built by calling ``package.module:Factory`` with ``architecture_kwargs``.

    The factory is any callable that returns an ``nn.Module``: a model class (``vit_pytorch:ViT``)
    or a function. ``weights`` is an optional state-dict file (``.safetensors``, or ``.pt``/``.pth``
    read with ``weights_only=True``); without it the network keeps its fresh initialisation.
    The member remembers the factory and its arguments, so :meth:`TorchMember.save` writes only
    the weights. Importing the factory's module runs that module's code, as ``import`` would:
    name only installed packages or modules you would import yourself. ``trust`` is unused:
    no file is unpickled.
    """

    resolved = resolve_factory(factory)
    kwargs = dict(architecture_kwargs or {})
    module = build_architecture(resolved, kwargs)
    path = None
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.exists():
            raise MemberFileNotFoundError(f"member {name!r}: weights file '{path.resolve()}' does not exist")
        load_weights(module, path, resolved)
    return TorchMember(
        module,
        name=name,
        task=task,
        output_kind=output_kind,
        classes=classes,
        n_outputs=n_outputs,
        preprocess=preprocess,
        source_path=path,
        architecture=resolved,
        architecture_kwargs=kwargs,
        device=device,
        input_shape=input_shape,
    )


def resolve_factory(factory: str) -> str:
    """The exact import path ``package.module:Name`` of a factory, looking into subpackages.

    ``"vit_pytorch:CaiT"`` resolves to ``"vit_pytorch.cait:CaiT"`` when ``vit_pytorch`` itself
    does not export ``CaiT`` and exactly one of its modules defines it (found by reading the
    sources, without importing them). Raises MemberLoadError when the module cannot be
    imported, the name is nowhere, or several modules define it (naming them).
    """
    module_name, _, attr = factory.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise MemberLoadError(
            f"architecture {factory!r}: cannot import module {module_name!r} ({exc}); give an "
            "import path 'package.module:factory' that is importable here"
        ) from exc
    head = attr.split(".")[0]
    if hasattr(module, head) or not hasattr(module, "__path__") or "." in attr:
        return factory
    candidates = _modules_defining(module, head)
    if len(candidates) == 1:
        return f"{candidates[0]}:{attr}"
    if candidates:
        options = ", ".join(f"'{c}:{attr}'" for c in candidates[:6])
        if len(candidates) > 6:
            options += f" and {len(candidates) - 6} more"
        raise MemberLoadError(
            f"architecture {factory!r}: {module_name!r} does not export {attr!r}, and several of its modules "
            f"define it: {options}; name one of them"
        )
    raise MemberLoadError(
        f"architecture {factory!r}: module {module_name!r} has no attribute {attr!r}, and none of its "
        "modules defines it"
    )


def _modules_defining(package: Any, name: str) -> list[str]:
    """Direct submodules of ``package`` whose source defines ``class name`` or ``def name`` at top level.

    Reads the ``.py`` files; imports nothing.
    """
    import pkgutil
    import re

    pattern = re.compile(rf"^(?:class|def)\s+{re.escape(name)}\b", re.MULTILINE)
    found = []
    for info in pkgutil.iter_modules(package.__path__):
        folder = getattr(info.module_finder, "path", None)
        if folder is None:
            continue
        file = Path(folder) / info.name / "__init__.py" if info.ispkg else Path(folder) / f"{info.name}.py"
        try:
            source = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if pattern.search(source):
            found.append(f"{package.__name__}.{info.name}")
    return sorted(found)


def load_torchscript(path: Path, *, trust: bool = False) -> torch.jit.ScriptModule:
    """``torch.jit.load`` onto the CPU; only with ``trust=True``.

    A TorchScript file is a program, run by TorchScript's interpreter as it loads
    (``__setstate__``) and predicts, and its operators include file access
    (``torch.from_file(path, shared=True)`` reads and overwrites any file).
    """
    if not trust:
        raise UnsafeFormatError(
            f"'{path}' is TorchScript, a program whose code runs when it loads and predicts and can read and "
            "write files; pass trust=True (CLI/config: trust) only if you trust its source, or save a state "
            "dict with architecture= or a torch.export program (.pt2) instead"
        )
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as exc:
        raise MemberLoadError(f"could not load '{path}' as TorchScript: {exc}") from exc


def load_exported(path: Path, *, trust: bool = False) -> nn.Module:
    """The module of a ``torch.export`` archive (``.pt2``); pickled entries need ``trust=True``."""
    if not trust:
        check_export_archive(path)
    program = torch.export.load(str(path))
    if not trust:
        check_exported_ops(program, path)
    module = program.module()
    inputs = getattr(program, "example_inputs", None)
    if inputs and inputs[0] and isinstance(inputs[0][0], torch.Tensor):
        module.example_input_ = inputs[0][0]
    return module


def check_weights_fit(architecture: str, kwargs: Mapping[str, Any], path: Path) -> None:
    """Build ``architecture`` on the meta device and compare its shapes with the weights file's header.

    Nothing is allocated, so arguments from a hostile manifest (``hidden: 20000000``) fail
    here in milliseconds instead of taking gigabytes before the weights fail to fit.
    """
    if path.suffix != ".safetensors" or not path.is_file():
        return
    from safetensors import safe_open

    with torch.device("meta"):
        module = build_architecture(architecture, kwargs)
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}
    try:
        with safe_open(str(path), framework="pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118  (not a dict)
    except Exception as exc:  # safetensors raises its own types for a corrupt header
        raise MemberLoadError(f"'{path}' is not a valid safetensors file: {exc}") from None
    wrong = [k for k, shape in found.items() if k not in expected or expected[k] != shape]
    if wrong:
        k = wrong[0]
        raise MemberLoadError(
            f"weights in '{path}' do not fit architecture {architecture!r} with architecture_kwargs={dict(kwargs)}: "
            f"{k} is {list(found[k])} in the file but "
            + (f"{list(expected[k])} in the network" if k in expected else "not in the network")
            + f" ({len(wrong)} tensor(s) differ)"
        )


#: Names of ``torch.export`` archive entries that torch unpickles with full Python pickle.
_PICKLED_CONSTANT_PREFIXES = ("custom_obj_", "opaque_obj_")


def check_export_archive(path: Path) -> None:
    """Raise UnsafeFormatError when loading the ``.pt2`` archive would unpickle Python objects.

    ``torch.export.load`` reads tensors from raw bytes, but it unpickles (``weights_only=False``)
    payloads marked ``use_pickle``, legacy ``.pt`` weight and constant files, custom and opaque
    objects, and sample inputs that fail a safe load. Each such entry must load with
    ``torch.load(weights_only=True)``; custom and opaque objects are refused outright.
    """
    import io
    import json
    import pickle

    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise MemberLoadError(f"'{path}' is not a torch.export archive (not a zip file: {exc})") from exc
    with archive:
        names = archive.namelist()
        pickled = {n for n in names if n.endswith(".pt") or n.endswith(".pkl")}
        for name in names:
            base = name.rsplit("/", 1)[-1]
            if base.startswith(_PICKLED_CONSTANT_PREFIXES):
                pickled.add(name)
            elif name.endswith("_config.json"):
                try:
                    config = json.loads(archive.read(name)).get("config") or {}
                    folder = name.rsplit("/", 1)[0]
                    pickled |= {
                        f"{folder}/{meta.get('path_name')}"
                        for meta in config.values()
                        if isinstance(meta, dict) and meta.get("use_pickle")
                    }
                except (ValueError, AttributeError) as exc:
                    raise MemberLoadError(f"'{path}': {name} is not a valid payload config ({exc})") from exc
        for name in names:
            if name.rsplit("/", 2)[-2:-1] == ["models"] and name.endswith(".json"):
                _check_graph_targets(path, name, archive.read(name))
        for name in sorted(pickled):
            if name.rsplit("/", 1)[-1].startswith(_PICKLED_CONSTANT_PREFIXES):
                reason = "a pickled Python object"
            else:
                try:
                    torch.load(io.BytesIO(archive.read(name)), weights_only=True, map_location="cpu")
                    continue
                except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError) as exc:
                    reason = f"a pickle that is not plain tensors ({type(exc).__name__})"
                except Exception as exc:  # any other failure of the safe loader: still not safe
                    reason = f"an entry the safe loader rejects ({type(exc).__name__})"
            raise UnsafeFormatError(
                f"'{path}': archive entry {name!r} is {reason}; torch.export.load would unpickle it, "
                "which runs code from the file. Pass trust=True (CLI: --trust) only if you trust its "
                "source, or re-export the model with plain tensors"
            )


#: Operators a ``.pt2`` graph may call: ATen and prims kernels, Python's operator and math helpers.
#: torch's deserializer resolves any other dotted name by ``getattr`` from ``torch``, so a
#: hand-edited graph naming ``torch.os.system`` or ``torch.save`` would call it on predict.
_GRAPH_TARGET = re.compile(
    r"^(torch\.ops\.(aten|prims|higher_order)\.[A-Za-z0-9_.]+|_operator\.[a-z_]+|math\.[a-z_]+)$"
)
#: ATen kernels that touch files.
_FILE_OPS = re.compile(r"from_file|_save|_load", re.IGNORECASE)


#: Higher-order operators a graph may use: control flow only (``with_effects`` and friends run
#: side-effecting or arbitrary callables).
_SAFE_HIGHER_ORDER = {"cond", "while_loop", "map_impl", "scan"}


def check_exported_ops(program: Any, path: Path) -> None:
    """Raise UnsafeFormatError unless every operator a loaded ``.pt2`` graph calls, or passes on, is safe.

    Walks every graph (control-flow branches too): each call target and each operator given
    as an argument must be an ATen/prims kernel that touches no file, a control-flow
    higher-order operator, or a function of Python's ``operator``/``math`` modules.
    """
    for graph_module in program.graph_module.modules():
        graph = getattr(graph_module, "graph", None)
        if not isinstance(graph, torch.fx.Graph):
            continue
        for node in graph.nodes:
            if node.op in ("call_module", "call_method"):
                raise UnsafeFormatError(
                    f"'{path}': the exported graph has a {node.op} node ({node.target}); refused"
                )
            if node.op == "call_function":
                _check_op(node.target, path)
            torch.fx.node.map_aggregate(
                (node.args, node.kwargs),
                lambda v: _check_op(v, path) if callable(v) and not isinstance(v, torch.fx.Node) else v,
            )


def _check_op(op: Any, path: Path) -> Any:
    if isinstance(op, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        name = str(op._schema.name if hasattr(op, "_schema") else getattr(op, "_qualified_op_name", op))
        ok = name.split("::")[0] in ("aten", "prims") and not _FILE_OPS.search(name)
    elif isinstance(op, torch._ops.HigherOrderOperator):
        name, ok = op.name(), op.name() in _SAFE_HIGHER_ORDER
    else:
        name = f"{getattr(op, '__module__', '?')}.{getattr(op, '__qualname__', op)}"
        ok = getattr(op, "__module__", None) in ("_operator", "operator", "math")
    if not ok:
        raise UnsafeFormatError(
            f"'{path}': the exported graph uses {name!r}, which is not a plain ATen operator; torch would run it "
            "on predict. Pass trust=True only if you trust the file's source"
        )
    return op


def _check_graph_targets(path: Path, entry: str, data: bytes) -> None:
    import json

    try:
        graph = json.loads(data)
    except ValueError as exc:
        raise MemberLoadError(f"'{path}': {entry} is not valid JSON ({exc})") from None
    stack = [graph]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            target = node.get("target")
            if isinstance(target, str) and (not _GRAPH_TARGET.match(target) or _FILE_OPS.search(target)):
                raise UnsafeFormatError(
                    f"'{path}': the exported graph calls {target!r}, which is not an ATen operator; "
                    "torch.export.load would call it as it runs. Pass trust=True only if you trust the file's source"
                )
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def load_weights(module: nn.Module, path: Path, architecture: str | None) -> None:
    """Load a state dict file (``.safetensors`` or ``torch.save``) into ``module`` in place."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_model

        try:
            load_model(module, str(path), strict=True, device="cpu")
        except RuntimeError as exc:
            raise MemberLoadError(
                f"weights in '{path}' do not fit architecture {architecture!r}: {exc}\n"
                "Check architecture= and architecture_kwargs= (e.g. num_classes)."
            ) from exc
        return
    _load_state_dict(module, _extract_state_dict(_torch_load(path, trust=False), path), path, architecture)


def build_architecture(architecture: str, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """An untrained network by name: torchvision, timm, or an import path ``package.module:factory``.

    Raises MemberLoadError when the name is none of these or the factory fails.
    """
    kwargs = dict(kwargs or {})
    if ":" in architecture:
        factory = import_factory(architecture)
        try:
            module = factory(**kwargs)
        except Exception as exc:
            raise MemberLoadError(
                f"architecture {architecture!r} failed with architecture_kwargs={kwargs}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    else:
        module = _build_named(architecture, kwargs)
    if not isinstance(module, nn.Module):
        raise MemberLoadError(
            f"architecture {architecture!r} returned {type(module).__name__}, expected a torch.nn.Module"
        )
    return module


def state_dict_fingerprint(module: nn.Module) -> str:
    """sha256 over every tensor of ``module.state_dict()``, in order."""
    arrays = []
    for tensor in module.state_dict().values():
        if not isinstance(tensor, torch.Tensor):
            continue
        t = tensor.detach().cpu().contiguous()
        try:
            arrays.append(t.numpy())
        except TypeError:  # bfloat16, float8: dtypes numpy lacks
            arrays.append(t.to(torch.float32).numpy())
    return sha256_arrays(arrays)


# -- internals --------------------------------------------------------------------------------


def _first_tensor(out: Any) -> torch.Tensor:
    """The prediction tensor of a forward pass that may return a tuple, dict or ModelOutput."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits") and isinstance(out.logits, torch.Tensor):
        return out.logits
    if isinstance(out, Mapping):
        for key in ("logits", "output", "out"):
            if isinstance(out.get(key), torch.Tensor):
                return out[key]
        out = list(out.values())
    if isinstance(out, (list, tuple)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise PredictionError(f"the module returned {type(out).__name__}; expected a tensor [samples, outputs]")


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode inside the block, the caller's mode after it."""
    was_training = module.training
    # torch.export graphs are inference graphs already and refuse eval()/train().
    with contextlib.suppress(NotImplementedError):
        module.eval()
    try:
        yield
    finally:
        if was_training:
            with contextlib.suppress(NotImplementedError):
                module.train()


def archive_kind(path: Path) -> str | None:
    """'torchscript', 'export' or None (a torch.save file or not a zip) from the zip's entries."""
    if path.suffix == ".pt2":
        return "export"
    if path.suffix == ".ts":
        return "torchscript"
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("/archive_format") or n.endswith("/models/model.json") for n in names):
        return "export"
    return None


_archive_kind = archive_kind  # the name other modules imported before it was public


def _torch_load(path: Path, *, trust: bool) -> Any:
    import pickle

    try:
        return torch.load(str(path), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        if not zipfile.is_zipfile(path) and not trust:
            raise MemberLoadError(
                f"'{path}' is not a torch archive (written by torch.save, torch.jit.save or "
                "torch.export.save): the file is corrupt or a legacy pickle. If it is a legacy "
                "checkpoint you trust, pass trust=True."
            ) from exc
        if not trust:
            raise UnsafeFormatError(
                f"'{path}' pickles Python objects beyond tensors (probably a whole nn.Module); loading "
                "it would run code from the file. Pass trust=True only if you trust its source, or save "
                "a state dict (with architecture=), TorchScript or torch.export (.pt2) instead."
            ) from exc
    try:
        return torch.load(str(path), weights_only=False, map_location="cpu")
    except Exception as exc:
        raise MemberLoadError(
            f"could not load '{path}' with torch.load ({type(exc).__name__}: {exc}); the file is corrupt "
            "or not a PyTorch file"
        ) from exc


def _extract_state_dict(obj: Any, path: Path) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            if all(k.startswith("module.") for k in obj):  # saved from DataParallel / DDP
                obj = {k[len("module.") :]: v for k, v in obj.items()}
            return obj
    raise MemberLoadError(
        f"'{path}' holds a {type(obj).__name__}, not a state dict of tensors; save "
        "model.state_dict(), a TorchScript module or a torch.export program"
    )


def _load_state_dict(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], path: Path, architecture: str | None
) -> None:
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise MemberLoadError(
            f"weights in '{path}' do not fit architecture {architecture!r}: {exc}\n"
            "Check architecture= and architecture_kwargs= (e.g. num_classes)."
        ) from exc


def _module_for_state_dict(
    path: Path, architecture: str | None, architecture_kwargs: Mapping[str, Any] | None
) -> nn.Module:
    if architecture is None:
        raise MemberLoadError(
            f"'{path}' holds only weights (a state dict), so the network must be built first: pass "
            "architecture= a torchvision or timm model name ('resnet18') or an import path "
            "'package.module:factory', plus architecture_kwargs= if the factory needs them. If it is a "
            "Hugging Face checkpoint (pytorch_model.bin, model.safetensors), put the model's config.json "
            f"in the same folder ('{path.parent / 'config.json'}')"
        )
    return build_architecture(architecture, architecture_kwargs)


def import_factory(architecture: str) -> Callable[..., Any]:
    """The callable an architecture import path names, imported (not called); MemberLoadError if it is not there."""
    module_name, _, attr = architecture.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise MemberLoadError(
            f"architecture {architecture!r}: cannot import module {module_name!r} ({exc}); give an "
            "import path 'package.module:factory' that is importable here"
        ) from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise MemberLoadError(
                f"architecture {architecture!r}: module {module_name!r} has no attribute {attr!r}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise MemberLoadError(f"architecture {architecture!r} is not callable")
    return obj


def _build_named(architecture: str, kwargs: dict[str, Any]) -> nn.Module:
    tried = []
    try:
        import torchvision
    except ImportError:
        tried.append("torchvision (not installed)")
    else:
        if architecture in torchvision.models.list_models():
            return torchvision.models.get_model(architecture, weights=None, **kwargs)
        tried.append("torchvision")
    try:
        import timm
    except ImportError:
        tried.append("timm (not installed)")
    else:
        if timm.is_model(architecture):
            return timm.create_model(architecture, pretrained=False, **kwargs)
        tried.append("timm")
    hint = ' (install them with pip install "modelfusion[vision]")' if "not installed" in str(tried) else ""
    raise MemberLoadError(
        f"unknown architecture {architecture!r}: not a model name in {' or '.join(tried)}{hint}, and not an "
        "import path 'package.module:factory'"
    )


# -- as one ONNX graph (see modelfusion.runtime.member_onnx) ------------------------------------


def _torch_to_onnx(member: Any, example: np.ndarray, opset: int) -> MemberGraph:
    x = torch.as_tensor(at_least_two(example))
    if x.is_floating_point() or x.dtype == torch.uint8:  # as TorchMember.predict casts batches
        dtype = next((p.dtype for p in member.parameters() if p.is_floating_point()), torch.float32)
        x = x.to(dtype)
    else:
        x = x.long()
    x = x.to(member.device)
    buffer = io.BytesIO()
    try:
        # The TorchScript exporter needs no onnxscript; its deprecation notice is not the user's concern.
        # PRESERVE because torch.export modules refuse eval(); eval_mode has set eval mode already.
        with warnings.catch_warnings(), eval_mode(member), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message="It is recommended that constant folding be turned off")
            warnings.filterwarnings("ignore", message="no signature found for <torch.ScriptMethod")
            # Shape asserts of torch.export modules trace as constants; the batch-size check in
            # onnx_export catches a graph that really depends on them.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                _exportable(member),
                (x,),
                buffer,  # type: ignore[arg-type]  # a file object works; torch's hint names paths only
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                training=torch.onnx.TrainingMode.PRESERVE,
            )
    except Exception as exc:
        raise ExportError(
            f"member {member.name!r}: torch.onnx.export could not trace it ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r})"
        ) from exc
    import onnx

    proto = onnx.load_from_string(buffer.getvalue())
    del proto.graph.output[1:]  # a TorchScript module returning a tuple: the member's scores come first
    return MemberGraph(proto)


def _exportable(member: Any) -> Any:
    """What torch.onnx.export is given: the ScriptModule itself for TorchScript members.

    A ScriptModule cannot be traced from inside an eager wrapper (the tracer sees it as an
    unregistered module), but the exporter takes it directly and converts its graph.
    """
    module = getattr(member, "module", None)
    return module if isinstance(module, torch.jit.ScriptModule) else member
