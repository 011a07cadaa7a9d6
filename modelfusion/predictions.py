"""The prediction store: every member scored once, outputs cached on disk.

Fusion search evaluates dozens of strategies on the same member outputs. Scoring is the
expensive part, so :func:`score_members` runs each member once per dataset and caches its
outputs keyed by a hash of the member's weights and of the data; :class:`PredictionSet`
holds the result as one array ``[members, samples, outputs]``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from modelfusion.errors import ModelFusionWarning, PredictionError, UnknownNameError
from modelfusion.files import atomic_path
from modelfusion.members.base import Member, sha256_arrays
from modelfusion.members.loading import load_member
from modelfusion.outputs import EPS, OutputKind, Task, check_kind, check_task, to_log_proba, to_proba
from modelfusion.progress import progress_bar

_MEMMAP_THRESHOLD = 512 * 1024**2


class PredictionSet:
    """Outputs of several members on the same samples.

    Parameters
    ----------
    outputs : float array [members, samples, outputs] or a list of [samples, outputs]
    names : member names, one per member (default ``member_0``, ...)
    kind : {"proba", "logits", "values"}
    classes : class labels in column order (classification); default ``0..outputs-1``
    task : {"classification", "multilabel", "regression"}; inferred from ``kind`` if omitted
    labels : optional true labels [samples] (or [samples, labels] for multi-label)
    metadata : optional per-member dicts (framework, size, latency, ...), keyed by name

    Examples
    --------
    >>> preds = PredictionSet(np.stack([p_a, p_b]), names=["a", "b"], kind="proba")
    >>> preds.proba.shape
    (2, 500, 10)
    """

    def __init__(
        self,
        outputs: np.ndarray | Sequence[np.ndarray],
        names: Sequence[str] | None = None,
        kind: OutputKind = "proba",
        classes: Sequence[Any] | np.ndarray | None = None,
        task: Task | None = None,
        labels: np.ndarray | Sequence[Any] | None = None,
        metadata: Mapping[str, dict[str, Any]] | None = None,
    ):
        arr = outputs if isinstance(outputs, np.ndarray) else np.stack([np.asarray(o) for o in outputs])
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3:
            raise PredictionError(f"outputs must be shaped [members, samples, outputs], got {arr.shape}")
        self.kind = check_kind(kind)
        self.task = check_task(task or ("regression" if kind == "values" else "classification"))
        if self.task == "classification" and arr.shape[2] == 1:
            # A binary member that emits the positive class only: expand to two columns.
            arr = np.concatenate([np.zeros_like(arr), arr] if kind == "logits" else [1.0 - arr, arr], axis=2)
        if names is None:
            names = [f"member_{i}" for i in range(arr.shape[0])]
        names = [str(n) for n in names]
        if len(names) != arr.shape[0]:
            raise PredictionError(f"got {len(names)} names for {arr.shape[0]} members")
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise PredictionError(f"member names must be unique; repeated: {', '.join(dupes)}")
        self.names = names
        _check_finite(arr, names)
        if self.kind == "proba":
            _check_probabilities(arr, names, self.task)
        self.outputs = arr
        if classes is None and self.task != "regression":
            classes = np.arange(arr.shape[2])
        self.classes = None if classes is None else np.asarray(classes)
        if self.classes is not None and len(self.classes) != arr.shape[2]:
            raise PredictionError(f"{len(self.classes)} classes given for {arr.shape[2]} output columns")
        self.labels = None if labels is None else np.asarray(labels)
        if self.labels is not None and len(self.labels) != arr.shape[1]:
            raise PredictionError(f"{len(self.labels)} labels for {arr.shape[1]} samples")
        self.metadata = {n: dict((metadata or {}).get(n, {})) for n in names}

    # -- shape ------------------------------------------------------------------------
    @property
    def n_members(self) -> int:
        return self.outputs.shape[0]

    @property
    def n_samples(self) -> int:
        return self.outputs.shape[1]

    @property
    def n_outputs(self) -> int:
        return self.outputs.shape[2]

    def __len__(self) -> int:
        return self.n_samples

    # -- views --------------------------------------------------------------------------
    @cached_property
    def proba(self) -> np.ndarray:
        """Probabilities, float array [members, samples, classes] (classification only)."""
        p = to_proba(self.outputs, self.kind, self.task)
        if self.task == "classification" and self.kind == "proba":
            p = p / p.sum(axis=2, keepdims=True)  # absorb float32 rounding in members' outputs
        return np.ascontiguousarray(p, dtype=np.float32)

    @cached_property
    def log_proba(self) -> np.ndarray:
        """Log-probabilities [members, samples, classes], clipped at log(1e-12)."""
        if self.kind == "logits":
            return np.ascontiguousarray(to_log_proba(self.outputs, self.kind, self.task), dtype=np.float32)
        return np.log(np.clip(self.proba, EPS, None))

    @property
    def scores(self) -> np.ndarray:
        """What strategies fuse: probabilities for classification, values for regression."""
        return self.outputs if self.task == "regression" else self.proba

    def encode_labels(self, y: np.ndarray | Sequence[Any] | None = None) -> np.ndarray:
        """Map labels to column indices (classification) or return them as floats.

        Raises PredictionError naming labels that are not among :attr:`classes`.
        """
        y = self.labels if y is None else np.asarray(y)
        if y is None:
            raise PredictionError("no labels: pass y or build the PredictionSet with labels=")
        if len(y) != self.n_samples:
            raise PredictionError(f"{len(y)} labels for {self.n_samples} samples")
        if self.task == "regression":
            return y.astype(np.float64).reshape(self.n_samples, -1)
        if self.task == "multilabel":
            if y.shape != (self.n_samples, self.n_outputs):
                raise PredictionError(
                    f"multi-label targets must be [samples, {self.n_outputs}], got {y.shape}"
                )
            return y.astype(np.int64)
        classes = (
            self.classes if self.classes is not None else np.arange(self.n_outputs)
        )  # labels are indices
        return class_indices(y, classes)

    # -- slicing ------------------------------------------------------------------------
    def subset(self, members: Sequence[int | str]) -> PredictionSet:
        """The same samples for a subset of members (by index or name)."""
        idx = [self.names.index(m) if isinstance(m, str) else int(m) for m in members]
        return self._replace(self.outputs[idx], names=[self.names[i] for i in idx])

    def take(self, samples: np.ndarray | Sequence[int]) -> PredictionSet:
        """The same members on a subset of samples (used for cross-validation)."""
        samples = np.asarray(samples)
        out = self._replace(self.outputs[:, samples])
        out.labels = None if self.labels is None else self.labels[samples]
        for attr in ("proba", "log_proba"):  # slice cached views instead of recomputing
            if attr in self.__dict__:
                out.__dict__[attr] = self.__dict__[attr][:, samples]
        return out

    def member(self, name: str) -> np.ndarray:
        """One member's outputs [samples, outputs]."""
        if name not in self.names:
            raise UnknownNameError(f"no member {name!r}; members are {', '.join(self.names)}")
        return self.outputs[self.names.index(name)]

    def _replace(self, outputs: np.ndarray, names: Sequence[str] | None = None) -> PredictionSet:
        new = object.__new__(PredictionSet)
        new.outputs, new.kind, new.task, new.classes = outputs, self.kind, self.task, self.classes
        new.names = list(names if names is not None else self.names)
        new.labels = self.labels
        new.metadata = {n: self.metadata.get(n, {}) for n in new.names}
        return new

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write to an ``.npz`` file atomically (no pickle: classes and labels as plain arrays)."""
        path = Path(path)
        arrays = {"outputs": np.asarray(self.outputs)}
        # object arrays (labels from pandas, mixed types) would be pickled by np.savez: store text
        if self.classes is not None:
            arrays["classes"] = self.classes.astype(str) if self.classes.dtype == object else self.classes
        if self.labels is not None:
            arrays["labels"] = self.labels.astype(str) if self.labels.dtype == object else self.labels
        header = {"names": self.names, "kind": self.kind, "task": self.task, "metadata": self.metadata}
        arrays["header"] = np.frombuffer(json.dumps(header, default=str).encode(), dtype=np.uint8)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub types the first keyword only
        return path

    @classmethod
    def load(cls, path: str | Path) -> PredictionSet:
        """Read a file written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode())
            return cls(
                data["outputs"],
                names=header["names"],
                kind=header["kind"],
                task=header["task"],
                classes=data.get("classes", None),
                labels=data.get("labels", None),
                metadata=header.get("metadata"),
            )

    def __repr__(self) -> str:
        return (
            f"PredictionSet(members={self.n_members}, samples={self.n_samples}, outputs={self.n_outputs}, "
            f"kind={self.kind!r}, task={self.task!r}, names={self.names})"
        )


