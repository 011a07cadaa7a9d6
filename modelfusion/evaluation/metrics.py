"""Metrics on encoded labels and fused scores, and a registry to pick them by name.

Every function takes ``(y, scores)``:

- classification: ``y`` int array [samples] of class indices, ``scores`` probabilities
  [samples, classes] (a 1-d array is read as the positive-class probability of a binary task);
- multi-label: ``y`` 0/1 int array [samples, labels], ``scores`` per-label probabilities
  [samples, labels];
- regression: ``y`` float array [samples] or [samples, targets], ``scores`` predictions of
  the same shape ([samples, 1] is accepted for a single target).

They run inside cross-validation loops on up to 50,000 x 100 scores, so they are plain
numpy, checked against scikit-learn in the tests rather than calling it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from modelfusion.errors import ArgumentTypeError, InputError, ParameterError
from modelfusion.outputs import EPS, Task, check_task

__all__ = [
    "METRICS",
    "Metric",
    "accuracy",
    "bootstrap_ci",
    "brier",
    "calibration_bins",
    "default_metrics",
    "ece",
    "evaluate",
    "get_metric",
    "macro_f1",
    "mae",
    "nll",
    "r2",
    "rmse",
    "score_to_loss",
    "top_k_accuracy",
]

CLASSIFICATION_TASKS = ("classification", "multilabel")


# -- input checks ------------------------------------------------------------------------
def _as_int_labels(y: np.ndarray, what: str) -> np.ndarray:
    if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        return y.astype(np.int64, copy=False)
    if not np.issubdtype(y.dtype, np.number):
        raise ArgumentTypeError(
            f"{what} must be encoded as integers, got dtype {y.dtype}; "
            "map them with PredictionSet.encode_labels first"
        )
    yi = y.astype(np.int64)
    if (yi != y).any():
        raise InputError(f"{what} must be whole numbers (encoded classes), got non-integer values")
    return yi


def _class_inputs(y, scores) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validate classification inputs; return ``(y, proba, multilabel)``."""
    y = np.asarray(y)
    p = np.asarray(scores)
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    if y.ndim == 0 or len(y) == 0:
        raise InputError("classification metrics need at least one labelled sample")
    if y.ndim == 2:  # multi-label indicator matrix
        if p.shape != y.shape:
            raise InputError(
                f"multi-label targets are shaped {y.shape} but scores are {p.shape}; "
                "give one probability per sample and label"
            )
        y = _as_int_labels(y, "multi-label targets")
        if y.size and (y.min() < 0 or y.max() > 1):
            raise InputError("multi-label targets must be 0/1")
        return y, p, True
    if y.ndim != 1:
        raise InputError(f"labels must be [samples] or [samples, labels], got shape {y.shape}")
    if p.ndim == 1:  # binary task, positive-class probability only
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise InputError(
            f"scores must be [samples, classes] with {y.shape[0]} samples to match the labels, got {p.shape}"
        )
    y = _as_int_labels(y, "labels")
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        bad = y[(y < 0) | (y >= p.shape[1])][:5].tolist()
        raise InputError(
            f"labels {bad} are outside 0..{p.shape[1] - 1}, the {p.shape[1]} score columns; "
            "encode labels as column indices (PredictionSet.encode_labels)"
        )
    return y, p, False


