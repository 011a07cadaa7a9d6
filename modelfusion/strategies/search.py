"""Compare fusion strategies by cross-validation on the members' validation predictions.

Every candidate strategy is cloned and fitted on K-1 folds of the validation predictions and
scored on the held-out fold, so no strategy is ever scored on samples it was fitted on; each
single member is scored on the same folds as a baseline. The winner can then be refitted on
all the validation predictions with :meth:`SearchResult.fit_best`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import KFold, StratifiedKFold

from modelfusion.errors import StrategyError, UnknownNameError
from modelfusion.evaluation.metrics import METRICS, Metric, accuracy, get_metric
from modelfusion.predictions import PredictionSet, as_prediction_set
from modelfusion.progress import progress_bar
from modelfusion.strategies.averaging import GeometricMean, Mean, Median, WeightedAverage
from modelfusion.strategies.base import Strategy, get_strategy
from modelfusion.strategies.calibration import Calibrated
from modelfusion.strategies.dynamic import DynamicWeighting, MaxConfidence
from modelfusion.strategies.gating import Gating
from modelfusion.strategies.rank import RankAverage
from modelfusion.strategies.selection import GreedySelection
from modelfusion.strategies.stacking import Stacking
from modelfusion.strategies.voting import MajorityVote
from modelfusion.strategies.weights import OptimizedWeights

#: Validation sets larger than this are searched on a stratified subsample of this many rows.
MAX_SEARCH_ROWS = 20_000
#: Strategies whose fit is costly on wide inputs (a meta-learner or a network on
#: members x classes features, or one optimisation per member over every class).
COSTLY_STRATEGIES: frozenset[str] = frozenset({"stacking", "gating", "calibrated"})
#: In a search, a costly strategy is fitted on at most ``max_fit_rows`` rows of each training
#: fold, and on fewer when members x outputs is wide: rows x members x outputs stays under
#: ``COSTLY_FIT_ELEMENTS``. It is still scored on the whole held-out fold.
MAX_FIT_ROWS = 10_000
COSTLY_FIT_ELEMENTS = 10_000_000
#: On capped folds the default Gating candidate trains at most this many epochs, and the
#: default Stacking candidate skips its inner search over C (20 fewer meta-learner fits).
CAPPED_GATING_EPOCHS = 30


class SearchResult:
    """The outcome of :func:`search_strategies`: one row per strategy and per member.

    Attributes
    ----------
    metric : name of the metric the rows report (e.g. ``"nll"``).
    greater_is_better : whether a higher value of ``metric`` is better (accuracy) or worse (nll).
    task : the task of the predictions searched.
    cv : number of folds.
    rows : list of dicts, best first: ``rank`` (1-based; None for failed or skipped rows),
        ``name``, ``kind`` (``"strategy"`` or ``"member"``), ``mean`` and ``std`` of the metric
        over the folds, ``fold_scores`` (one value per fold), ``fit_seconds`` and
        ``combine_seconds`` (total time over the folds; 0 for members), ``status`` (``"ok"``,
        ``"failed"`` or ``"skipped"``) and ``error`` (why it failed or was skipped, else None).
    fold_scores : ``{strategy name: [score per fold]}`` for the strategies that ran.
    best_name : name of the best strategy (members are baselines and never chosen).
    best_strategy : an unfitted copy of that strategy; :meth:`fit_best` fits one.
    n_samples : number of validation rows the search ran on (see ``max_rows``).

    Examples
    --------
    >>> result = search_strategies(val_preds, y_val, metric="nll")
    >>> result
    SearchResult(metric='nll', lower is better, 5 folds, best='greedy')
    rank  name       kind      nll     ± std
       1  greedy     strategy  0.1431  0.012
       ...
    >>> fused = result.fit_best(val_preds, y_val).combine(test_preds)
    >>> print(result.to_markdown())
    """

    def __init__(
        self,
        metric: str,
        greater_is_better: bool,
        task: str,
        cv: int,
        rows: list[dict[str, Any]],
        best_name: str,
        best_strategy: Strategy,
        n_samples: int | None = None,
        strategies: dict[str, Strategy] | None = None,
    ):
        self.metric = metric
        self.greater_is_better = greater_is_better
        self.task = task
        self.cv = cv
        self.rows = rows
        self.best_name = best_name
        self.n_samples = n_samples
        self._best = best_strategy
        self._strategies = dict(strategies or {best_name: best_strategy})

    @property
    def fold_scores(self) -> dict[str, list[float]]:
        return {
            r["name"]: list(r["fold_scores"])
            for r in self.rows
            if r["kind"] == "strategy" and r["status"] == "ok"
        }

    @property
    def best_strategy(self) -> Strategy:
        """An unfitted copy of the winning strategy (same parameters)."""
        return clone(self._best)

    def strategy(self, name: str) -> Strategy:
        """An unfitted copy of the candidate called ``name`` (as it ran in the search)."""
        if name not in self._strategies:
            raise UnknownNameError(
                f"no strategy {name!r} ran in this search; ran: {', '.join(self._strategies)}"
            )
        return clone(self._strategies[name])

    def fit_best(self, predictions: PredictionSet | np.ndarray, y: Any = None) -> Strategy:
        """The winning strategy refitted on ``predictions`` (normally all validation predictions)."""
        return self.best_strategy.fit(predictions, y)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (the best strategy as its class name and repr)."""
        return {
            "metric": self.metric,
            "greater_is_better": self.greater_is_better,
            "task": self.task,
            "cv": self.cv,
            "best_name": self.best_name,
            "best_strategy": {"class": type(self._best).__name__, "repr": repr(self._best)},
            "rows": [dict(r, fold_scores=list(r["fold_scores"])) for r in self.rows],
        }

    def to_markdown(self) -> str:
        """The rows as a Markdown table, best first."""
        head = f"| rank | name | kind | {self.metric} | ± std | fit s | status |"
        lines = [head, "|---:|---|---|---:|---:|---:|---|"]
        for r in self.rows:
            status = r["status"] if r["error"] is None else f"{r['status']}: {r['error']}".replace("|", "/")
            lines.append(
                f"| {r['rank'] or ''} | {r['name']} | {r['kind']} | {_fmt(r['mean'])} | {_fmt(r['std'])} "
                f"| {r['fit_seconds']:.2f} | {status} |"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        direction = "higher is better" if self.greater_is_better else "lower is better"
        width = max([len(r["name"]) for r in self.rows] + [4])
        lines = [
            f"SearchResult(metric={self.metric!r}, {direction}, {self.cv} folds, best={self.best_name!r})"
        ]
        lines.append(f"{'rank':>4}  {'name':<{width}}  {'kind':<8}  {self.metric:>8}  {'± std':>8}  status")
        for r in self.rows:
            lines.append(
                f"{r['rank'] or '-':>4}  {r['name']:<{width}}  {r['kind']:<8}  {_fmt(r['mean']):>8}  "
                f"{_fmt(r['std']):>8}  {r['status']}"
            )
        return "\n".join(lines)


def search_strategies(
    predictions: PredictionSet | np.ndarray,
    y: Any = None,
    metric: str = "nll",
    strategies: str | Sequence[Strategy | str] = "auto",
    cv: int = 5,
    random_state: int | None = 0,
    progress: bool | None = None,
    *,
    max_rows: int | None = MAX_SEARCH_ROWS,
    max_fit_rows: int | None = MAX_FIT_ROWS,
) -> SearchResult:
    """Score fusion strategies (and each member alone) by K-fold CV on validation predictions.

    For every fold, each strategy is cloned, fitted on the other folds and scored on this one;
    the rows report the mean and spread over the folds. A strategy that raises is recorded as
    ``status="failed"`` with its message, and the search goes on.

    Parameters
    ----------
    predictions : PredictionSet (or float array [members, samples, outputs] of probabilities)
        of the members on validation data.
    y : true labels [samples] (or [samples, labels], or values); default ``predictions.labels``.
    metric : ``"nll"``, ``"accuracy"``, ``"error"``, ``"brier"``, ``"ece"``, ``"f1"``,
        ``"rmse"``, ``"mse"``, ``"mae"`` (or another name ``modelfusion.evaluation.get_metric``
        knows). For regression ``"nll"`` means ``"rmse"`` (the Gaussian NLL with a fixed
        variance ranks models as the RMSE does).
    strategies : ``"auto"`` (every built-in strategy that applies to the task, with its
        default parameters), or a list of Strategy instances and registry names.
        Strategies whose ``tasks`` exclude the task are skipped (listed with
        ``status="skipped"`` when given explicitly).
    cv : number of folds, >= 2. Classification uses StratifiedKFold when every class has at
        least ``cv`` samples, else KFold; both shuffle with ``random_state``.
    random_state : seed of the folds and of the subsamples below.
    progress : show a progress bar (default: only in an interactive terminal).
    max_rows : cost cap. A validation set with more rows is searched on a random subsample of
        this many (stratified by class for classification); rankings barely move at that size,
        and :meth:`SearchResult.fit_best` still fits on everything you pass. None: all rows.
    max_fit_rows : cost cap for Stacking, Gating and Calibrated: each is fitted on at most
        this many rows of a training fold, and on at most ``COSTLY_FIT_ELEMENTS / (members x
        outputs)`` rows (a stratified subsample; 5,000 rows for 20 members x 100 classes). On
        such capped folds the default ("auto") Gating trains at most ``CAPPED_GATING_EPOCHS``
        epochs and the default Stacking skips its inner C search. None: no cap.

        With the defaults, 20 members x 50,000 samples x 100 classes is searched on 20,000 rows;
        ``benchmarks/strategy_search.py`` times that sweep.

    Returns
    -------
    SearchResult, rows ranked best first (members included as baselines).

    Raises
    ------
    StrategyError
        without labels, for an unknown metric or one that does not apply to the task, a bad
        ``cv``, or when every strategy fails (chained to the first failure).

    Examples
    --------
    >>> result = search_strategies(val_preds, y_val, metric="nll", cv=5)
    >>> result.best_name
    'greedy'
    >>> fused = result.fit_best(val_preds, y_val).combine(test_preds)
    """
    preds = as_prediction_set(predictions)
    labels = preds.labels if y is None else np.asarray(y)
    if labels is None:
        raise StrategyError(
            "search_strategies scores strategies against labels: pass y (or build the PredictionSet with labels=)"
        )
    y_enc = preds.encode_labels(labels)
    scorer = _resolve_metric(metric, preds.task)
    cv = _check_cv(cv, preds.n_samples)
    auto = isinstance(strategies, str) and strategies == "auto"
    candidates, skipped = _candidates(strategies, preds.task, random_state)
    if not candidates:
        raise StrategyError(
            f"no strategy to search for {preds.task} (skipped: {', '.join(n for n, _ in skipped)})"
        )
    rng = np.random.default_rng(random_state)
    stratify = preds.task == "classification"

    member_outputs = preds.scores  # also caches probabilities computed from logits, for every fold
    view = _light_view(preds)
    if max_rows is not None and preds.n_samples > max_rows:
        keep = _subsample(y_enc, max(int(max_rows), cv), rng, stratify)
        view, labels, y_enc, member_outputs = (
            view.take(keep),
            labels[keep],
            y_enc[keep],
            member_outputs[:, keep],
        )
    fit_cap = None
    if max_fit_rows is not None:
        fit_cap = max(cv, min(int(max_fit_rows), COSTLY_FIT_ELEMENTS // (view.n_members * view.n_outputs)))

    runs = [_Run(name, strategy) for name, strategy in candidates]
    member_scores = np.zeros((view.n_members, cv))
    with progress_bar(enabled=progress) as bar:
        task = bar.add_task("searching strategies", total=cv * len(runs))
        for f, (train, test) in enumerate(_folds(preds.task, y_enc, cv, random_state)):
            fold = _Fold(view, labels, train, test)
            for m in range(view.n_members):
                member_scores[m, f] = scorer(y_enc[test], member_outputs[m, test])
            for run in runs:
                if run.error is None:
                    costly = (
                        fit_cap is not None
                        and len(train) > fit_cap
                        and _label_of(run.strategy) in COSTLY_STRATEGIES
                    )
                    fit_data = (
                        fold.capped(fit_cap, y_enc, rng, stratify)
                        if costly and fit_cap is not None
                        else fold.train_data
                    )
                    run.evaluate(fit_data, fold.test_set, y_enc[test], scorer, lighten=costly and auto)
                bar.advance(task)

    if all(run.error is not None for run in runs):
        details = "; ".join(f"{run.name}: {run.error}" for run in runs)
        raise StrategyError(f"every strategy failed in search_strategies: {details}") from runs[0].cause

    rows = [run.row() for run in runs]
    rows += [_row(name, "member", member_scores[m].tolist()) for m, name in enumerate(preds.names)]
    rows += [_row(name, "strategy", [], status="skipped", error=reason) for name, reason in skipped]
    sign = -1.0 if scorer.greater_is_better else 1.0
    ranked = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: sign * r["mean"])
    for i, r in enumerate(ranked, start=1):
        r["rank"] = i
    rows = ranked + [r for r in rows if r["status"] != "ok"]
    best = next(r for r in ranked if r["kind"] == "strategy")
    best_strategy = next(run.strategy for run in runs if run.name == best["name"])
    return SearchResult(
        scorer.name,
        scorer.greater_is_better,
        preds.task,
        cv,
        rows,
        best["name"],
        best_strategy,
        n_samples=view.n_samples,
        strategies={run.name: run.strategy for run in runs if run.error is None},
    )


@dataclass
class _Run:
    """One candidate's progress through the folds."""

    name: str
    strategy: Strategy
    scores: list[float] = field(default_factory=list)
    fit_seconds: float = 0.0
    combine_seconds: float = 0.0
    error: str | None = None
    cause: BaseException | None = None

    def evaluate(
        self,
        fit_data: tuple[PredictionSet, np.ndarray],
        test_set: PredictionSet,
        y_test: np.ndarray,
        scorer: Metric,
        lighten: bool = False,
    ) -> None:
        """Fit a fresh clone on ``fit_data``, score it on the held-out fold; on failure remember why."""
        try:
            strategy = clone(self.strategy)
            if lighten:
                _lighten(strategy)
            start = time.perf_counter()
            strategy.fit(*fit_data)
            fitted = time.perf_counter()
            fused = strategy.combine(test_set)
            self.fit_seconds += fitted - start
            self.combine_seconds += time.perf_counter() - fitted
            self.scores.append(scorer(y_test, fused))
        except Exception as err:  # one broken strategy must not end the search
            self.error, self.cause = f"{type(err).__name__}: {err}", err

    def row(self) -> dict[str, Any]:
        status = "ok" if self.error is None else "failed"
        return _row(
            self.name, "strategy", self.scores, self.fit_seconds, self.combine_seconds, status, self.error
        )


class _Fold:
    """The training and held-out parts of one fold, plus a subsample for costly strategies."""

    def __init__(self, view: PredictionSet, labels: np.ndarray, train: np.ndarray, test: np.ndarray):
        self.view, self.labels, self.train = view, labels, train
        self.train_data = (view.take(train), labels[train])
        self.test_set = view.take(test)
        self._capped: tuple[PredictionSet, np.ndarray] | None = None

    def capped(self, size: int, y_enc: np.ndarray, rng: np.random.Generator, stratify: bool):
        """``(predictions, labels)`` on ``size`` training rows, drawn once per fold."""
        if self._capped is None:
            rows = self.train[_subsample(y_enc[self.train], size, rng, stratify)]
            self._capped = (self.view.take(rows), self.labels[rows])
        return self._capped


# -- candidates --------------------------------------------------------------------------------


def _candidates(
    strategies: str | Sequence[Strategy | str], task: str, random_state: int | None = 0
) -> tuple[list, list]:
    """``([(unique name, strategy)], [(name, reason skipped)])``."""
    auto = isinstance(strategies, str) and strategies == "auto"
    if auto:
        chosen = _auto_candidates(task, random_state)
    elif isinstance(strategies, str):
        raise StrategyError(f"strategies={strategies!r}: use 'auto' or a list of strategies or names")
    else:
        chosen = []
        for s in strategies:
            if isinstance(s, str):
                chosen.append(get_strategy(s))
            elif isinstance(s, Strategy):
                chosen.append(s)
            else:
                raise StrategyError(
                    f"strategies must be Strategy instances or registry names, got {type(s).__name__}"
                )
    kept, skipped = [], []
    for s in chosen:
        if task not in s.tasks:
            if not auto:
                skipped.append((_label_of(s), f"does not support {task} (supports {', '.join(s.tasks)})"))
            continue
        kept.append(s)
    labels = [_label_of(s) for s in kept]
    names = []
    for s, label in zip(kept, labels, strict=True):
        name = label if labels.count(label) == 1 else repr(s)
        while name in names:
            name += "'"
        names.append(name)
    return list(zip(names, kept, strict=True)), skipped


def _auto_candidates(task: str, random_state: int | None = 0) -> list[Strategy]:
    """Every built-in strategy that applies to ``task``, default parameters, seeded with ``random_state``."""
    return [
        s.set_params(random_state=random_state) if "random_state" in s.get_params() else s
        for s in _default_strategies(task)
    ]


def _default_strategies(task: str) -> list[Strategy]:
    # Imported on use: importing search stays light, and no import cycle can form through
    # modelfusion.strategies/__init__.py.

    if task == "regression":
        return [
            Mean(),
            Median(),
            WeightedAverage(weights="validation"),
            GreedySelection(metric="rmse"),
            OptimizedWeights(),
            Stacking(),
        ]
    return [
        Mean(),
        WeightedAverage(weights="validation"),
        MajorityVote(),
        GeometricMean(),
        RankAverage(),
        MaxConfidence(),
        DynamicWeighting(),
        Calibrated(base=Mean()),
        GreedySelection(),
        OptimizedWeights(),
        Stacking(),
        Gating(),
    ]


def _lighten(strategy: Strategy) -> None:
    """Cheaper settings for the default candidates on folds above ``max_fit_rows``."""
    params = strategy.get_params()
    if "epochs" in params:
        strategy.set_params(epochs=min(params["epochs"], CAPPED_GATING_EPOCHS))
    if _label_of(strategy) == "stacking" and params.get("cv") is not None:
        strategy.set_params(cv=None)  # no internal C search: 20 fewer meta-learner fits per fold


def _label_of(strategy: Strategy) -> str:
    return strategy.alias or type(strategy).__name__.lower()


# -- folds and sampling ----------------------------------------------------------------------------


def _check_cv(cv: int, n_samples: int) -> int:
    if not isinstance(cv, (int, np.integer)) or isinstance(cv, bool) or cv < 2:
        raise StrategyError(f"cv must be an integer >= 2, got {cv!r}")
    if cv > n_samples:
        raise StrategyError(f"cv={cv} folds need at least {cv} samples, got {n_samples}")
    return int(cv)


def _folds(
    task: str, y: np.ndarray, cv: int, random_state: int | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    n = len(y)
    if task == "classification":
        counts = np.bincount(y)
        if counts[counts > 0].min() >= cv:
            return list(StratifiedKFold(cv, shuffle=True, random_state=random_state).split(np.zeros(n), y))
    return list(KFold(cv, shuffle=True, random_state=random_state).split(np.zeros(n)))


def _subsample(y: np.ndarray, size: int, rng: np.random.Generator, stratify: bool) -> np.ndarray:
    """Sorted positions of ``size`` rows drawn without replacement, class shares kept if ``stratify``."""
    order = rng.permutation(len(y))
    if stratify:
        # Sorting a random order by class, then taking evenly spaced positions, gives every
        # class its proportional share (to within one row) of the sample.
        order = order[np.argsort(y[order], kind="stable")]
        order = order[(np.arange(size) * len(y)) // size]
    else:
        order = order[:size]
    return np.sort(order)


def _light_view(preds: PredictionSet) -> PredictionSet:
    """``preds`` sharing its arrays, minus a cached ``proba`` that merely aliases ``outputs``.

    ``take`` slices cached views as well as the outputs: worth it for probabilities computed
    from logits, a second copy of the same data per fold when they are the outputs themselves.
    """
    view = copy.copy(preds)
    proba = view.__dict__.get("proba")
    if proba is not None and np.may_share_memory(proba, preds.outputs):
        del view.__dict__["proba"]
    return view


# -- metrics ------------------------------------------------------------------------------------


def _resolve_metric(metric: str, task: str) -> Metric:
    name = str(metric).strip().lower()
    if task == "regression" and name in ("nll", "log_loss"):
        name = "rmse"
    found = _LOCAL_METRICS.get(name)
    if found is None:
        try:
            found = get_metric(name)
        except ValueError:
            known = ", ".join(sorted(set(METRICS) | set(_LOCAL_METRICS)))
            raise StrategyError(f"unknown metric {metric!r}; choose one of {known}") from None
    if task not in found.tasks:
        raise StrategyError(
            f"metric {metric!r} does not apply to {task}; it applies to {', '.join(found.tasks)}"
        )
    return found


def _error(y: np.ndarray, scores: np.ndarray) -> float:
    return 1.0 - accuracy(y, scores)


def _mse(y: np.ndarray, pred: np.ndarray) -> float:
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64).reshape(y.shape)
    return float(((pred - y) ** 2).mean())


# Losses that modelfusion.evaluation.metrics does not name.
_LOCAL_METRICS: dict[str, Metric] = {
    "error": Metric("error", _error, False, ("classification", "multilabel")),
    "mse": Metric("mse", _mse, False, ("regression",)),
}


def _row(
    name: str,
    kind: str,
    scores: list[float],
    fit_seconds: float = 0.0,
    combine_seconds: float = 0.0,
    status: str = "ok",
    error: str | None = None,
) -> dict[str, Any]:
    values = np.asarray(scores, dtype=np.float64)
    ok = status == "ok"
    return {
        "rank": None,
        "name": name,
        "kind": kind,
        "mean": float(values.mean()) if ok else None,
        "std": float(values.std()) if ok else None,
        "fold_scores": [float(v) for v in values],
        "fit_seconds": float(fit_seconds),
        "combine_seconds": float(combine_seconds),
        "status": status,
        "error": error,
    }


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"