def class_indices(y: Any, classes: Any, *, whose: str = "the members'") -> np.ndarray:
    """The column index of each label in ``classes``; PredictionError naming labels that are not there.

    Examples
    --------
    >>> class_indices(["dog", "cat"], ["cat", "dog"])
    array([1, 0])
    """
    y, classes = np.asarray(y), np.asarray(classes)
    try:
        order = np.argsort(classes, kind="stable")
        pos = np.clip(np.searchsorted(classes[order], y), 0, len(classes) - 1)
        idx = order[pos]
        found = classes[idx] == y
    except (TypeError, ValueError):  # labels and classes of incomparable types
        idx, found = np.zeros(len(y), np.int64), np.zeros(len(y), bool)
    if not np.all(found):
        unknown = sorted({str(v) for v in y[~np.asarray(found, bool)]})
        raise PredictionError(
            f"labels {', '.join(unknown[:5])} are not among {whose} classes {classes.tolist()}"
        )
    return idx.astype(np.int64)


def as_prediction_set(predictions: PredictionSet | np.ndarray, kind: OutputKind = "proba") -> PredictionSet:
    """Accept a PredictionSet or a raw array [members, samples, outputs]."""
    if isinstance(predictions, PredictionSet):
        return predictions
    return PredictionSet(np.asarray(predictions), kind=kind)


