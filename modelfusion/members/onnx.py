"""ONNX members: an ``.onnx`` file (or model proto, or bytes) run by onnxruntime."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelfusion.errors import (
    ExportError,
    InputError,
    MemberLoadError,
    MemberSaveError,
    PredictionError,
    UnsafeFormatError,
)
from modelfusion.members.base import Member, MemberOptions, sha256_file
from modelfusion.runtime.member_onnx import MemberGraph, default_opset, onnx_member_graph
from modelfusion.runtime.session import open_session

if TYPE_CHECKING:
    from typing_extensions import Unpack

# onnxruntime type strings -> numpy dtypes the batch is cast to.
_ORT_DTYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
    "tensor(string)": object,
}


class OnnxMember(Member):
    """An ONNX model as an ensemble member, run by an ``onnxruntime.InferenceSession``.

    The batch is cast to the model's input dtype. A model with several inputs takes a dict
    ``{input_name: array}``. A model exported with a fixed batch size runs in chunks of that
    size (the last chunk padded); :attr:`fixed_batch_size` is ``None`` for a dynamic batch.

    Parameters
    ----------
    model : path, ``onnx.ModelProto``, serialized bytes or ``onnxruntime.InferenceSession``
    **options : name, task, classes, n_outputs, preprocess, source_path
        :class:`~modelfusion.members.base.MemberOptions`, declared once for every adapter.
    output_kind : {"logits", "proba", "values"}, optional
        Default ``"proba"`` when the chosen output is named like ``*prob*`` (scikit-learn
        converters), ``"values"`` for regression, else ``"logits"``.
    output_name : str, optional
        Which graph output to return; default the first float tensor of rank 2 (then any
        float tensor, then a list of ``{class: probability}`` dicts from a ZipMap).
    providers : list of str, optional
        onnxruntime execution providers (default ``["CPUExecutionProvider"]``).

    Examples
    --------
    >>> member = OnnxMember("models/digits.onnx", name="digits")
    >>> member.predict(X[:4]).shape
    (4, 10)
    """

    framework = "onnx"

    def __init__(
        self,
        model: str | Path | bytes | Any,
        *,
        output_name: str | None = None,
        providers: Sequence[str] | None = None,
        **options: Unpack[MemberOptions],
    ):
        name = options.setdefault("name", "onnx")
        task = options["task"] = options.get("task") or "classification"
        self.model_path: Path | None = None
        self._model_bytes: bytes | None = None
        self.session = self._open_session(model, name, providers)
        if self.model_path is not None and options.get("source_path") is None:
            options["source_path"] = self.model_path
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_dtypes = {i.name: _ORT_DTYPES.get(i.type, np.float32) for i in self.session.get_inputs()}
        batch_dim = self.session.get_inputs()[0].shape[0] if self.session.get_inputs()[0].shape else None
        self.fixed_batch_size: int | None = (
            batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        )
        outputs = {o.name: o for o in self.session.get_outputs()}
        self.output_name = output_name or _default_output(list(outputs.values()))
        if self.output_name not in outputs:
            raise MemberLoadError(
                f"member {name!r}: the model has no output {self.output_name!r}; its outputs are "
                f"{', '.join(outputs)}"
            )
        self._zipmap = outputs[self.output_name].type.startswith("seq(map(")
        probabilistic = self._zipmap or "prob" in self.output_name.lower()
        if options.get("output_kind") is None:
            options["output_kind"] = (
                "values" if task == "regression" else ("proba" if probabilistic else "logits")
            )
        if options.get("classes") is None and probabilistic and task != "regression":
            options["classes"] = _ml_classifier_labels(self._proto(load_weights=False))
        super().__init__(**options)

    def _open_session(self, model: Any, name: str, providers: Sequence[str] | None) -> Any:
        import onnxruntime as ort

        if isinstance(model, ort.InferenceSession):
            path = getattr(model, "_model_path", None)
            self.model_path = Path(path) if path else None
            self._model_bytes = getattr(model, "_model_bytes", None)
            return model
        if isinstance(model, (str, Path)):
            self.model_path = Path(model)
            source: Any = str(model)
            where = f"'{model}'"
        elif isinstance(model, (bytes, bytearray)):
            self._model_bytes = source = bytes(model)
            where = f"the bytes given for member {name!r}"
        elif hasattr(model, "SerializeToString"):
            self._model_bytes = source = model.SerializeToString()
            where = f"the onnx.ModelProto given for member {name!r}"
        else:
            raise MemberLoadError(
                f"member {name!r}: OnnxMember takes a path, an onnx.ModelProto, bytes or an "
                f"onnxruntime.InferenceSession, got {type(model).__name__}"
            )
        try:
            return open_session(source, list(providers or ["CPUExecutionProvider"]))
        except Exception as exc:
            raise MemberLoadError(
                f"onnxruntime could not load {where} as an ONNX model ({type(exc).__name__}: {exc}); "
                "the file is corrupt, truncated or not ONNX"
            ) from exc

    def _proto(self, load_weights: bool = True) -> Any:
        import onnx

        if self.model_path is not None:
            return onnx.load(str(self.model_path), load_external_data=load_weights)
        if self._model_bytes is not None:
            return onnx.load_from_string(self._model_bytes)
        return None

    # -- prediction -------------------------------------------------------------------------
    def _predict(self, batch: Any) -> np.ndarray:
        feeds = self._feeds(batch)
        n = len(next(iter(feeds.values())))
        size = self.fixed_batch_size
        if size is None or n == size:
            return self._run(feeds)
        chunks = []
        for lo in range(0, n, size):
            chunk = {k: v[lo : lo + size] for k, v in feeds.items()}
            rows = len(next(iter(chunk.values())))
            if rows < size:  # pad by repeating the last row; padded outputs are dropped
                chunk = {
                    k: np.concatenate([v, np.repeat(v[-1:], size - rows, axis=0)]) for k, v in chunk.items()
                }
            chunks.append(self._run(chunk)[:rows])
        return np.concatenate(chunks, axis=0)

    def _feeds(self, batch: Any) -> dict[str, np.ndarray]:
        if isinstance(batch, Mapping):
            missing = [n for n in self.input_names if n not in batch]
            if missing:
                raise InputError(
                    f"member {self.name!r}: the batch has no entry for input(s) {', '.join(missing)}; "
                    f"the model takes {', '.join(self.input_names)}"
                )
            return {n: self._cast(n, batch[n]) for n in self.input_names}
        if len(self.input_names) > 1:
            raise InputError(
                f"member {self.name!r}: the model has {len(self.input_names)} inputs "
                f"({', '.join(self.input_names)}); pass the batch as a dict {{input_name: array}}"
            )
        return {self.input_names[0]: self._cast(self.input_names[0], batch)}

    def _cast(self, input_name: str, values: Any) -> np.ndarray:
        if hasattr(values, "detach") and hasattr(values, "numpy"):
            values = values.detach().cpu().numpy()
        return np.asarray(values, dtype=self.input_dtypes[input_name])

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        with onnxruntime_errors(f"member {self.name!r}"):
            (out,) = self.session.run([self.output_name], feeds)
        if self._zipmap:
            return _zipmap_to_array(out, self.classes, self.name)
        return np.asarray(out)

    # -- description and persistence ----------------------------------------------------------
    @property
    def n_parameters(self) -> int | None:
        """Elements in the graph's initializers (plus coefficient lists of ONNX-ML operators)."""
        proto = self._proto(load_weights=False)
        if proto is None:
            return None
        total = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
        for node in proto.graph.node:
            if node.domain == "ai.onnx.ml":
                total += sum(len(a.floats) for a in node.attribute)
        return total

    def to_onnx(self, example: np.ndarray, opset: int) -> MemberGraph:
        """The graph itself, cut down to its one input and the scores output, at ``opset``."""
        return _onnx_to_onnx(self, example, opset)

    def sample_shape(self) -> tuple[int, ...] | None:
        dims = self.session.get_inputs()[0].shape[1:]
        return tuple(dims) if all(isinstance(d, int) and d > 0 for d in dims) else None

    def onnx_opset(self) -> int | None:
        proto = self._proto(load_weights=False)
        return None if proto is None else default_opset(proto)

    def fingerprint(self) -> str:
        """sha256 of the ONNX file (or of the serialized model)."""
        if self.model_path is not None:
            return sha256_file(self.model_path)
        if self._model_bytes is not None:
            return hashlib.sha256(self._model_bytes).hexdigest()
        raise MemberSaveError(
            f"member {self.name!r} wraps an InferenceSession whose model bytes are unknown; "
            "load it from the .onnx file instead"
        )

    def save(self, directory: Path) -> dict[str, Any]:
        """Copy the model to ``model.onnx``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / "model.onnx"
        if self.model_path is not None and external_data_files(self.model_path):
            _save_with_weights(self.model_path, target)
        elif self.model_path is not None:
            shutil.copyfile(self.model_path, target)
        elif self._model_bytes is not None:
            target.write_bytes(self._model_bytes)
        else:
            raise MemberSaveError(
                f"member {self.name!r} wraps an InferenceSession whose model bytes are unknown; "
                "load it from the .onnx file instead"
            )
        return {**self._common_spec(), "file": "model.onnx", "output_name": self.output_name}

    @classmethod
    def load_saved(cls, directory: Path, spec: dict[str, Any], *, trust: bool = False) -> OnnxMember:
        """Rebuild a member from what :meth:`save` wrote (external weight files must lie in its folder)."""
        path = Path(directory) / spec["file"]
        real = Path(directory).resolve()
        for location in external_data_files(path):
            if not (path.parent / location).resolve().is_relative_to(real):
                raise MemberLoadError(
                    f"member {spec.get('name')!r}: '{path}' reads weights from {location!r}, outside its "
                    "bundle folder; a bundle must carry every file it loads"
                )
        if not trust:
            check_onnx_allocations(path, owner=f"member {spec.get('name')!r}")
        return cls(path, **cls._common_kwargs(spec), output_name=spec.get("output_name"))


#: Largest tensor (elements) a graph from an untrusted bundle may make from a few bytes: 2**28
#: float32 values are 1 GiB. Tensors whose size depends on the batch are not counted.
MAX_STATIC_ELEMENTS = 1 << 28


def check_onnx_allocations(path: Path, *, owner: str) -> None:
    """Raise UnsafeFormatError when a graph makes a tensor of a fixed size beyond :data:`MAX_STATIC_ELEMENTS`.

    A 300-byte graph can ask for a 4 GiB ``ConstantOfShape`` on every call. ONNX shape
    inference (with constants propagated) gives each tensor's size; sizes that follow the
    input's batch are left alone, as are the graph's own weights (their bytes are in the file).
    Graphs whose shapes cannot be inferred are refused only if inference itself fails badly.
    """
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception:  # onnxruntime reports malformed graphs when the member opens
        return
    weights = {t.name for t in proto.graph.initializer}
    for info in [*inferred.graph.value_info, *inferred.graph.output]:
        if info.name in weights or not info.type.HasField("tensor_type"):
            continue
        dims = info.type.tensor_type.shape.dim
        if not dims or any(not d.HasField("dim_value") for d in dims):
            continue  # symbolic (batch-dependent) or unknown: scales with the input
        elements = 1
        for d in dims:
            elements *= max(int(d.dim_value), 0)
        if elements > MAX_STATIC_ELEMENTS:
            raise UnsafeFormatError(
                f"{owner}: '{path}' builds tensor {info.name!r} of shape {[d.dim_value for d in dims]} "
                f"({elements:,} values) whatever the input; a graph from an untrusted bundle may make at most "
                f"{MAX_STATIC_ELEMENTS:,}. Load it with trust=True (CLI: --trust) if the model really needs it"
            )


#: Graphs up to this size are saved with their external weights inlined (protobuf's limit is 2 GiB).
_INLINE_LIMIT = 1 << 30


def external_data_files(path: str | Path) -> list[str]:
    """The external-data locations an ONNX file's tensors name (empty for a self-contained graph)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ONNX: onnxruntime reports it when the member opens
        return []
    tensors = list(proto.graph.initializer)
    for node in proto.graph.node:  # Constant nodes may hold external tensors too
        tensors += [a.t for a in node.attribute if a.HasField("t")]
    return sorted({ExternalDataInfo(t).location for t in tensors if uses_external_data(t)})


