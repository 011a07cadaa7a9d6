"""Keras 3 members: ``.keras`` / ``.h5`` files or ``keras.Model`` objects, run on the torch backend.

TensorFlow SavedModel folders load too when tensorflow is installed (it is not a dependency).
``keras`` is imported only when a member is built, so ``import modelfusion`` never imports it.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from modelfusion.dependencies import require
from modelfusion.errors import (
    ArgumentTypeError,
    ExportError,
    MemberLoadError,
    MemberSaveError,
    UnknownNameError,
    UnsafeFormatError,
)
from modelfusion.members.base import Member, MemberOptions, sha256_arrays, sha256_file
from modelfusion.runtime.member_onnx import MemberGraph, onnx_member_graph

if TYPE_CHECKING:
    from typing_extensions import Unpack

_PROBA_ACTIVATIONS = ("softmax", "sigmoid")


class KerasMember(Member, nn.Module):
    """A Keras 3 model as an ensemble member (torch backend).

    On the torch backend a Keras model is a ``torch.nn.Module``, and so is the member:
    ``forward(x)`` calls the model on a tensor (in inference mode; gradients flow), so a
    ``KerasMember`` can sit inside a larger network. :meth:`predict` takes numpy arrays or
    tensors.

    Parameters
    ----------
    model : keras.Model
    **options : name, task, classes, n_outputs, preprocess, source_path
        :class:`~modelfusion.members.base.MemberOptions`, declared once for every adapter.
    output_kind : str, optional
        Default ``"proba"`` when the last layer ends in softmax or sigmoid, else
        ``"logits"`` (``"values"`` for regression).
    input_shape : sequence of int, optional
        Shape of one sample; checked against ``model.input_shape[1:]`` (``None`` dims match
        anything) so a mismatch fails at load time rather than at predict time.

    Examples
    --------
    >>> member = load_member("models/digits.keras", input_shape=(64,))
    >>> member.predict(X[:4]).shape
    (4, 10)
    """

    framework = "keras"

    def __init__(
        self, model: Any, *, input_shape: Sequence[int] | None = None, **options: Unpack[MemberOptions]
    ):
        name = options.setdefault("name", "keras")
        task = options["task"] = options.get("task") or "classification"
        keras = import_keras()
        if not isinstance(model, keras.Model):
            raise MemberLoadError(
                f"member {name!r}: KerasMember wraps a keras.Model, got {type(model).__name__}"
            )
        if input_shape is not None:
            check_input_shape(model, input_shape, name)
        if options.get("output_kind") is None:
            if task == "regression":
                options["output_kind"] = "values"
            else:
                activation = getattr(model.layers[-1], "activation", None) if model.layers else None
                proba = getattr(activation, "__name__", "") in _PROBA_ACTIVATIONS
                options["output_kind"] = "proba" if proba else "logits"
        nn.Module.__init__(self)
        Member.__init__(self, **options)
        self.model = model
        self.input_shape = None if input_shape is None else tuple(input_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's outputs for a tensor batch [samples, *input_shape] (gradients flow as usual)."""
        out = self.model(x)
        if isinstance(out, Mapping):
            out = next(iter(out.values()))
        elif isinstance(out, (list, tuple)):
            out = out[0]
        return out

    def _predict(self, batch: Any) -> np.ndarray:
        if hasattr(batch, "detach") and hasattr(batch, "numpy"):
            batch = batch.detach().cpu().numpy()
        batch = {k: _float32(v) for k, v in batch.items()} if isinstance(batch, dict) else _float32(batch)
        return np.asarray(self.model.predict_on_batch(batch))

    @property
    def n_parameters(self) -> int:
        """``model.count_params()``."""
        return int(self.model.count_params())

    def to_onnx(self, example: np.ndarray, opset: int) -> MemberGraph:
        """The model through Keras' own ``model.export(format="onnx")``."""
        return _keras_to_onnx(self, example, opset)

    def sample_shape(self) -> tuple[int, ...] | None:
        dims = getattr(self.model, "input_shape", None)
        if isinstance(dims, tuple) and all(isinstance(d, int) for d in dims[1:]):
            return tuple(dims[1:])
        return None

    def fingerprint(self) -> str:
        """sha256 over the model's weight arrays."""
        return sha256_arrays(self.model.get_weights())

    def save(self, directory: Path) -> dict[str, Any]:
        """Write ``model.keras``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save(directory / "model.keras")
        return {**self._common_spec(), "file": "model.keras"}

    @classmethod
    def load_saved(cls, directory: Path, spec: dict[str, Any], *, trust: bool = False) -> Member:
        """Rebuild a member from ``model.keras`` in safe mode (or a copied SavedModel folder)."""
        path = Path(directory) / spec["file"]
        if path.is_dir():
            return SavedModelMember.load_saved(directory, spec, trust=trust)
        return cls(load_keras_model(path, trust=trust), **cls._common_kwargs(spec), source_path=path)


class SavedModelMember(Member):
    """A TensorFlow SavedModel folder as an ensemble member; needs tensorflow (not a dependency).

    Runs one serving signature of ``tf.saved_model.load(folder)`` on numpy batches.

    Parameters
    ----------
    loaded : the object ``tf.saved_model.load`` returned
    signature : str
        Which signature to call (default ``"serving_default"``).
    output_name : str, optional
        Which output of the signature is the prediction (default: the only one, else the
        first in name order).
    output_kind : str, optional
        Default ``"proba"`` (Keras classifiers end in softmax); declare ``"logits"`` otherwise.
    input_shape : sequence of int, optional
        Checked against the signature's input (``None`` dims match anything).
    **options : name, task, classes, n_outputs, preprocess, source_path
        See :class:`~modelfusion.members.base.Member`; ``source_path`` is the folder.

    Examples
    --------
    >>> member = load_member("exported/resnet50", framework="tensorflow", input_shape=(224, 224, 3))
    """

    framework = "keras"

    def __init__(
        self,
        loaded: Any,
        *,
        signature: str = "serving_default",
        output_name: str | None = None,
        input_shape: Sequence[int] | None = None,
        **options: Unpack[MemberOptions],
    ):
        name = options.setdefault("name", "saved_model")
        task = options["task"] = options.get("task") or "classification"
        signatures = dict(getattr(loaded, "signatures", None) or {})
        if signature not in signatures:
            raise MemberLoadError(
                f"member {name!r}: the SavedModel has no signature {signature!r}; it has "
                f"{', '.join(sorted(signatures)) or 'none'} (pass signature=)"
            )
        self.function = signatures[signature]
        self.inputs = _signature_inputs(self.function)
        if input_shape is not None:
            if len(self.inputs) != 1:
                raise MemberLoadError(
                    f"member {name!r}: the SavedModel takes {len(self.inputs)} inputs {self.inputs}; "
                    "input_shape= applies to single-input models only"
                )
            compare_shapes(next(iter(self.inputs.values())), input_shape, name)
        if options.get("output_kind") is None:
            options["output_kind"] = "values" if task == "regression" else "proba"
        super().__init__(**options)
        self.loaded = loaded
        self.signature = signature
        self.output_name = output_name
        self.input_shape = None if input_shape is None else tuple(input_shape)

    def _predict(self, batch: Any) -> np.ndarray:
        tf = import_tensorflow(self.source_path)
        if hasattr(batch, "detach") and hasattr(batch, "numpy"):
            batch = batch.detach().cpu().numpy()
        if isinstance(batch, Mapping):
            feeds = {k: tf.convert_to_tensor(_float32(v)) for k, v in batch.items()}
        elif len(self.inputs) == 1:
            feeds = {next(iter(self.inputs)): tf.convert_to_tensor(_float32(batch))}
        else:
            raise ArgumentTypeError(
                f"member {self.name!r} takes {len(self.inputs)} inputs ({', '.join(self.inputs)}); pass a "
                "dict {input_name: array}"
            )
        out = self.function(**feeds)
        if isinstance(out, Mapping):
            if self.output_name is not None:
                if self.output_name not in out:
                    raise UnknownNameError(
                        f"member {self.name!r}: no output {self.output_name!r}; outputs are {', '.join(out)}"
                    )
                out = out[self.output_name]
            else:
                out = out[sorted(out)[0]]
        return np.asarray(out.numpy() if hasattr(out, "numpy") else out)

    @property
    def n_parameters(self) -> int | None:
        """Number of elements in the SavedModel's variables."""
        variables = getattr(self.loaded, "variables", None)
        if not variables:
            return None
        return int(sum(np.prod(tuple(v.shape)) for v in variables))

    def fingerprint(self) -> str:
        """sha256 over the files of the SavedModel folder."""
        if self.source_path is None:
            raise MemberSaveError(f"member {self.name!r}: a SavedModel member needs the folder it came from")
        return sha256_file(self.source_path)

    def save(self, directory: Path) -> dict[str, Any]:
        """Copy the SavedModel folder to ``saved_model/``."""
        if self.source_path is None:
            raise MemberSaveError(f"member {self.name!r}: a SavedModel member needs the folder it came from")
        target = Path(directory) / "saved_model"
        shutil.copytree(self.source_path, target, dirs_exist_ok=True)
        return {
            **self._common_spec(),
            "file": "saved_model",
            "signature": self.signature,
            "output_name": self.output_name,
        }

    @classmethod
    def load_saved(cls, directory: Path, spec: dict[str, Any], *, trust: bool = False) -> SavedModelMember:
        """Rebuild a member from the copied SavedModel folder (needs ``trust``: its graph can run any op)."""
        path = Path(directory) / spec["file"]
        if not trust:
            raise UnsafeFormatError(
                f"member {spec.get('name')!r} is a TensorFlow SavedModel, whose graph can run any "
                "TensorFlow op (file reads and writes included); load the bundle with trust=True "
                "(CLI: --trust) only if you trust where it came from"
            )
        kwargs = cls._common_kwargs(spec)
        return load_saved_model(
            path,
            signature=spec.get("signature", "serving_default"),
            output_name=spec.get("output_name"),
            **kwargs,
        )