def _check_finite(arr: np.ndarray, names: Sequence[str]) -> None:
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr).all(axis=2)
        if bad.any():
            counts = bad.sum(axis=1)
            worst = [f"{names[i]} ({int(c)} of {arr.shape[1]} samples)" for i, c in enumerate(counts) if c]
            raise PredictionError(f"NaN or inf in the outputs of member {', '.join(worst)}")


def _check_probabilities(arr: np.ndarray, names: Sequence[str], task: str) -> None:
    lo, hi = arr.min(axis=(1, 2)), arr.max(axis=(1, 2))
    for i, n in enumerate(names):
        if lo[i] < -1e-4 or hi[i] > 1 + 1e-4:
            raise PredictionError(
                f"member {n!r} declared output_kind='proba' but emits values in [{lo[i]:.3g}, {hi[i]:.3g}]; "
                "declare output_kind='logits' if these are unnormalised scores"
            )
    if task == "classification":
        sums = arr.sum(axis=2)
        dev = np.abs(sums - 1).max(axis=1)
        for i, n in enumerate(names):
            if dev[i] > 5e-2:
                raise PredictionError(
                    f"member {n!r} declared output_kind='proba' but its rows sum to values up to "
                    f"{dev[i]:.3g} away from 1; declare output_kind='logits' or normalise them"
                )


# -- scoring --------------------------------------------------------------------------------


def score_members(
    members: Sequence[Member | Any] | Mapping[str, Member | Any],
    data: Any,
    *,
    y: np.ndarray | Sequence[Any] | None = None,
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    progress: bool | None = None,
) -> PredictionSet:
    """Run every member over ``data`` once and collect a :class:`PredictionSet`.

    Parameters
    ----------
    members : members, or objects :func:`load_member` understands, or a ``{name: member}`` dict
    data : array-like sliceable by ``data[i:j]`` (numpy, tensor, list of strings, dict of
        arrays), or a dict ``{member_name: data}`` when members take different inputs
    y : true labels, stored on the result
    batch_size : samples per forward call
    cache_dir : folder for cached outputs, keyed by member fingerprint and data hash. A
        second call with the same member and data reads the cache and never runs the model.
    progress : show a progress bar (default: on in an interactive terminal, off in CI)

    Raises
    ------
    PredictionError
        when members disagree on sample count, task, output width or classes, or emit NaN/inf.
    """
    members = _as_member_list(members)
    check_member_list(members)
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    results, metadata = score_each(members, data, batch_size=batch_size, cache=cache, progress=progress)
    return assemble_predictions(members, results, y=y, metadata=metadata, cache=cache)


def _as_member_list(members: Sequence[Member | Any] | Mapping[str, Member | Any]) -> list[Member]:
    """Members as a list, loading with :func:`load_member` whatever is not a Member yet."""
    if isinstance(members, Mapping):
        return [load_member(m, name=n) if not isinstance(m, Member) else m for n, m in members.items()]
    return [m if isinstance(m, Member) else load_member(m) for m in members]


