"""Keras 3 members: ``.keras`` / ``.h5`` files or ``keras.Model`` objects, run on the torch backend.

``keras`` is imported only when a member is built, so ``import modelfusion`` never imports it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelfusion.errors import MemberLoadError, UnsafeFormatError
from modelfusion.members.base import Member, sha256_arrays

_PROBA_ACTIVATIONS = ("softmax", "sigmoid")


class KerasMember(Member):
    """A Keras 3 model as an ensemble member (torch backend).

    Parameters
    ----------
    model : keras.Model
    name, task, classes, n_outputs, preprocess, source_path
        See :class:`~modelfusion.members.base.Member`.
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
        self,
        model: Any,
        *,
        name: str = "keras",
        task: str = "classification",
        output_kind: str | None = None,
        classes: Sequence[Any] | np.ndarray | None = None,
        n_outputs: int | None = None,
        preprocess: Callable[[Any], Any] | None = None,
        source_path: str | Path | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        keras = import_keras()
        if not isinstance(model, keras.Model):
            raise MemberLoadError(
                f"member {name!r}: KerasMember wraps a keras.Model, got {type(model).__name__}"
            )
        if input_shape is not None:
            check_input_shape(model, input_shape, name)
        if output_kind is None:
            if task == "regression":
                output_kind = "values"
            else:
                activation = getattr(model.layers[-1], "activation", None) if model.layers else None
                output_kind = (
                    "proba" if getattr(activation, "__name__", "") in _PROBA_ACTIVATIONS else "logits"
                )
        super().__init__(
            name=name,
            task=task,
            output_kind=output_kind,
            classes=classes,
            n_outputs=n_outputs,
            preprocess=preprocess,
            source_path=source_path,
        )
        self.model = model
        self.input_shape = None if input_shape is None else tuple(input_shape)

    def _predict(self, batch: Any) -> np.ndarray:
        if hasattr(batch, "detach") and hasattr(batch, "numpy"):
            batch = batch.detach().cpu().numpy()
        batch = {k: _float32(v) for k, v in batch.items()} if isinstance(batch, dict) else _float32(batch)
        return np.asarray(self.model.predict_on_batch(batch))

    @property
    def n_parameters(self) -> int:
        """``model.count_params()``."""
        return int(self.model.count_params())

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
    def load_saved(cls, directory: Path, spec: dict[str, Any]) -> KerasMember:
        """Rebuild a member from ``model.keras`` in safe mode."""
        path = Path(directory) / spec["file"]
        return cls(load_keras_model(path, trust=False), **cls._common_kwargs(spec), source_path=path)


def load_keras(
    source: Any,
    *,
    name: str,
    trust: bool = False,
    input_shape: Sequence[int] | None = None,
    **member_options: Any,
) -> KerasMember:
    """A :class:`KerasMember` from a model or a ``.keras``/``.h5`` file.

    ``trust=True`` loads with ``safe_mode=False``, which a ``Lambda`` layer needs (it runs code).
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
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


def import_keras() -> Any:
    """Import keras on the torch backend, or raise a MemberLoadError saying what to do."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    already = "keras" in sys.modules
    try:
        import keras
    except ImportError as exc:
        raise MemberLoadError(
            f"Keras members need keras 3 on the torch backend ({exc}); install it with pip install "
            f'"modelfusion[keras]" and set KERAS_BACKEND=torch'
        ) from exc
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
    expected = tuple(expected[1:])
    given = tuple(input_shape)
    if len(given) != len(expected) or any(
        e is not None and e != g for e, g in zip(expected, given, strict=True)
    ):
        raise MemberLoadError(
            f"member {name!r}: input_shape={given} does not match the model's input shape {expected} "
            "(per sample, without the batch dimension); fix input_shape= or the data pipeline"
        )


def _float32(values: Any) -> np.ndarray:
    arr = np.asarray(values)
    return arr.astype(np.float32) if arr.dtype == np.float64 else arr