def _save_with_weights(source: Path, target: Path) -> None:
    """Copy an ONNX graph whose weights live in other files, bringing the weights with it.

    Inlined when the graph fits in one protobuf, else into ``model.onnx.data`` beside it.
    """
    import onnx

    proto = onnx.load(str(source), load_external_data=True)
    if proto.ByteSize() < _INLINE_LIMIT:
        onnx.save_model(proto, str(target))
    else:
        onnx.save_model(
            proto,
            str(target),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=f"{target.name}.data",
        )


@contextlib.contextmanager
def onnxruntime_errors(what: str) -> Iterator[None]:
    """Turn ONNX Runtime's own exceptions (``InvalidArgument``, ``Fail``: plain ``Exception`` s) into ValueError.

    Their text names the input whose shape or type is wrong; ``what`` says whose graph it is.
    """
    try:
        yield
    except Exception as exc:
        if not type(exc).__module__.startswith("onnxruntime"):
            raise
        message = str(exc).split("] ", 1)[
            -1
        ]  # drop ORT's "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT :" prefix
        raise InputError(f"{what} cannot run on this input: {message}") from None


def load_onnx(source: Any, *, name: str, trust: bool = False, **options: Any) -> OnnxMember:
    """An :class:`OnnxMember` from a path, proto, bytes or session (``trust`` is not needed)."""
    return OnnxMember(source, name=name, **options)