def check_member_list(members: Sequence[Any]) -> None:
    """Raise PredictionError unless there is at least one member, names are unique and tasks agree.

    ``members`` need ``name`` and ``task`` attributes (members, or descriptions of them).
    """
    if not members:
        raise PredictionError("score_members needs at least one member")
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise PredictionError(
            f"member names must be unique; repeated: {', '.join(dupes)} (pass name= when loading)"
        )
    tasks = {m.task for m in members}
    if len(tasks) > 1:
        raise PredictionError(
            "members solve different tasks: "
            + ", ".join(f"{m.name}={m.task}" for m in members)
            + "; a torch, ONNX or Hugging Face member cannot tell its task from its outputs: set the run's "
            "task: (or the member's options: {task: ..., output_kind: values} for regression)"
        )


def score_each(
    members: Sequence[Member],
    data: Any,
    *,
    batch_size: int = 256,
    cache: Path | None = None,
    progress: bool | None = None,
) -> tuple[list[np.ndarray], dict[str, dict[str, Any]]]:
    """Each member's raw outputs on ``data`` (through the cache), before any cross-member step.

    Returns the outputs, one float array [samples, outputs] per member in member order, and
    per-member metadata keyed by name. :func:`assemble_predictions` turns them into a
    :class:`PredictionSet`; the two halves are split so that distributed scoring can run the
    first on each worker and the second once, on the gathered outputs.
    """
    names = [m.name for m in members]
    inputs = inputs_per_member(names, data)
    results: list[np.ndarray] = []
    metadata: dict[str, dict[str, Any]] = {}
    n_samples = None
    data_keys: dict[int, str | None] = {}  # hash each distinct input once, not once per member
    checked: set[int] = set()
    for x in inputs:
        if id(x) not in checked:
            check_finite_inputs(x)
            checked.add(id(x))
    with progress_bar(enabled=progress) as bar:
        for m, x in zip(members, inputs):
            if cache is not None and id(x) not in data_keys:
                data_keys[id(x)] = data_fingerprint(x)
            data_key = data_keys.get(id(x))
            out, meta = _score_one(m, x, batch_size=batch_size, cache=cache, data_key=data_key, bar=bar)
            if n_samples is not None and out.shape[0] != n_samples:
                raise PredictionError(
                    f"member {m.name!r} produced {out.shape[0]} samples, {names[0]!r} produced {n_samples}"
                )
            n_samples = out.shape[0]
            results.append(out)
            metadata[m.name] = {**m.describe(), **meta}
    return results, metadata


def check_finite_inputs(data: Any, source: str = "the input") -> None:
    """PredictionError naming the first row and column holding NaN or inf in a float array [samples, ...].

    Checked before any member runs, so the message is about the data, not about a member's outputs.
    """
    arr = data.detach().cpu().numpy() if hasattr(data, "detach") and hasattr(data, "numpy") else data
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fc" or arr.size == 0:
        return
    bad = ~np.isfinite(arr)
    if not bad.any():
        return
    where = np.argwhere(bad)[0]
    row, column = int(where[0]), tuple(int(i) for i in where[1:])
    place = f"column {column[0]}" if len(column) == 1 else f"position {list(column)}"
    raise PredictionError(
        f"{source} has {int(bad.sum())} NaN or infinite value(s), the first in row {row}, {place} "
        f"({arr[tuple(where)]!r}); fill or drop them before scoring (members cannot score missing values)"
    )


def inputs_per_member(names: Sequence[str], data: Any) -> list[Any]:
    """Each member's input: ``data[name]`` when ``data`` is a dict keyed by exactly the member
    names, else ``data`` itself (also a multimodal dict such as ``{"image": ..., "text": ...}``)."""
    if isinstance(data, Mapping) and set(data) == set(names):
        return [data[n] for n in names]
    return [data] * len(names)


