"""scikit-learn members: a fitted estimator in memory, a ``.skops`` file, or (trusted) pickle."""

from __future__ import annotations

import contextlib
import hashlib
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelfusion.dependencies import require
from modelfusion.errors import ExportError, MemberLoadError, PredictionError, UnsafeFormatError
from modelfusion.members.base import Member, MemberOptions
from modelfusion.outputs import OutputKind
from modelfusion.runtime.member_onnx import MemberGraph, first_line, onnx_member_graph
from modelfusion.runtime.trees import compact_tree_ensembles
from modelfusion.safe_skops import load_skops

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
# Types from these packages may be trusted when reloading a bundle this library wrote.


if TYPE_CHECKING:
    from typing_extensions import Unpack


#: The estimator methods a member may score with (a saved spec names one: never any other attribute).
SCORING_METHODS = ("predict_proba", "decision_function", "predict")


class SklearnMember(Member):
    """A fitted scikit-learn estimator (or pipeline) as an ensemble member.

    Classifiers are scored with ``predict_proba`` (``output_kind="proba"``, classes from
    ``classes_``); without it, ``decision_function`` gives logits (a binary classifier
    emits one column). Regressors are scored with ``predict`` (``task="regression"``).

    Parameters
    ----------
    estimator : a fitted scikit-learn estimator or pipeline
    **options
        :class:`~modelfusion.members.base.MemberOptions` (name, task, output_kind, classes,
        n_outputs, preprocess, source_path); task, output kind and classes are read from the
        estimator unless given.
    method : {"predict_proba", "decision_function", "predict"}, optional
        Force the scoring method.

    Raises
    ------
    MemberLoadError
        if the estimator is not fitted.

    Examples
    --------
    >>> clf = LogisticRegression(max_iter=200).fit(X, y)
    >>> member = SklearnMember(clf, name="logreg")
    >>> member.predict(X[:4]).shape
    (4, 10)
    """

    framework = "sklearn"

    def __init__(self, estimator: Any, *, method: str | None = None, **options: Unpack[MemberOptions]):
        from sklearn.base import is_regressor
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        name = options.setdefault("name", "sklearn")
        try:
            check_is_fitted(estimator)
        except NotFittedError as exc:
            raise MemberLoadError(
                f"member {name!r}: {type(estimator).__name__} is not fitted yet; call fit(X, y) before "
                "making it a member"
            ) from exc
        except TypeError as exc:
            raise MemberLoadError(
                f"member {name!r}: {type(estimator).__name__} is not a scikit-learn estimator ({exc})"
            ) from exc
        self.estimator = estimator
        task = options["task"] = options.get("task") or (
            "regression" if is_regressor(estimator) else "classification"
        )
        if method is None:
            if task == "regression":
                method = "predict"
            elif hasattr(estimator, "predict_proba"):
                method = "predict_proba"
            elif hasattr(estimator, "decision_function"):
                method = "decision_function"
            else:
                method = "predict"
        if method not in SCORING_METHODS:
            raise MemberLoadError(
                f"member {name!r}: method must be one of {', '.join(SCORING_METHODS)}, got {method!r}"
            )
        if not hasattr(estimator, method):
            raise MemberLoadError(f"member {name!r}: {type(estimator).__name__} has no method {method!r}")
        self.method = method
        if options.get("output_kind") is None:
            kinds: dict[str, OutputKind] = {"predict_proba": "proba", "decision_function": "logits"}
            options["output_kind"] = kinds.get(method, "values")
            if task != "regression" and method == "predict":
                options["output_kind"] = "proba"  # labels are turned into one-hot rows
        if options.get("classes") is None and task != "regression":
            classes = getattr(estimator, "classes_", None)
            # multi-output classifiers have one array per output: no single class list
            options["classes"] = None if isinstance(classes, list) else classes
        super().__init__(**options)

    def _predict(self, batch: Any) -> np.ndarray:
        if hasattr(batch, "detach") and hasattr(batch, "numpy"):
            batch = batch.detach().cpu().numpy()
        if isinstance(batch, np.ndarray) and batch.dtype == np.float32:
            # scikit-learn computes in the input's precision; some estimators (GaussianNB) round
            # log-probabilities badly in float32, so score in float64 as they are usually trained.
            batch = batch.astype(np.float64)
        out = getattr(self.estimator, self.method)(batch)
        if isinstance(out, list):  # multi-label predict_proba: one [samples, 2] array per label
            return np.stack([np.asarray(o)[:, -1] for o in out], axis=1)
        out = np.asarray(out)
        if self.method == "predict" and self.task != "regression":
            if out.ndim == 2:  # multi-label indicator rows
                return out.astype(np.float32)
            if self.classes is None:
                raise PredictionError(
                    f"member {self.name!r} scores with predict(), so labels become one-hot rows, but its "
                    "classes are unknown; pass classes= in column order"
                )
            return (out[:, None] == self.classes[None, :]).astype(np.float32)
        return out.reshape(len(out), -1)

    @property
    def n_parameters(self) -> int:
        """Approximate: elements of the numeric array attributes ending in ``_`` (nested estimators too)."""
        return _count_fitted_elements(self.estimator, set())

    def to_onnx(self, example: np.ndarray, opset: int) -> MemberGraph:
        """The estimator through skl2onnx (float64 where the kernels allow, as :meth:`predict` scores)."""
        return _sklearn_to_onnx(self, example, opset)

    def sample_shape(self) -> tuple[int, ...] | None:
        n = getattr(self.estimator, "n_features_in_", None)
        return None if n is None else (int(n),)

    def fingerprint(self) -> str:
        """sha256 over the estimator's state (arrays by value; nothing is ever unpickled)."""
        h = hashlib.sha256()
        try:
            _digest(self.estimator, h, set())
        except RecursionError:  # pathologically deep object graphs: hash the pickle instead
            return hashlib.sha256(pickle.dumps(self.estimator, protocol=4)).hexdigest()
        return h.hexdigest()

    def save(self, directory: Path) -> dict[str, Any]:
        """Write ``model.skops`` (safe to load: no pickle)."""
        import skops.io as sio

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        sio.dump(self.estimator, directory / "model.skops")
        return {**self._common_spec(), "file": "model.skops", "method": self.method}

    @classmethod
    def load_saved(cls, directory: Path, spec: dict[str, Any], *, trust: bool = False) -> SklearnMember:
        """Reload ``model.skops``, trusting only scikit-learn, numpy and scipy classes."""
        path = Path(directory) / spec["file"]
        estimator = load_skops(path, trust=False, owner=f"member {spec['name']!r}")
        return cls(estimator, **cls._common_kwargs(spec), method=spec.get("method"), source_path=path)