def _regression_inputs(y, pred) -> tuple[np.ndarray, np.ndarray]:
    """Both as float64 [samples, targets]."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    y2 = y.reshape(len(y), -1) if y.ndim else y.reshape(1, 1)
    p2 = p.reshape(len(p), -1) if p.ndim else p.reshape(1, 1)
    if y2.shape != p2.shape:
        raise InputError(f"regression targets are shaped {y.shape} but predictions are {p.shape}")
    if y2.shape[0] == 0:
        raise InputError("regression metrics need at least one sample")
    return y2, p2


def _true_proba(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    return p[np.arange(len(y)), y]


def _is_binary(p: np.ndarray) -> bool:
    return p.shape[1] == 2


# -- classification ------------------------------------------------------------------------
def _correct(y, scores) -> np.ndarray:
    """Per-sample accuracy [samples]: 0/1, or the fraction of labels right (multi-label)."""
    y, p, multilabel = _class_inputs(y, scores)
    if multilabel:
        return ((p > 0.5) == (y == 1)).mean(axis=1)
    return (p.argmax(axis=1) == y).astype(np.float64)


def accuracy(y, scores) -> float:
    """Fraction of samples whose top-1 class is right.

    Multi-label: the mean per-label accuracy, a label counting as predicted when its
    probability is above 0.5.
    """
    return float(_correct(y, scores).mean())


def _top_k_hits(y, scores, k: int = 5) -> np.ndarray:
    y, p, multilabel = _class_inputs(y, scores)
    if multilabel:
        raise InputError("top-k accuracy is defined for single-label classification, not multi-label")
    if k < 1:
        raise ParameterError(f"k must be >= 1, got {k}")
    # Rank of the true class = number of classes scored strictly higher; ties count in
    # the sample's favour, which scikit-learn's argsort-based version breaks by index.
    rank = (p > _true_proba(y, p)[:, None]).sum(axis=1)
    return (rank < k).astype(np.float64)


def top_k_accuracy(y, scores, k: int = 5) -> float:
    """Fraction of samples whose true class is among the ``k`` highest-scored classes."""
    return float(_top_k_hits(y, scores, k).mean())


def macro_f1(y, scores) -> float:
    """Unweighted mean of per-class F1 of the top-1 predictions.

    Like ``sklearn.metrics.f1_score(average="macro")``, classes that neither occur in ``y``
    nor are ever predicted are left out. Multi-label: the mean F1 of each label
    (probability above 0.5 = predicted); a label never present nor predicted scores 0.
    """
    y, p, multilabel = _class_inputs(y, scores)
    if multilabel:
        pred = p > 0.5
        truth = y == 1
        tp = (pred & truth).sum(axis=0)
        denom = pred.sum(axis=0) + truth.sum(axis=0)
        f1 = np.divide(2.0 * tp, denom, out=np.zeros(len(tp)), where=denom > 0)
        return float(f1.mean())
    n_classes = p.shape[1]
    pred = p.argmax(axis=1)
    tp = np.bincount(y[pred == y], minlength=n_classes)
    denom = np.bincount(pred, minlength=n_classes) + np.bincount(y, minlength=n_classes)
    present = denom > 0
    # F1 = 2 tp / (2 tp + fp + fn) = 2 tp / (predicted + actual)
    return float(np.mean(2.0 * tp[present] / denom[present]))


def _nll_per_sample(y, scores) -> np.ndarray:
    y, p, multilabel = _class_inputs(y, scores)
    if multilabel:
        q = np.clip(p.astype(np.float64), EPS, 1.0 - EPS)
        return -np.where(y == 1, np.log(q), np.log1p(-q)).mean(axis=1)
    return -np.log(np.clip(_true_proba(y, p).astype(np.float64), EPS, None))


def nll(y, scores) -> float:
    """Mean negative log-likelihood of the true class (probabilities clipped at 1e-12).

    Multi-label: the mean binary cross-entropy over samples and labels.
    """
    return float(_nll_per_sample(y, scores).mean())


def _brier_per_sample(y, scores) -> np.ndarray:
    y, p, multilabel = _class_inputs(y, scores)
    p = p.astype(np.float64, copy=False)
    if multilabel:
        return ((p - y) ** 2).mean(axis=1)
    # sum_c (p_c - 1[c = y])^2 = sum_c p_c^2 - 2 p_y + 1, without building the one-hot matrix
    per = np.einsum("ij,ij->i", p, p) - 2.0 * _true_proba(y, p) + 1.0
    # Binary: the classic Brier score on the positive class, which is half the two-column sum
    # (scikit-learn's scale_by_half="auto").
    return per / 2.0 if _is_binary(p) else per


def brier(y, scores) -> float:
    """Brier score: mean over samples of the summed squared error over classes.

    Binary tasks report the classic positive-class Brier score (half the two-column sum),
    as scikit-learn does; multi-label the mean squared error over samples and labels.
    """
    return float(_brier_per_sample(y, scores).mean())


def _confidence_outcome(y, scores) -> tuple[np.ndarray, np.ndarray]:
    """What calibration compares: predicted confidence and the 0/1 outcome, both flat."""
    y, p, multilabel = _class_inputs(y, scores)
    if multilabel:
        return p.astype(np.float64).ravel(), y.astype(np.float64).ravel()
    pred = p.argmax(axis=1)
    conf = p[np.arange(len(y)), pred].astype(np.float64)
    return conf, (pred == y).astype(np.float64)


def _bin_sums(conf: np.ndarray, outcome: np.ndarray, n_bins: int) -> tuple[np.ndarray, ...]:
    if n_bins < 1:
        raise ParameterError(f"n_bins must be >= 1, got {n_bins}")
    # Equal-width bins (lo, hi], as in Guo et al. (2017); a confidence of 0 joins the first bin.
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    hit_sum = np.bincount(idx, weights=outcome, minlength=n_bins)
    return count, conf_sum, hit_sum


def ece(y, scores, n_bins: int = 15) -> float:
    """Expected calibration error of the top-1 confidence (Guo et al., 2017).

    ``sum_b |bin accuracy - bin confidence| * bin size / samples`` over ``n_bins``
    equal-width bins of the confidence. Multi-label: over every label probability, the
    "accuracy" of a bin being the fraction of positive labels in it.
    """
    conf, outcome = _confidence_outcome(y, scores)
    if conf.size == 0:
        raise InputError("ECE needs at least one sample")
    count, conf_sum, hit_sum = _bin_sums(conf, outcome, n_bins)
    return float(np.abs(hit_sum - conf_sum).sum() / conf.size)


def calibration_bins(y, scores, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Per-bin data of a reliability diagram.

    Returns a dict of arrays [n_bins]: ``confidence`` (mean confidence in the bin),
    ``accuracy`` (fraction right, or of positive labels for multi-label), ``count``
    (samples in the bin), with NaN confidence/accuracy for empty bins, and ``edges``
    [n_bins + 1].
    """
    conf, outcome = _confidence_outcome(y, scores)
    count, conf_sum, hit_sum = _bin_sums(conf, outcome, n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / count, np.nan)
        mean_hit = np.where(count > 0, hit_sum / count, np.nan)
    return {
        "confidence": mean_conf,
        "accuracy": mean_hit,
        "count": count.astype(np.int64),
        "edges": np.linspace(0.0, 1.0, n_bins + 1),
    }