def assemble_predictions(
    members: Sequence[Any],
    results: Sequence[np.ndarray],
    *,
    y: np.ndarray | Sequence[Any] | None = None,
    metadata: Mapping[str, dict[str, Any]] | None = None,
    cache: Path | None = None,
) -> PredictionSet:
    """One :class:`PredictionSet` from every member's raw outputs [samples, outputs], in member order.

    Puts outputs of mixed kinds on a common footing (probabilities when logits and
    probabilities mix), expands single-column binary outputs and aligns class columns to the
    first member's classes. ``members`` need ``name``, ``task``, ``output_kind`` and
    ``classes`` attributes (members, or descriptions of them).
    """
    results = list(results)
    names = [m.name for m in members]
    for m, r in zip(members, results):
        if r.shape[0] != results[0].shape[0]:
            raise PredictionError(
                f"member {m.name!r} produced {r.shape[0]} samples, {names[0]!r} produced {results[0].shape[0]}"
            )
    task = members[0].task
    _warn_probabilities_declared_as_logits(members, results)
    kinds = {m.output_kind for m in members}
    kind: OutputKind
    if task == "regression":
        kind = "values"
    elif len(kinds) == 1:
        kind = kinds.pop()
    else:  # mixed logits and probabilities: compare like with like
        kind = "proba"
        results = [
            r if m.output_kind == "proba" else to_proba(r, m.output_kind, task)
            for m, r in zip(members, results)
        ]
    if task == "classification":
        results = [
            to_proba(r, m.output_kind, task) if r.shape[1] == 1 and kind == "proba" else r
            for m, r in zip(members, results)
        ]
        if kind == "logits":
            results = [
                np.concatenate([np.zeros_like(r), r], axis=1) if r.shape[1] == 1 else r for r in results
            ]
    aligned, classes = align_classes(members, results)
    keys = [(metadata or {}).get(n, {}).get("cache_key") for n in names]
    stack_key = None if None in keys else hashlib.sha256("|".join(map(str, keys)).encode()).hexdigest()[:16]
    stacked = _stack(aligned, cache, stack_key)
    return PredictionSet(
        stacked, names=names, kind=kind, classes=classes, task=task, labels=y, metadata=metadata
    )


def _warn_probabilities_declared_as_logits(members: Sequence[Any], results: Sequence[np.ndarray]) -> None:
    """Warn when a member said to emit logits emits rows that are non-negative and sum to 1.

    Its outputs would go through softmax a second time, flattening them (a silent loss of
    accuracy and calibration).
    """
    for m, r in zip(members, results):
        if m.task != "classification" or m.output_kind != "logits" or r.shape[1] < 2 or not len(r):
            continue
        rows = np.asarray(r[: min(len(r), 4096)], dtype=np.float64)
        if (rows >= 0).all() and np.allclose(rows.sum(axis=1), 1.0, atol=1e-3):
            warnings.warn(
                f"member {m.name!r} is declared with output_kind 'logits', but its outputs are non-negative and "
                "every row sums to 1: they look like probabilities and would be softmaxed twice; set "
                "output_kind: proba for it",
                ModelFusionWarning,
                stacklevel=4,
            )


def align_classes(members: Sequence[Member], outputs: Sequence[np.ndarray]) -> tuple[list[np.ndarray], Any]:
    """Put every member's columns in the task's class order: the sorted union of the declared classes.

    Members that declare classes (scikit-learn's ``classes_``, a ``classes:`` option) are
    reordered by label; one trained on fewer classes gets probability 0 for the others (with a
    warning naming them). Members without class information emit columns in index order
    ``0..K-1``, which is the sorted order of the labels, so they are never read in another
    member's declared order. Raises PredictionError naming both members for a width that does
    not fit, or for two members whose class sets share nothing.
    """
    declared = [m for m in members if m.task == "classification" and m.classes is not None]
    ref_classes = task_classes(declared)
    if ref_classes is not None and not any(set(_declared(m)) == set(ref_classes.tolist()) for m in declared):
        a, b = next((a, b) for a in declared for b in declared if set(_declared(b)) - set(_declared(a)))
        raise PredictionError(
            f"member {b.name!r} predicts classes {_declared(b)} but {a.name!r} predicts "
            f"{_declared(a)}, and no member covers both; members must share one class set (a member "
            "may lack some classes of another, not add its own)"
        )
    ref_width = outputs[0].shape[1] if ref_classes is None else len(ref_classes)
    aligned = []
    for m, out in zip(members, outputs):
        if m.task != "classification" or m.classes is None or ref_classes is None:
            if out.shape[1] != ref_width:
                other = declared[0].name if declared else members[0].name
                raise PredictionError(
                    f"member {m.name!r} has {out.shape[1]} outputs but {other!r} has {ref_width}"
                    + (f" (classes {ref_classes.tolist()})" if ref_classes is not None else "")
                    + "; give the member its classes (options: classes: [...]) if it was trained on fewer"
                )
            aligned.append(out)
            continue
        if len(m.classes) != out.shape[1]:
            raise PredictionError(
                f"member {m.name!r} declares {len(m.classes)} classes but emits {out.shape[1]} columns"
            )
        own = _declared(m)
        order = {c: i for i, c in enumerate(own)}
        missing = [c for c in ref_classes.tolist() if c not in order]
        if missing:
            warnings.warn(
                f"member {m.name!r} was trained without class(es) {missing}: it gives them probability 0",
                ModelFusionWarning,
                stacklevel=4,
            )
            fill = np.full((out.shape[0], 1), _ABSENT.get(m.output_kind, 0.0), dtype=out.dtype)
            out = np.concatenate([out, fill], axis=1)
        perm = [order.get(c, len(own)) for c in ref_classes.tolist()]
        aligned.append(out if perm == list(range(out.shape[1])) else out[:, perm])
    return aligned, ref_classes