def load_sklearn(
    source: Any, *, name: str, trust: bool = False, method: str | None = None, **member_options: Any
) -> SklearnMember:
    """A :class:`SklearnMember` from an estimator, a ``.skops`` file, or a pickle (``trust=True`` only)."""
    if not isinstance(source, (str, Path)):
        return SklearnMember(source, name=name, method=method, **member_options)
    path = Path(source)
    if path.suffix in PICKLE_SUFFIXES:
        if not trust:
            raise UnsafeFormatError(
                f"'{path}' is a pickle: unpickling runs arbitrary code from the file. Pass trust=True only "
                "if you trust its source, or re-save the model with skops.io.dump(model, 'model.skops')."
            )
        import joblib

        estimator = joblib.load(path)
    else:
        estimator = load_skops(path, trust=trust)
    return SklearnMember(estimator, name=name, method=method, source_path=path, **member_options)


def _count_fitted_elements(obj: Any, seen: set[int]) -> int:
    from sklearn.base import BaseEstimator

    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    total = 0
    for key, value in vars(obj).items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, tuple) and len(v) >= 2:  # Pipeline steps: (name, estimator)
                v = v[1]
            if isinstance(v, BaseEstimator):
                total += _count_fitted_elements(v, seen)
            elif hasattr(v, "node_count") and isinstance(getattr(v, "value", None), np.ndarray):
                total += 2 * v.node_count + v.value.size  # a tree: feature and threshold per node
            elif (
                key.endswith("_")
                and isinstance(v, np.ndarray)
                and v.dtype.kind in "fiuc"
                and id(v) not in seen
            ):
                seen.add(id(v))
                total += v.size
    return total


