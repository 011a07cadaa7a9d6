"""What a fusion report shows, gathered in one dataclass before anything is drawn."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelfusion.errors import InputError
from modelfusion.evaluation.details import class_metrics, confusion, paired_test
from modelfusion.evaluation.metrics import evaluate, get_metric
from modelfusion.outputs import Task, check_task

__all__ = ["FusionReport", "table_metrics"]


def table_metrics(task: str) -> list[str]:
    """The test metrics shown per member and per strategy for ``task``."""
    return ["rmse", "mae", "r2"] if task == "regression" else ["accuracy", "nll", "ece"]


@dataclass
class FusionReport:
    """Everything :func:`~modelfusion.report.write_report` needs, computed beforehand.

    Parameters
    ----------
    title : heading of the report
    task : {"classification", "multilabel", "regression"}
    metric : the metric strategies were selected by (``cv_mean``/``cv_std`` are in it)
    class_names : class labels as text, in score-column order
    members : one row per member on the test split: ``name``, ``framework``, ``accuracy``,
        ``nll``, ``ece`` (``rmse``, ``mae``, ``r2`` for regression), ``latency_ms`` (per
        sample), ``n_parameters``, ``file_size`` (bytes); any value may be None
    strategies : one row per strategy: ``name``, ``cv_mean``, ``cv_std``, the test metrics as
        for members, ``latency_ms``, ``n_members_used``
    chosen : name of the chosen strategy
    weights : the chosen strategy's weight per member, if it has weights
    y_test : encoded test labels [samples] ([samples, labels] multi-label, floats regression)
    member_scores : float array [members, samples, classes], test probabilities (values
        for regression)
    member_names : names in ``member_scores`` order (default: the ``members`` rows' names)
    strategy_scores : each strategy's fused test scores [samples, classes]
    fold_scores : each strategy's validation cross-validation scores of ``metric``
    config : the configuration the run used, shown verbatim
    notes : free-text remarks shown at the end
    data_summary : ``{"validation_rows", "test_rows", "features", "dropped_columns",
        "class_counts"}`` (any may be missing), shown in the Data section
    versions, created : library versions and the time the run made the report
    deployment : one row per exported graph (fp32 ONNX, int8, fp16): ``name``, ``file``,
        ``file_size``, ``size_ratio``, ``accuracy``, ``nll``, ``delta_pp``, ``latency_ms``,
        ``speedup`` (see :func:`~modelfusion.runtime.deployment.prepare_deployment`)

    Build one from scores with :meth:`from_scores`, which fills the table rows.
    """

    title: str
    task: Task
    metric: str
    class_names: list[str]
    #: rows as mappings (dicts, or :mod:`modelfusion.rows`' typed rows); stored as dicts
    members: Sequence[Mapping[str, Any]]
    strategies: Sequence[Mapping[str, Any]]
    chosen: str
    weights: dict[str, float] | None = None
    y_test: np.ndarray | None = None
    member_scores: np.ndarray | None = None
    member_names: list[str] = field(default_factory=list)
    strategy_scores: dict[str, np.ndarray] = field(default_factory=dict)
    fold_scores: dict[str, list[float]] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    deployment: Sequence[Mapping[str, Any]] = field(default_factory=list)
    #: rows per split, features, dropped columns, class balance (see the workflow)
    data_summary: dict[str, Any] | None = None
    #: library versions and when the report was made
    versions: dict[str, str] | None = None
    created: str | None = None
    #: ``modelfusion distill``: one row per model of the variant table (:class:`~modelfusion.rows.VariantRow`)
    distillation: Sequence[Mapping[str, Any]] = field(default_factory=list)
    #: ``modelfusion distill``: the student bundle's graphs, rows as in ``deployment``
    student_deployment: Sequence[Mapping[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_task(self.task)
        self.class_names = [str(c) for c in self.class_names]
        self.members = [dict(r) for r in self.members]
        self.strategies = [dict(r) for r in self.strategies]
        self.deployment = [dict(r) for r in self.deployment]
        self.distillation = [dict(r) for r in self.distillation]
        self.student_deployment = [dict(r) for r in self.student_deployment]
        for where, rows in (
            ("members", self.members),
            ("strategies", self.strategies),
            ("deployment", self.deployment),
            ("distillation", self.distillation),
        ):
            for i, row in enumerate(rows):
                if "name" not in row:
                    raise InputError(f"FusionReport.{where}[{i}] has no 'name': {sorted(row)}")
        if not self.member_names:
            self.member_names = [str(r["name"]) for r in self.members]
        self.member_names = [str(n) for n in self.member_names]
        self.strategy_scores = {str(k): np.asarray(v) for k, v in self.strategy_scores.items()}
        self.fold_scores = {str(k): [float(s) for s in v] for k, v in self.fold_scores.items()}
        if self.weights is not None:
            self.weights = {str(k): float(v) for k, v in self.weights.items()}
        self._check_arrays()
        known = {r["name"] for r in self.strategies} | set(self.strategy_scores)
        if known and self.chosen not in known:
            raise InputError(
                f"FusionReport.chosen is {self.chosen!r}, which is not among the strategies: "
                f"{', '.join(sorted(known))}"
            )

    def _check_arrays(self) -> None:
        if self.y_test is not None:
            self.y_test = np.asarray(self.y_test)
        if self.member_scores is None:
            return
        scores = np.asarray(self.member_scores)
        if scores.ndim == 2:  # single-output regression members
            scores = scores[:, :, None]
        if scores.ndim != 3:
            raise InputError(f"member_scores must be [members, samples, classes], got {scores.shape}")
        if scores.shape[0] != len(self.member_names):
            raise InputError(
                f"member_scores holds {scores.shape[0]} members but member_names has "
                f"{len(self.member_names)}: {', '.join(self.member_names)}"
            )
        self.member_scores = scores
        n = scores.shape[1]
        if self.y_test is not None and len(self.y_test) != n:
            raise InputError(f"y_test has {len(self.y_test)} samples but member_scores has {n}")
        for name, s in self.strategy_scores.items():
            if len(s) != n:
                raise InputError(f"strategy_scores[{name!r}] has {len(s)} samples, member_scores has {n}")

    # -- derived values ----------------------------------------------------------------------
    @property
    def primary_metric(self) -> str:
        """The headline test metric: accuracy, or RMSE for regression."""
        return "rmse" if self.task == "regression" else "accuracy"

    @property
    def has_scores(self) -> bool:
        """Whether per-sample test scores are available (figures need them)."""
        return self.y_test is not None and self.member_scores is not None

    def member_row(self, name: str) -> Mapping[str, Any]:
        return next((r for r in self.members if r["name"] == name), {"name": name})

    def strategy_row(self, name: str) -> Mapping[str, Any]:
        return next((r for r in self.strategies if r["name"] == name), {"name": name})

    def test_metric(self, name: str, metric: str, *, member: bool = False) -> float | None:
        """A strategy's (or, with ``member=True``, a member's) test ``metric``.

        Taken from its table row when there, else computed from the stored scores; None
        when neither is available.
        """
        row = self.member_row(name) if member else self.strategy_row(name)
        value = row.get(metric)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return float(value)
        scores = None
        if member and self.member_scores is not None and name in self.member_names:
            scores = self.member_scores[self.member_names.index(name)]
        elif not member:
            scores = self.strategy_scores.get(name)
        if scores is None or self.y_test is None:
            return None
        if self.task not in get_metric(metric).tasks:
            return None
        return float(get_metric(metric)(self.y_test, scores))

    @property
    def best_member(self) -> str | None:
        """The member with the best test :attr:`primary_metric`, or None if unknown."""
        metric = get_metric(self.primary_metric)
        measured = {n: self.test_metric(n, metric.name, member=True) for n in self._member_order()}
        values = {n: v for n, v in measured.items() if v is not None}
        if not values:
            return None
        pick = max if metric.greater_is_better else min
        return pick(values, key=lambda n: values[n])

    def _member_order(self) -> list[str]:
        names = list(self.member_names)
        names += [r["name"] for r in self.members if r["name"] not in names]
        return names

    def details(self) -> dict[str, Any] | None:
        """The chosen model on test in detail (classification): per-class metrics, overall figures,
        the confusion matrix, and McNemar's paired test against the best member."""

        chosen = self.strategy_scores.get(self.chosen)
        if self.task != "classification" or chosen is None or self.y_test is None:
            return None
        rows, overall = class_metrics(self.y_test, chosen, self.class_names)
        out: dict[str, Any] = {
            "classes": rows,
            **overall,
            "confusion": confusion(self.y_test, chosen).tolist(),
        }
        best = self.best_member
        if best is not None and best in self.member_names and self.member_scores is not None:
            member = self.member_scores[self.member_names.index(best)]
            out["paired_test"] = {
                "against": best,
                **paired_test(self.y_test, np.asarray(chosen).argmax(1), np.asarray(member).argmax(1)),
            }
        return out

    def summary(self) -> dict[str, Any]:
        """Chosen strategy vs best member on test: their metrics and the differences.

        ``delta`` is chosen minus best member; ``accuracy_pp`` is in percentage points.
        """
        best = self.best_member
        keys = table_metrics(self.task)
        chosen = {k: self.test_metric(self.chosen, k) for k in keys}
        member = {k: (self.test_metric(best, k, member=True) if best else None) for k in keys}
        delta: dict[str, float | None] = {}
        for k in keys:
            a, b = chosen[k], member[k]
            diff = None if a is None or b is None else a - b
            if k == "accuracy":
                delta["accuracy_pp"] = None if diff is None else 100.0 * diff
            else:
                delta[k] = diff
        return {
            "chosen": self.chosen,
            "best_member": best,
            "chosen_test": chosen,
            "best_member_test": member,
            "delta": delta,
        }

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_scores(
        cls,
        *,
        y_test: np.ndarray,
        member_scores: np.ndarray,
        member_names: Sequence[str],
        strategy_scores: Mapping[str, np.ndarray],
        chosen: str,
        task: Task = "classification",
        metric: str = "accuracy",
        fold_scores: Mapping[str, Sequence[float]] | None = None,
        weights: Mapping[str, float] | None = None,
        class_names: Sequence[Any] | None = None,
        member_info: Mapping[str, Mapping[str, Any]] | None = None,
        strategy_info: Mapping[str, Mapping[str, Any]] | None = None,
        title: str = "Fusion report",
        config: dict[str, Any] | None = None,
        notes: Sequence[str] = (),
        deployment: Sequence[Mapping[str, Any]] = (),
    ) -> FusionReport:
        """Build a report from test scores, computing every table row's metrics.

        member_info : per member extras, e.g. ``{"resnet": {"framework": "torch",
            "latency_ms": 0.8, "n_parameters": 11_689_512, "file_size": 46_830_571}}``
            (a PredictionSet's ``metadata`` fits; ``latency_ms_per_sample`` is read as
            ``latency_ms``)
        strategy_info : per strategy extras, e.g. ``{"stacking": {"latency_ms": 1.9,
            "n_members_used": 3}}``; ``n_members_used`` of the chosen strategy defaults to
            its number of non-zero weights
        deployment : rows of exported graphs, as :attr:`deployment`
        """
        check_task(task)
        member_scores = np.asarray(member_scores)
        if member_scores.ndim == 2:
            member_scores = member_scores[:, :, None]
        member_names = [str(n) for n in member_names]
        folds_by_name = {k: [float(s) for s in v] for k, v in (fold_scores or {}).items()}
        keys = table_metrics(task)
        member_info = member_info or {}
        strategy_info = strategy_info or {}

        members = []
        for i, name in enumerate(member_names):
            info = dict(member_info.get(name, {}))
            test: dict[str, Any] = evaluate(y_test, member_scores[i], task, keys)
            members.append(
                {
                    "name": name,
                    "framework": info.get("framework"),
                    **test,
                    "latency_ms": info.get("latency_ms", info.get("latency_ms_per_sample")),
                    "n_parameters": info.get("n_parameters"),
                    "file_size": info.get("file_size"),
                }
            )
        strategies = []
        for name in dict.fromkeys([*strategy_scores, *folds_by_name]):
            info = dict(strategy_info.get(name, {}))
            folds = folds_by_name.get(name)
            scores = strategy_scores.get(name)
            test = (
                evaluate(y_test, np.asarray(scores), task, keys)
                if scores is not None
                else dict.fromkeys(keys)
            )
            used = info.get("n_members_used")
            if used is None and name == chosen and weights is not None:
                used = int(sum(1 for w in weights.values() if w > 0))
            strategies.append(
                {
                    "name": name,
                    "cv_mean": float(np.mean(folds)) if folds else None,
                    "cv_std": float(np.std(folds)) if folds else None,
                    **test,
                    "latency_ms": info.get("latency_ms"),
                    "n_members_used": used,
                }
            )
        if class_names is None:
            class_names = [] if task == "regression" else [str(i) for i in range(member_scores.shape[2])]
        return cls(
            title=title,
            task=task,
            metric=metric,
            class_names=[str(c) for c in class_names],
            members=members,
            strategies=strategies,
            chosen=chosen,
            weights=None if weights is None else dict(weights),
            y_test=np.asarray(y_test),
            member_scores=member_scores,
            member_names=member_names,
            strategy_scores=dict(strategy_scores),
            fold_scores=folds_by_name,
            config=config,
            notes=list(notes),
            deployment=[dict(r) for r in deployment],
        )