#: The output a member gives a class it never saw: probability 0, or a logit that softmax sends to 0.
_ABSENT = {"proba": 0.0, "logits": -1e9}


def _declared(member: Member) -> list[Any]:
    """The classes a member declares (it does: callers filter on ``classes is not None``)."""
    assert member.classes is not None
    return member.classes.tolist()


def task_classes(declared: Sequence[Member]) -> np.ndarray | None:
    """The sorted union of the classes the (classification) members declare; None when none declares any."""
    declared = [m for m in declared if m.task == "classification" and m.classes is not None]
    if not declared:
        return None
    union: list[Any] = []
    for m in declared:
        union += [c for c in _declared(m) if c not in union]
    try:
        return np.asarray(sorted(union))
    except TypeError:  # labels of mixed types cannot be sorted: keep the first member's order
        return np.asarray(union)


def _stack(outputs: list[np.ndarray], cache: Path | None, key: str | None) -> np.ndarray:
    """Stack member outputs; above the threshold, into a memory-mapped file in the cache.

    ``key`` identifies the members and the data (so the validation and test stacks never share
    a file); without one a fresh file name is used.
    """
    shape = (len(outputs), *outputs[0].shape)
    nbytes = int(np.prod(shape)) * 4
    if cache is not None and nbytes > _MEMMAP_THRESHOLD:
        fd, name = tempfile.mkstemp(prefix=".stack-", suffix=".npy.tmp", dir=cache)
        os.close(fd)
        arr = np.lib.format.open_memmap(name, mode="w+", dtype=np.float32, shape=shape)
        for i, o in enumerate(outputs):
            arr[i] = o
        arr.flush()
        del arr
        # Filled under a private name, then renamed: a run sharing the cache never maps a
        # stack another run is still writing.
        target = cache / f"stack-{key if key is not None else Path(name).stem.strip('.')}.npy"
        os.replace(name, target)
        return np.load(target, mmap_mode="r")
    return np.stack([np.asarray(o, dtype=np.float32) for o in outputs])