def _digest(obj: Any, h: Any, active: set[int]) -> None:
    """Feed a deterministic description of ``obj``'s state into hash ``h``.

    Arrays are hashed by value (structured arrays field by field: their padding bytes are
    uninitialised, which is why ``pickle.dumps`` of a tree differs between two loads).
    """
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    elif isinstance(obj, np.ndarray):
        h.update(f"nd{obj.shape}{obj.dtype.str};".encode())
        if obj.dtype.names:
            for field in obj.dtype.names:
                _digest(np.ascontiguousarray(obj[field]), h, active)
        elif obj.dtype.kind == "O":
            _digest(obj.ravel().tolist(), h, active)
        else:
            h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, np.generic):
        _digest(obj.item() if obj.dtype.kind != "V" else np.asarray(obj), h, active)
    elif isinstance(obj, np.dtype):
        h.update(f"dtype:{obj.str}{obj.descr};".encode())
    elif isinstance(obj, type) or hasattr(obj, "__qualname__"):  # classes and functions, by name
        h.update(f"ref:{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))};".encode())
    elif id(obj) in active:
        h.update(b"cycle;")
    else:
        active.add(id(obj))
        try:
            if isinstance(obj, dict):
                h.update(f"dict{len(obj)};".encode())
                for key in sorted(obj, key=repr):
                    _digest(key, h, active)
                    _digest(obj[key], h, active)
            elif isinstance(obj, (list, tuple)):
                h.update(f"{type(obj).__name__}{len(obj)};".encode())
                for item in obj:
                    _digest(item, h, active)
            elif isinstance(obj, (set, frozenset)):
                _digest(sorted(obj, key=repr), h, active)
            else:
                h.update(f"obj:{type(obj).__module__}.{type(obj).__qualname__};".encode())
                try:
                    reduced = obj.__reduce_ex__(4)
                except TypeError:  # not picklable (locks, generators): the type is all we can say
                    return
                _digest(reduced[1:3] if isinstance(reduced, tuple) else reduced, h, active)
        finally:
            active.discard(id(obj))


# -- as one ONNX graph (see modelfusion.runtime.member_onnx) ------------------------------------


def _sklearn_to_onnx(member: Any, example: np.ndarray, opset: int) -> MemberGraph:
    import onnxruntime as ort

    to_onnx = require("skl2onnx", purpose=f"member {member.name!r}: converting scikit-learn members").to_onnx
    X = np.asarray(example)
    if X.ndim != 2:
        raise ExportError(
            f"member {member.name!r}: scikit-learn members take [samples, features] input, got samples "
            f"shaped {list(X.shape[1:])}; add preprocess 'flatten'"
        )
    # SklearnMember scores float batches in float64 (GaussianNB's log-likelihoods lose ~1e-3 in
    # float32), so the graph does too; float32 where a converter or kernel has no double form.
    dtypes = (np.float64, np.float32) if X.dtype.kind in "fb" or X.dtype == np.uint8 else (np.int64,)
    final = member.estimator
    while hasattr(final, "steps"):  # options go to the pipeline's last step
        final = final.steps[-1][1]
    options: dict[str, Any] = {}
    if type(final).__name__.startswith("KNeighbors"):
        options["optim"] = "cdist"  # ORT's CDist kernel: ~15x faster than the default Scan loop
    if member.task != "regression":
        options["zipmap"] = False
        if member.method == "decision_function":
            options["raw_scores"] = True
        elif member.method != "predict_proba":
            raise ExportError(
                f"member {member.name!r} scores with {member.method}() (one-hot labels), which has no "
                "probability output in ONNX; use an estimator with predict_proba or decision_function"
            )
    failure: Exception | None = None
    for dtype in dtypes:
        try:
            with _int_attributes():
                proto = to_onnx(
                    member.estimator, X[:1].astype(dtype), options={id(final): options}, target_opset=opset
                )
            ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
            break
        except Exception as exc:
            failure = exc
    else:
        assert failure is not None  # the loop ran at least once
        raise ExportError(
            f"member {member.name!r}: skl2onnx cannot convert {type(member.estimator).__name__} "
            f"({type(failure).__name__}: {first_line(failure)})"
        ) from failure
    compact_tree_ensembles(proto)
    outputs = [o.name for o in proto.graph.output]
    # Classifiers emit (label, probabilities or raw scores); regressors emit (variable,).
    chosen = outputs[0] if member.task == "regression" else outputs[-1]
    return onnx_member_graph(proto, chosen, member.name, opset)


@contextlib.contextmanager
def _int_attributes() -> Iterator[None]:
    """skl2onnx 1.20 passes numpy bools/uint32 in integer attributes, which protobuf 5+ rejects.

    Seen converting HistGradientBoostingClassifier (``nodes_missing_value_tracks_true``);
    the values are cast to int while skl2onnx builds nodes.
    """
    import skl2onnx.common._container as container

    original = container.make_node

    def fix(value: Any) -> Any:
        if isinstance(value, (list, tuple)) and any(
            isinstance(v, (bool, np.bool_, np.integer)) for v in value
        ):
            return [int(v) if isinstance(v, (bool, np.bool_, np.integer)) else v for v in value]
        return int(value) if isinstance(value, np.bool_) else value

    def make_node(*args: Any, **attrs: Any) -> Any:
        return original(*args, **{k: fix(v) for k, v in attrs.items()})

    container.make_node = make_node
    try:
        yield
    finally:
        container.make_node = original