def load_keras(
    source: Any,
    *,
    name: str,
    trust: bool = False,
    input_shape: Sequence[int] | None = None,
    signature: str = "serving_default",
    output_name: str | None = None,
    **member_options: Any,
) -> Member:
    """A :class:`KerasMember` from a model or a ``.keras``/``.h5`` file, or a SavedModel folder.

    ``trust=True`` loads with ``safe_mode=False``, which a ``Lambda`` layer needs (it runs code).
    A folder with ``saved_model.pb`` (or that file itself) is a TensorFlow SavedModel: it
    becomes a :class:`SavedModelMember` when tensorflow is installed; ``signature`` and
    ``output_name`` pick what to call. Otherwise a MemberLoadError says how to install it.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir() or path.name == "saved_model.pb":
            folder = path if path.is_dir() else path.parent
            if not (folder / "saved_model.pb").exists():
                raise MemberLoadError(
                    f"'{folder}' is a folder without saved_model.pb; Keras members are .keras or .h5 files "
                    "(or TensorFlow SavedModel folders)"
                )
            return load_saved_model(
                folder,
                name=name,
                input_shape=input_shape,
                signature=signature,
                output_name=output_name,
                **member_options,
            )
        return KerasMember(
            load_keras_model(path, trust=trust),
            name=name,
            input_shape=input_shape,
            source_path=path,
            **member_options,
        )
    return KerasMember(source, name=name, input_shape=input_shape, **member_options)


def load_keras_model(path: Path, *, trust: bool) -> Any:
    """``keras.saving.load_model`` in safe mode unless ``trust``; errors name the file."""
    keras = import_keras()
    try:
        return keras.saving.load_model(path, safe_mode=not trust)
    except Exception as exc:
        if "safe_mode" in str(exc):
            raise UnsafeFormatError(
                f"'{path}' holds Python code (a Lambda layer); loading it would run that code. Pass "
                "trust=True (safe_mode=False) only if you trust the file."
            ) from exc
        raise MemberLoadError(
            f"keras could not load '{path}' ({type(exc).__name__}: {exc}); expected a model saved with "
            "model.save('name.keras') or a legacy .h5 file"
        ) from exc


def load_saved_model(folder: Path, **options: Any) -> SavedModelMember:
    """A :class:`SavedModelMember` from a SavedModel folder (``tf.saved_model.load``)."""
    tf = import_tensorflow(folder)
    try:
        loaded = tf.saved_model.load(str(folder))
    except Exception as exc:
        raise MemberLoadError(
            f"tensorflow could not load the SavedModel '{folder}' ({type(exc).__name__}: {exc})"
        ) from exc
    return SavedModelMember(loaded, source_path=folder, **options)


def import_tensorflow(folder: Path | None = None) -> Any:
    """Import tensorflow, or raise a MemberLoadError naming what to install (and the alternatives)."""
    return require(
        "tensorflow",
        purpose=f"'{folder}' is a TensorFlow SavedModel folder; loading it"
        if folder
        else "a SavedModel member",
        alternative="or convert the model once where tensorflow is available to a format that loads without "
        "it: ONNX (python -m tf2onnx.convert --saved-model DIR --output model.onnx) or a Keras 3 .keras "
        "file (model.save('model.keras'))",
    )


def import_keras() -> Any:
    """Import keras on the torch backend, or raise a MemberLoadError saying what to do."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    already = "keras" in sys.modules
    keras = require(
        "keras", purpose="a Keras member", extra="keras", alternative="keras 3, with KERAS_BACKEND=torch"
    )
    backend = keras.backend.backend()
    if backend != "torch":
        when = "was imported" if already else "is configured"
        raise MemberLoadError(
            f"keras {when} with the {backend!r} backend; modelfusion runs Keras models on torch. Set "
            "KERAS_BACKEND=torch before anything imports keras (or in ~/.keras/keras.json)."
        )
    return keras