def member_cache_key(member: Member) -> str | None:
    """What identifies a member's outputs: its weights and every setting that changes them.

    None when the member has a preprocessing callable without a spec (it cannot be hashed,
    so its outputs are not cached).
    """
    spec = getattr(member, "preprocess_spec", None)
    if member.preprocess is not None and spec is None:
        return None
    settings = {
        "fingerprint": member.fingerprint(),
        "output_kind": member.output_kind,
        "classes": None if member.classes is None else [str(c) for c in member.classes.tolist()],
        "preprocess": spec,
        **{k: str(getattr(member, k)) for k in ("method", "output_name") if hasattr(member, k)},
        "settings": member.cache_settings(),
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _score_one(
    member: Member, data: Any, *, batch_size: int, cache: Path | None, data_key: str | None, bar
) -> tuple[np.ndarray, dict]:
    key = None
    if cache is not None and data_key is not None and (member_key := member_cache_key(member)) is not None:
        key = hashlib.sha256(f"{member_key}|{data_key}".encode()).hexdigest()[:24]
        hit = cache / f"{_safe(member.name)}-{key}.npy"
        if hit.exists():
            cached = _read_cached(hit, member.name)
            if cached is not None:
                out, meta = cached
                return out, {**meta, "cached": True, "cache_key": key}
    n = data_length(data)
    task = bar.add_task(f"scoring {member.name}", total=n)
    chunks = []
    start = time.perf_counter()
    for lo in range(0, n, batch_size):
        try:
            chunks.append(member.predict(slice_batch(data, lo, lo + batch_size)))
        except (ValueError, TypeError, RuntimeError, IndexError, KeyError) as e:
            raise PredictionError(
                f"member {member.name!r} failed on samples {lo}-{min(lo + batch_size, n)}: "
                f"{type(e).__name__}: {e}"
            ) from e
        bar.advance(task, min(batch_size, n - lo))
    seconds = time.perf_counter() - start
    out = np.concatenate(chunks, axis=0) if chunks else np.zeros((0, member.n_outputs or 0), np.float32)
    if out.shape[0] != n:
        raise PredictionError(f"member {member.name!r} returned {out.shape[0]} rows for {n} samples")
    _check_finite(out[None], [member.name])
    meta = {"score_seconds": seconds, "latency_ms_per_sample": 1000 * seconds / max(n, 1)}
    if key is not None and cache is not None:
        target = cache / f"{_safe(member.name)}-{key}.npy"
        # The array first, then its digest: a reader between the two renames sees a mismatch,
        # which is a miss, never a half-written or foreign entry.
        with atomic_path(target) as tmp, open(tmp, "wb") as fh:
            np.save(fh, out)
        with atomic_path(target.with_suffix(".json")) as tmp:
            Path(tmp).write_text(json.dumps({**meta, "sha256": sha256_arrays([out])}))
    return out, {**meta, "cached": False, "cache_key": key}


def _read_cached(path: Path, name: str) -> tuple[np.ndarray, dict] | None:
    """A cached output and its metadata when its digest matches; else None (a miss), with a warning.

    Every entry records the sha256 of its array: an entry that was edited, truncated or
    swapped for another of the same shape is scored again and rewritten, never used.
    """
    meta_file = path.with_suffix(".json")
    try:
        meta = json.loads(meta_file.read_text())
        if isinstance(meta, dict) and "sha256" not in meta:
            return None  # written by a modelfusion that kept no digest: score again, quietly
        out = np.load(path, mmap_mode="r", allow_pickle=False)
        ok = isinstance(meta, dict) and meta.get("sha256") == sha256_arrays([out])
    except (OSError, ValueError):  # missing or unreadable digest, a truncated or foreign file
        ok = False
    if not ok:
        warnings.warn(
            f"prediction cache: the entry for member {name!r} ({path.name}) does not match its recorded "
            "digest (changed, damaged or half-written); scoring the member again",
            ModelFusionWarning,
            stacklevel=4,
        )
        return None
    return out, {k: v for k, v in meta.items() if k != "sha256"}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def data_length(data: Any) -> int:
    """Number of samples in a batchable dataset."""
    if isinstance(data, Mapping):
        return data_length(next(iter(data.values())))
    return len(data)


def slice_batch(data: Any, lo: int, hi: int) -> Any:
    """``data[lo:hi]``, also for dicts of arrays (multimodal records)."""
    if isinstance(data, Mapping):
        return {k: v[lo:hi] for k, v in data.items()}
    return data[lo:hi]


def data_fingerprint(data: Any) -> str | None:
    """A stable hash of a dataset, or None when it cannot be hashed (then nothing is cached)."""
    if isinstance(data, Mapping):
        parts = [f"{k}:{data_fingerprint(v)}" for k, v in sorted(data.items())]
        return (
            None
            if any(p.endswith(":None") for p in parts)
            else hashlib.sha256("|".join(parts).encode()).hexdigest()
        )
    if hasattr(data, "fingerprint") and callable(data.fingerprint):
        return str(data.fingerprint())
    if hasattr(data, "detach") and hasattr(data, "numpy"):
        data = data.detach().cpu().numpy()
    if isinstance(data, np.ndarray):
        return sha256_arrays([data])
    if isinstance(data, (list, tuple)) and all(isinstance(s, str) for s in data):
        h = hashlib.sha256()
        for s in data:
            h.update(s.encode())
            h.update(b"\0")
        return h.hexdigest()
    if isinstance(data, (list, tuple)):
        try:
            return sha256_arrays([np.asarray(data)])
        except (ValueError, TypeError):
            return None
    return None
