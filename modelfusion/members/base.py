"""The one interface every model sits behind, whatever framework it comes from."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

import numpy as np

from modelfusion.errors import ExportError, MemberLoadError, PredictionError
from modelfusion.outputs import OutputKind, Task, check_kind, check_task, to_proba

if TYPE_CHECKING:
    from modelfusion.runtime.member_onnx import MemberGraph


class MemberOptions(TypedDict, total=False):
    """The options every adapter takes, declared once: each adapter's ``**options`` (see :class:`Member`).

    Examples
    --------
    >>> SklearnMember(forest, name="forest", classes=[0, 1, 2])
    """

    name: str
    #: None: the adapter's default (read from the model where it can be)
    task: Task | None
    output_kind: OutputKind | None
    classes: Sequence[Any] | np.ndarray | None
    n_outputs: int | None
    preprocess: Callable[[Any], Any] | None
    source_path: str | Path | None


class Member(ABC):
    """A trained model behind one interface: ``predict(batch) -> scores [samples, outputs]``.

    Adapters (``TorchMember``, ``OnnxMember``, ``SklearnMember``, ``HFMember``,
    ``KerasMember``) implement :meth:`_predict`, :meth:`save`, :meth:`load_saved` and
    :meth:`fingerprint`. Build them with :func:`modelfusion.load_member`.

    Parameters
    ----------
    name : str
        Unique name within an ensemble; used in tables, errors and the bundle.
    task : {"classification", "multilabel", "regression"}
    output_kind : {"proba", "logits", "values"}
        What :meth:`predict` returns; the prediction store converts consistently.
    classes : sequence, optional
        Class labels in output-column order; ``None`` means ``0..n_outputs-1``.
    preprocess : callable, optional
        Applied to every batch before the model sees it (per-member preprocessing).

    Examples
    --------
    >>> member = load_member(fitted_logistic_regression, name="logreg")
    >>> member.predict(X[:4]).shape
    (4, 10)
    """

    framework: ClassVar[str] = "unknown"

    def __init__(
        self,
        *,
        name: str,
        task: Task | None = "classification",
        output_kind: OutputKind | None = "proba",
        classes: Sequence[Any] | np.ndarray | None = None,
        n_outputs: int | None = None,
        preprocess: Callable[[Any], Any] | None = None,
        source_path: str | Path | None = None,
    ):
        self.name = str(name)
        self.task = check_task(task or "classification")
        self.output_kind = check_kind(output_kind or ("values" if self.task == "regression" else "proba"))
        if self.task == "regression" and self.output_kind != "values":
            raise MemberLoadError(f"member {name!r}: regression members emit 'values', not {output_kind!r}")
        self.classes = None if classes is None else np.asarray(classes)
        self.n_outputs = (
            n_outputs if n_outputs is not None else (None if self.classes is None else len(self.classes))
        )
        self.preprocess = preprocess
        #: the config/manifest form of ``preprocess`` (what a bundle saves and ONNX export bakes in)
        self.preprocess_spec: Any = None
        self.source_path = None if source_path is None else Path(source_path)

    # -- prediction -------------------------------------------------------------------
    @abstractmethod
    def _predict(self, batch: Any) -> np.ndarray:
        """Run the model on one (already preprocessed) batch; return [samples, outputs]."""

    def predict(self, batch: Any) -> np.ndarray:
        """Scores of kind :attr:`output_kind` for a batch: float array [samples, outputs]."""
        if self.preprocess is not None:
            batch = self.preprocess(batch)
        out = np.asarray(self._predict(batch))
        if out.ndim == 1:
            out = out[:, None]
        if out.ndim != 2:
            raise PredictionError(
                f"member {self.name!r} returned an array of shape {out.shape}; expected [samples, outputs]"
            )
        if self.n_outputs is None:
            self.n_outputs = out.shape[1]
        return out.astype(np.float32, copy=False)

    def predict_proba(self, batch: Any) -> np.ndarray:
        """Class probabilities [samples, classes] (binary single-column outputs are expanded)."""
        return to_proba(self.predict(batch), self.output_kind, self.task)

    # -- description -------------------------------------------------------------------
    @property
    def n_parameters(self) -> int | None:
        """Number of learned parameters, when the framework can tell."""
        return None

    @property
    def file_size(self) -> int | None:
        """Size in bytes of the file the member was loaded from (None for in-memory objects)."""
        if self.source_path is not None and self.source_path.exists():
            if self.source_path.is_dir():
                return sum(p.stat().st_size for p in self.source_path.rglob("*") if p.is_file())
            return self.source_path.stat().st_size
        return None

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary used by reports and manifests."""
        return {
            "name": self.name,
            "framework": self.framework,
            "task": self.task,
            "output_kind": self.output_kind,
            "n_outputs": self.n_outputs,
            "classes": None if self.classes is None else self.classes.tolist(),
            "n_parameters": self.n_parameters,
            "file_size": self.file_size,
        }

    # -- as one ONNX graph ---------------------------------------------------------------
    def to_onnx(self, example: np.ndarray, opset: int) -> MemberGraph:
        """This member as an ONNX graph with one input (its preprocessed input) and one output (its
        raw scores), given ``example`` rows of that input. Adapters that convert override it."""
        raise ExportError(
            f"member {self.name!r} ({self.framework}) has no ONNX converter here; Hugging Face members are run "
            "by the member executor (engine='members'), or export them with optimum and load the .onnx file "
            "as an ONNX member"
        )

    def example_input(self) -> np.ndarray | None:
        """A few rows of what :meth:`predict` takes (before ``preprocess``), when the model tells its
        input shape (random, seeded); None when it does not (then export needs ``example_input=``)."""
        shape = self.sample_shape()
        return None if shape is None else np.random.default_rng(0).random((8, *shape), dtype=np.float32)

    def sample_shape(self) -> tuple[int, ...] | None:
        """The shape of one sample the model takes, when it records one (else None)."""
        return None

    def onnx_opset(self) -> int | None:
        """The default-domain opset of the member's own ONNX graph, for members that are one."""
        return None

    # -- identity and persistence ----------------------------------------------------
    @abstractmethod
    def fingerprint(self) -> str:
        """A hash of the model's weights or file; the prediction cache is keyed by it."""

    def cache_settings(self) -> dict[str, Any]:
        """Settings beyond the weights that change the outputs (a tokenizer, a max length).

        They join :meth:`fingerprint` in the prediction cache's key; JSON-serialisable values.
        """
        return {}

    @abstractmethod
    def save(self, directory: Path) -> dict[str, Any]:
        """Write the member's own files into ``directory``; return the options to reload it.

        The returned dict must hold ``"file"`` (the file or folder name written) and may
        hold adapter options; :meth:`load_saved` receives it back.
        """

    @classmethod
    @abstractmethod
    def load_saved(cls, directory: Path, spec: dict[str, Any], *, trust: bool = False) -> Member:
        """Rebuild a member from what :meth:`save` wrote.

        The spec and files may come from a downloaded bundle: without ``trust`` nothing in
        them may run code (no pickle, no import named by the spec).
        """

    def _common_spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "framework": self.framework,
            "task": self.task,
            "output_kind": self.output_kind,
            "n_outputs": self.n_outputs,
            "classes": None if self.classes is None else self.classes.tolist(),
        }

    @staticmethod
    def _common_kwargs(spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": spec["name"],
            "task": spec.get("task", "classification"),
            "output_kind": spec.get("output_kind", "proba"),
            "classes": spec.get("classes"),
            "n_outputs": spec.get("n_outputs"),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, task={self.task!r}, "
            f"output_kind={self.output_kind!r}, n_outputs={self.n_outputs})"
        )


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file (or of every file below a folder, in sorted order)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


def sha256_arrays(arrays: Sequence[np.ndarray]) -> str:
    """Hex sha256 over a sequence of arrays (shape, dtype and bytes)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        try:
            h.update(memoryview(a).cast("B"))  # type: ignore[arg-type]  # numpy arrays are buffers; no copy
        except (TypeError, ValueError):  # dtypes the buffer protocol cannot express
            h.update(a.tobytes())
    return h.hexdigest()