def check_input_shape(model: Any, input_shape: Sequence[int], name: str) -> None:
    """Raise MemberLoadError if ``input_shape`` does not match ``model.input_shape[1:]``."""
    expected = model.input_shape
    if isinstance(expected, list):
        raise MemberLoadError(
            f"member {name!r}: the model has {len(expected)} inputs {expected}; input_shape= applies to "
            "single-input models only"
        )
    compare_shapes(tuple(expected), input_shape, name)


def compare_shapes(expected: Sequence[int | None], input_shape: Sequence[int], name: str) -> None:
    """Raise MemberLoadError unless ``input_shape`` matches ``expected[1:]`` (``expected`` has the batch dim).

    ``None`` dimensions of ``expected`` match anything.
    """
    expected = tuple(expected[1:])
    given = tuple(input_shape)
    if len(given) != len(expected) or any(
        e is not None and e != g for e, g in zip(expected, given, strict=True)
    ):
        raise MemberLoadError(
            f"member {name!r}: input_shape={given} does not match the model's input shape {expected} "
            "(per sample, without the batch dimension); fix input_shape= or the data pipeline"
        )


def _signature_inputs(function: Any) -> dict[str, tuple[int | None, ...]]:
    """``{input_name: shape}`` of a SavedModel signature (a concrete function)."""
    structured = getattr(function, "structured_input_signature", None)
    specs = structured[1] if structured and len(structured) > 1 else {}
    inputs = {}
    for key, spec in dict(specs).items():
        shape = getattr(spec, "shape", None)
        dims = shape.as_list() if shape is not None and hasattr(shape, "as_list") else list(shape or [])
        inputs[str(key)] = tuple(dims)
    return inputs


def _float32(values: Any) -> np.ndarray:
    arr = np.asarray(values)
    return arr.astype(np.float32) if arr.dtype == np.float64 else arr


# -- as one ONNX graph (see modelfusion.runtime.member_onnx) ------------------------------------


def _keras_to_onnx(member: Any, example: np.ndarray, opset: int) -> MemberGraph:
    import onnx

    member.model.predict_on_batch(np.asarray(example, np.float32))  # keras exports called models only
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                member.model.export(str(path), format="onnx")
            proto = onnx.load(str(path))
        except Exception as exc:
            raise ExportError(
                f"member {member.name!r} (keras): model.export(format='onnx') failed ({type(exc).__name__}: "
                f"{exc}); on the TensorFlow backend this needs tf2onnx (pip install tf2onnx)"
            ) from exc
    output = proto.graph.output[0].name
    return onnx_member_graph(proto, output, member.name, opset)