# -- regression ------------------------------------------------------------------------------
def rmse(y, pred) -> float:
    """Root mean squared error, averaged over targets (scikit-learn's ``uniform_average``)."""
    y, p = _regression_inputs(y, pred)
    return float(np.sqrt(((y - p) ** 2).mean(axis=0)).mean())


def _abs_error_per_sample(y, pred) -> np.ndarray:
    y, p = _regression_inputs(y, pred)
    return np.abs(y - p).mean(axis=1)


def mae(y, pred) -> float:
    """Mean absolute error, averaged over samples and targets."""
    return float(_abs_error_per_sample(y, pred).mean())


def r2(y, pred) -> float:
    """Coefficient of determination, averaged over targets.

    A constant target scores 1.0 when predicted exactly and 0.0 otherwise, as in
    ``sklearn.metrics.r2_score``.
    """
    y, p = _regression_inputs(y, pred)
    ss_res = ((y - p) ** 2).sum(axis=0)
    ss_tot = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        per = np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))
    return float(per.mean())


# -- registry --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """A named metric and how to rank it.

    Parameters
    ----------
    name : canonical name (aliases in :data:`METRICS` point to the same object)
    fn : ``fn(y, scores) -> float``
    greater_is_better : True for scores (accuracy), False for losses (nll)
    tasks : the tasks it is defined for
    per_sample : optional ``fn(y, scores) -> float array [samples]`` whose mean is the
        metric; lets :func:`bootstrap_ci` resample cheaply
    """

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    greater_is_better: bool
    tasks: tuple[str, ...]
    per_sample: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None

    def __call__(self, y, scores) -> float:
        return float(self.fn(y, scores))


def _metric(name, fn, greater, tasks, per_sample=None) -> Metric:
    return Metric(name=name, fn=fn, greater_is_better=greater, tasks=tasks, per_sample=per_sample)


_ACCURACY = _metric("accuracy", accuracy, True, CLASSIFICATION_TASKS, _correct)
_NLL = _metric("nll", nll, False, CLASSIFICATION_TASKS, _nll_per_sample)
_F1 = _metric("macro_f1", macro_f1, True, CLASSIFICATION_TASKS)

METRICS: dict[str, Metric] = {
    "accuracy": _ACCURACY,
    "acc": _ACCURACY,
    "nll": _NLL,
    "log_loss": _NLL,
    "ece": _metric("ece", ece, False, CLASSIFICATION_TASKS),
    "brier": _metric("brier", brier, False, CLASSIFICATION_TASKS, _brier_per_sample),
    "macro_f1": _F1,
    "f1": _F1,
    "top5": _metric(
        "top5", partial(top_k_accuracy, k=5), True, ("classification",), partial(_top_k_hits, k=5)
    ),
    "rmse": _metric("rmse", rmse, False, ("regression",)),
    "mae": _metric("mae", mae, False, ("regression",), _abs_error_per_sample),
    "r2": _metric("r2", r2, True, ("regression",)),
}
"""Every metric by name, aliases included (``acc``, ``log_loss``, ``f1``)."""


def get_metric(name: str | Metric) -> Metric:
    """The :class:`Metric` called ``name`` (case-insensitive); a Metric is returned as is.

    Raises ValueError listing the valid names.
    """
    if isinstance(name, Metric):
        return name
    key = str(name).strip().lower()
    if key not in METRICS:
        raise ParameterError(f"unknown metric {name!r}; choose one of: {', '.join(sorted(METRICS))}")
    return METRICS[key]


def default_metrics(task: Task, n_outputs: int | None = None) -> list[str]:
    """The metrics :func:`evaluate` reports for ``task`` (top5 only beyond 5 classes)."""
    check_task(task)
    if task == "regression":
        return ["rmse", "mae", "r2"]
    names = ["accuracy", "nll", "ece", "brier", "macro_f1"]
    if task == "classification" and n_outputs is not None and n_outputs > 5:
        names.append("top5")
    return names


def evaluate(y, scores, task: Task, metrics: Sequence[str | Metric] | None = None) -> dict[str, float]:
    """Compute several metrics at once.

    Parameters
    ----------
    y : encoded labels (see the module docstring)
    scores : fused scores [samples, classes] or predictions [samples(, targets)]
    task : {"classification", "multilabel", "regression"}
    metrics : names or Metrics; default :func:`default_metrics` for the task

    Returns
    -------
    ``{name: value}`` keyed by the names as given.

    Examples
    --------
    >>> evaluate(y, fused, "classification")
    {'accuracy': 0.91, 'nll': 0.28, 'ece': 0.021, 'brier': 0.13, 'macro_f1': 0.90, 'top5': 0.99}
    """
    check_task(task)
    scores = np.asarray(scores)
    if metrics is None:
        metrics = default_metrics(task, scores.shape[1] if scores.ndim == 2 else None)
    out: dict[str, float] = {}
    for m in metrics:
        metric = get_metric(m)
        if task not in metric.tasks:
            raise ParameterError(
                f"metric {metric.name!r} is not defined for {task}; it applies to {', '.join(metric.tasks)}"
            )
        out[m.name if isinstance(m, Metric) else str(m)] = metric(y, scores)
    return out


def score_to_loss(metric: str | Metric, value: float) -> float:
    """Map a metric value to a loss: lower is better for every metric (accuracy is negated)."""
    return -float(value) if get_metric(metric).greater_is_better else float(value)


def bootstrap_ci(
    y,
    scores,
    metric: str | Metric = "accuracy",
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of a metric over test samples.

    Metrics that are a mean of per-sample values (accuracy, nll, brier, top5, mae) are
    resampled in one vectorised step: per-sample values are computed once, then averaged
    over ``n_boot`` index resamples (drawn in chunks to bound memory). Others (ece, f1, r2,
    rmse) are recomputed per resample.

    Returns ``(low, high)``, the ``alpha/2`` and ``1 - alpha/2`` quantiles.
    """
    m = get_metric(metric)
    y = np.asarray(y)
    scores = np.asarray(scores)
    n = len(y)
    if n == 0:
        raise InputError("bootstrap_ci needs at least one sample")
    if n_boot < 1:
        raise ParameterError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    if m.per_sample is not None:
        values = np.asarray(m.per_sample(y, scores), dtype=np.float64)
        chunk = max(1, 4_000_000 // n)
        for lo in range(0, n_boot, chunk):
            idx = rng.integers(0, n, size=(min(chunk, n_boot - lo), n))
            stats[lo : lo + len(idx)] = values[idx].mean(axis=1)
    else:
        for b in range(n_boot):
            idx = rng.integers(0, n, size=n)
            stats[b] = m.fn(y[idx], scores[idx])
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)