def _default_output(outputs: list[Any]) -> str:
    floats = [o for o in outputs if o.type in ("tensor(float)", "tensor(double)", "tensor(float16)")]
    for o in floats:
        if o.shape is not None and len(o.shape) == 2:
            return o.name
    if floats:
        return floats[0].name
    for o in outputs:
        if o.type.startswith("seq(map("):
            return o.name
    raise MemberLoadError(
        "the ONNX model has no float output: "
        + ", ".join(f"{o.name} ({o.type})" for o in outputs)
        + "; pass output_name= to choose one"
    )


def _ml_classifier_labels(proto: Any) -> list[Any] | None:
    """Class labels of the one ONNX-ML classifier node (scikit-learn converters), if any."""
    if proto is None:
        return None
    found = []
    for node in proto.graph.node:
        if node.domain == "ai.onnx.ml" and node.op_type.endswith("Classifier"):
            for attr in node.attribute:
                if attr.name == "classlabels_ints":
                    found.append(list(attr.ints))
                elif attr.name == "classlabels_strings":
                    found.append([s.decode() for s in attr.strings])
    return found[0] if len(found) == 1 else None


def _zipmap_to_array(rows: list[dict], classes: np.ndarray | None, name: str) -> np.ndarray:
    """[{class: probability}, ...] from a ZipMap output -> float array [samples, classes]."""
    if not rows:
        return np.zeros((0, 0 if classes is None else len(classes)), np.float32)
    keys = list(rows[0].keys()) if classes is None else classes.tolist()
    try:
        return np.array([[row[k] for k in keys] for row in rows], dtype=np.float32)
    except KeyError as exc:
        raise PredictionError(
            f"member {name!r}: the ZipMap output has classes {list(rows[0])}, expected {keys}"
        ) from exc


# -- as one ONNX graph (see modelfusion.runtime.member_onnx) ------------------------------------


def _onnx_to_onnx(member: Any, example: np.ndarray, opset: int) -> MemberGraph:
    proto = member._proto(load_weights=True)
    if proto is None:
        raise ExportError(
            f"member {member.name!r} wraps an InferenceSession whose model bytes are unknown; load it from the "
            ".onnx file so it can be merged"
        )
    return onnx_member_graph(proto, member.output_name, member.name, opset)
