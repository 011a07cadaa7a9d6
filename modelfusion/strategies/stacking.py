"""Stacking: a meta-learner trained on the members' validation outputs (Wolpert, 1992)."""

from __future__ import annotations

import contextlib
import numbers
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.linear_model import LinearRegression, LogisticRegression, RidgeCV
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import nn

from modelfusion.errors import StrategyError
from modelfusion.outputs import EPS
from modelfusion.predictions import PredictionSet
from modelfusion.strategies.base import Strategy

FEATURES: tuple[str, ...] = ("log_proba", "proba")
#: The inverse regularisation strengths tried for the default logistic regression.
C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
#: Fit rows above this are subsampled (the meta-learner has few inputs; more rows add time, not accuracy).
MAX_FIT_ROWS = 20_000
_DEFAULT_MAX_ITER = 300
_SMALL_INPUT_ELEMENTS = 2_000_000


class Stacking(Strategy):
    """Learn how to combine members with a meta-learner on their concatenated outputs.

    Features per sample are the members' log-probabilities (or probabilities) side by
    side, ``[samples, members * classes]``; for multi-label tasks one meta-learner per
    label sees that label's member log-odds (or probabilities), ``[samples, members]``;
    for regression the members' values (``features`` is ignored). Probabilities are
    clipped at ``min(0.01, 0.1 / classes)`` before the log (see :func:`feature_floor`), so
    the hard zeros of trees and k-NN do not dominate.

    The default meta-learner is a logistic regression (lbfgs, on standardised features,
    with the scaling folded back into ``coef_``/``intercept_``) whose ``C`` is chosen from
    ``(0.01, 0.1, 1, 10)`` by cross-validated NLL (stored in ``C_``), or ``RidgeCV`` for
    regression. Any scikit-learn estimator can be given instead; it is cloned. With
    ``cv`` folds, ``oof_predictions_`` holds out-of-fold meta predictions on the fit data
    (rows ``oof_rows_``), an honest estimate of the fused model's validation score.

    Fit data larger than 20,000 samples is subsampled to 20,000 rows (drawn with
    ``random_state``) before tuning and fitting; ``oof_rows_`` says which rows were used.

    Parameters
    ----------
    meta_learner : scikit-learn estimator (classifiers need ``predict_proba``), or None
    features : {"log_proba", "proba"}
    cv : number of folds (>= 2) for out-of-fold predictions and tuning, or None to skip both
    random_state : seed of the fold shuffling and of the subsampling

    Learned: ``meta_learner_`` (a list, one per label, for multi-label), ``C_`` (when tuned),
    ``oof_predictions_`` [rows, outputs], ``oof_rows_``.

    Examples
    --------
    >>> stack = Stacking(cv=5).fit(val_preds, y_val)
    >>> stack.C_, stack.oof_predictions_.shape
    (1.0, (540, 10))
    >>> stack.combine(test_preds).shape
    (1000, 10)
    >>> Stacking(meta_learner=GradientBoostingClassifier()).fit(val_preds, y_val)
    """

    covers_unseen_classes = False  # the meta-learner only knows the classes it saw

    alias = "stacking"
    symmetric = False

    def __init__(
        self,
        meta_learner: BaseEstimator | None = None,
        features: str = "log_proba",
        cv: int | None = 5,
        random_state: int | None = 0,
    ):
        self.meta_learner = meta_learner
        self.features = features
        self.cv = cv
        self.random_state = random_state

    def _needs_labels(self) -> bool:
        return True

    # -- fitting --------------------------------------------------------------------------
    def _fit(self, preds: PredictionSet, y: np.ndarray | None) -> None:
        assert y is not None  # fit() checked: this strategy learns from labels
        self._check_params()
        # The meta-learner's problems are small: BLAS threads cost more than they save there
        # (and stall when the cores are shared), so use one unless the features are large.
        small = (
            preds.n_members * min(preds.n_samples, MAX_FIT_ROWS) * preds.n_outputs <= _SMALL_INPUT_ELEMENTS
        )
        with threadpool_limits(limits=1, user_api="blas") if small else contextlib.nullcontext():
            self._fit_rows(preds, y)

    def _fit_rows(self, preds: PredictionSet, y: np.ndarray) -> None:
        rows = np.arange(preds.n_samples)
        if preds.n_samples > MAX_FIT_ROWS:
            rng = np.random.default_rng(self.random_state)
            rows = np.sort(rng.choice(preds.n_samples, MAX_FIT_ROWS, replace=False))
        scores = preds.scores[:, rows]
        y = y[rows]
        self.oof_rows_ = rows
        self.n_outputs_ = preds.n_outputs
        if self.task_ == "multilabel":
            self._fit_multilabel(scores, y)
        elif self.task_ == "regression":
            self._fit_regression(scores, y)
        else:
            self._fit_classification(scores, y)

    def _check_params(self) -> None:
        if self.features not in FEATURES:
            raise StrategyError(f"Stacking features={self.features!r} is not one of {', '.join(FEATURES)}")
        if self.cv is not None and (not isinstance(self.cv, numbers.Integral) or self.cv < 2):
            raise StrategyError(f"Stacking cv must be an integer >= 2 or None, got {self.cv!r}")
        if self.meta_learner is not None and not hasattr(self.meta_learner, "fit"):
            raise StrategyError(
                f"Stacking meta_learner must be a scikit-learn estimator, got {type(self.meta_learner).__name__}"
            )

    def _folds(self, stratified: bool):
        kind = StratifiedKFold if stratified else KFold
        return kind(self.cv, shuffle=True, random_state=self.random_state)

    def _fit_classification(self, scores: np.ndarray, y: np.ndarray) -> None:
        X = member_features(scores, self.task_, self.features)
        n_classes = scores.shape[2]
        if np.unique(y).size < 2:
            raise StrategyError("Stacking needs at least two classes among the fit labels")
        if self.meta_learner is None:
            self.C_, self.oof_predictions_ = 1.0, None
            if self.cv is not None:
                oofs = {c: self._oof_logistic(X, y, c, n_classes) for c in C_GRID}
                self.C_ = min(C_GRID, key=lambda c: _nll(oofs[c], y))
                self.oof_predictions_ = oofs[self.C_]
            self.meta_learner_ = _fit_logistic(X, y, self.C_)
            return
        estimator = clone(self.meta_learner)
        if not hasattr(estimator, "predict_proba"):
            raise StrategyError(
                f"Stacking meta_learner {type(estimator).__name__} has no predict_proba; "
                "use a probabilistic classifier (e.g. LogisticRegression)"
            )
        self.oof_predictions_ = None
        if self.cv is not None:
            oof = cross_val_predict(estimator, X, y, cv=self._folds(True), method="predict_proba")
            self.oof_predictions_ = _place_columns(oof, np.unique(y), n_classes)
        self.meta_learner_ = estimator.fit(X, y)

    def _oof_logistic(self, X: np.ndarray, y: np.ndarray, c: float, n_classes: int) -> np.ndarray:
        """Out-of-fold probabilities [samples, n_classes] of the default meta-learner."""
        model = make_pipeline(StandardScaler(), _default_logistic(c))
        oof = cross_val_predict(model, X, y, cv=self._folds(True), method="predict_proba")
        return _place_columns(oof, np.unique(y), n_classes)

    def _fit_multilabel(self, scores: np.ndarray, y: np.ndarray) -> None:
        feats = transform_scores(scores, self.task_, self.features)  # [members, samples, labels]
        n_labels = scores.shape[2]
        constant = [j for j in range(n_labels) if np.unique(y[:, j]).size < 2]
        if constant:
            raise StrategyError(
                f"Stacking cannot fit labels {constant}: each takes a single value in the fit data; "
                "fit on more samples or drop those labels"
            )
        per_label = [(feats[:, :, j].T, y[:, j]) for j in range(n_labels)]
        if self.meta_learner is None:
            self.C_, self.oof_predictions_ = 1.0, None
            if self.cv is not None:
                oofs = {
                    c: np.column_stack([self._oof_logistic(X, t, c, 2)[:, 1] for X, t in per_label])
                    for c in C_GRID
                }
                self.C_ = min(C_GRID, key=lambda c: _binary_nll(oofs[c], y))
                self.oof_predictions_ = oofs[self.C_]
            self.meta_learner_ = [_fit_logistic(X, t, self.C_) for X, t in per_label]
            return
        self.oof_predictions_ = None
        if self.cv is not None:
            folds = self._folds(True)
            self.oof_predictions_ = np.column_stack(
                [
                    cross_val_predict(self.meta_learner, X, t, cv=folds, method="predict_proba")[:, 1]
                    for X, t in per_label
                ]
            )
        self.meta_learner_ = [clone(self.meta_learner).fit(X, t) for X, t in per_label]

    def _fit_regression(self, scores: np.ndarray, y: np.ndarray) -> None:
        X = member_features(scores, self.task_, self.features)
        target = y[:, 0] if y.shape[1] == 1 else y
        estimator = RidgeCV() if self.meta_learner is None else clone(self.meta_learner)
        self.oof_predictions_ = None
        if self.cv is not None:
            oof = cross_val_predict(estimator, X, target, cv=self._folds(False))
            self.oof_predictions_ = np.asarray(oof, dtype=np.float64).reshape(len(X), -1)
        self.meta_learner_ = estimator.fit(X, target)

    # -- combining ------------------------------------------------------------------------
    def _combine(self, preds: PredictionSet) -> np.ndarray:
        scores = preds.scores
        n = preds.n_samples
        if self.task_ == "multilabel":
            feats = transform_scores(scores, self.task_, self.features)
            return np.column_stack(
                [est.predict_proba(feats[:, :, j].T)[:, 1] for j, est in enumerate(self.meta_learner_)]
            )
        X = member_features(scores, self.task_, self.features)
        if self.task_ == "regression":
            return np.asarray(self.meta_learner_.predict(X), dtype=np.float64).reshape(n, -1)
        proba = self.meta_learner_.predict_proba(X)
        return _place_columns(proba, self.meta_learner_.classes_, self.n_outputs_)

    # -- export and saving ----------------------------------------------------------------
    def to_torch(self) -> nn.Module:
        self._check_fitted()
        learners = self.meta_learner_ if isinstance(self.meta_learner_, list) else [self.meta_learner_]
        if not all(_is_linear(est, self.task_) for est in learners):
            raise StrategyError(
                f"Stacking with meta_learner {type(learners[0]).__name__} has no tensor form, so it cannot "
                "be exported to torch/ONNX; use the default LogisticRegression (RidgeCV for regression) "
                "or another linear model from sklearn.linear_model"
            )
        if self.task_ == "multilabel":
            coef = np.stack([est.coef_.reshape(-1) for est in learners])  # [labels, members]
            intercept = np.array([float(np.ravel(est.intercept_)[0]) for est in learners])
            return MultilabelLinearStackModule(coef, intercept, self.features, feature_floor(1))
        est = self.meta_learner_
        if self.task_ == "regression":
            coef = np.asarray(est.coef_, dtype=np.float64).reshape(self.n_outputs_, -1)
            intercept = np.broadcast_to(
                np.asarray(est.intercept_, dtype=np.float64), (self.n_outputs_,)
            ).copy()
            return LinearStackModule(coef, intercept, "regression", self.features, 1.0, placement=None)
        placement = np.zeros((len(est.classes_), self.n_outputs_))
        placement[np.arange(len(est.classes_)), np.asarray(est.classes_, dtype=np.int64)] = 1.0
        floor = feature_floor(self.n_outputs_)
        return LinearStackModule(est.coef_, est.intercept_, "classification", self.features, floor, placement)

    def member_weights(self, predictions: PredictionSet | None = None) -> tuple[dict[str, float], str] | None:
        """Each member's share of a linear meta-learner's absolute coefficients (None for other learners)."""
        self._check_fitted()
        learners = self.meta_learner_ if isinstance(self.meta_learner_, list) else [self.meta_learner_]
        if not all(hasattr(est, "coef_") for est in learners):
            return None
        per_member = np.zeros(self.n_members_)
        for est in learners:
            coef = np.abs(
                np.atleast_2d(np.asarray(est.coef_, dtype=np.float64))
            )  # [outputs, members x features]
            per_member += coef.reshape(coef.shape[0], self.n_members_, -1).sum(axis=(0, 2))
        total = per_member.sum()
        shares = per_member / total if total > 0 else per_member
        return dict(zip(self.names_, map(float, shares))), "share of the meta-learner's absolute coefficients"

    def fitted_state(self) -> dict[str, Any]:
        """Learned attributes; a linear meta-learner is stored as plain arrays.

        Linear meta-learners become ``meta_kind_`` plus ``meta_coef_``, ``meta_intercept_``
        and ``meta_classes_`` arrays (stacked over labels for multi-label); any other
        estimator is returned as the object under ``meta_learner_`` (saved with skops).
        """
        state = super().fitted_state()
        if "meta_learner_" not in state:  # not fitted
            return state
        learners = state["meta_learner_"]
        learners = learners if isinstance(learners, list) else [learners]
        if not all(_is_linear(est, self.task_) for est in learners):
            return state
        del state["meta_learner_"]
        logistic = self.task_ != "regression"
        state["meta_kind_"] = "logistic" if logistic else "linear"
        if self.task_ == "multilabel":
            state["meta_coef_"] = np.stack([np.asarray(e.coef_) for e in learners])
            state["meta_intercept_"] = np.stack([np.atleast_1d(e.intercept_) for e in learners])
            state["meta_classes_"] = np.stack([np.asarray(e.classes_) for e in learners])
        else:
            est = learners[0]
            state["meta_coef_"] = np.asarray(est.coef_)
            state["meta_intercept_"] = np.asarray(est.intercept_)
            if logistic:
                state["meta_classes_"] = np.asarray(est.classes_)
        return state

    def set_fitted_state(self, state: dict[str, Any]) -> Stacking:
        """Restore :meth:`fitted_state`, rebuilding a linear meta-learner from its arrays."""
        state = dict(state)
        kind = state.pop("meta_kind_", None)
        if kind is None:
            return super().set_fitted_state(state)
        coef = np.asarray(state.pop("meta_coef_"))
        intercept = np.asarray(state.pop("meta_intercept_"))
        classes = state.pop("meta_classes_", None)
        super().set_fitted_state(state)
        if kind == "linear":
            self.meta_learner_ = _rebuild_linear(LinearRegression(), coef, intercept, None)
        elif self.task_ == "multilabel":
            self.meta_learner_ = [
                _rebuild_linear(_default_logistic(1.0), coef[j], intercept[j], classes[j])
                for j in range(coef.shape[0])
            ]
        else:
            self.meta_learner_ = _rebuild_linear(_default_logistic(1.0), coef, intercept, classes)
        return self


# -- features shared with gating ---------------------------------------------------------------


def feature_floor(n_outputs: int) -> float:
    """Where probabilities are clipped before taking logs: ``min(0.01, 0.1 / classes)``.

    Members that emit hard zeros (trees, k-NN) would otherwise produce log-probabilities of
    -27.6 that dominate a linear meta-learner; below a tenth of the uniform probability
    the exact value carries little information for combining.
    """
    return min(0.01, 0.1 / max(int(n_outputs), 1))


def transform_scores(scores: np.ndarray, task: str, features: str) -> np.ndarray:
    """Per-member inputs [members, samples, outputs] for a learned combiner, as float64.

    Classification: ``log(p)`` or ``p``. Multi-label: the log-odds ``log p - log(1 - p)``
    or ``p``. Logs are of ``p`` clipped to :func:`feature_floor` (and, for log-odds,
    ``1 - p`` too). Regression: the values, whatever ``features`` says.
    """
    s = np.asarray(scores, dtype=np.float64)
    if task == "regression" or features == "proba":
        return s
    floor = feature_floor(1 if task == "multilabel" else s.shape[-1])
    logp = np.log(np.clip(s, floor, None))
    if task == "multilabel":
        return logp - np.log(np.clip(1.0 - s, floor, None))
    return logp


def member_features(scores: np.ndarray, task: str, features: str) -> np.ndarray:
    """The members' transformed outputs side by side, float array [samples, members * outputs]."""
    t = transform_scores(scores, task, features)
    return np.ascontiguousarray(t.transpose(1, 0, 2).reshape(t.shape[1], -1))


def torch_transform_scores(scores: torch.Tensor, task: str, features: str, floor: float) -> torch.Tensor:
    """Torch twin of :func:`transform_scores`; ``floor`` is :func:`feature_floor` of the outputs."""
    if task == "regression" or features == "proba":
        return scores
    logp = torch.log(scores.clamp_min(floor))
    if task == "multilabel":
        return logp - torch.log((1.0 - scores).clamp_min(floor))
    return logp


def torch_member_features(scores: torch.Tensor, task: str, features: str, floor: float) -> torch.Tensor:
    """Torch twin of :func:`member_features`: [members, batch, outputs] -> [batch, members * outputs]."""
    return torch_transform_scores(scores, task, features, floor).transpose(0, 1).flatten(1)


# -- tensor forms -----------------------------------------------------------------------------


class LinearStackModule(nn.Module):
    """A linear meta-learner on member features: softmax/sigmoid for classes, identity for values.

    ``placement`` [fitted classes, classes] maps the meta-learner's classes onto the
    output columns (classes it never saw get probability 0).
    """

    placement: torch.Tensor  # a buffer

    def __init__(
        self,
        coef: np.ndarray,
        intercept: np.ndarray,
        task: str,
        features: str,
        floor: float,
        placement: np.ndarray | None,
    ):
        super().__init__()
        coef = np.asarray(coef, dtype=np.float64)
        self.task = task
        self.features = features
        self.floor = floor
        self.binary = task == "classification" and coef.shape[0] == 1
        self.linear = nn.Linear(coef.shape[1], coef.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(torch.as_tensor(coef, dtype=torch.float32))
            self.linear.bias.copy_(torch.tensor(np.array(intercept, dtype=np.float32).ravel()))
        if placement is not None:
            self.register_buffer("placement", torch.as_tensor(placement, dtype=torch.float32))
        else:
            self.register_buffer("placement", None)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        z = self.linear(torch_member_features(scores, self.task, self.features, self.floor))
        if self.task == "regression":
            return z
        if self.binary:
            p = torch.sigmoid(z)
            proba = torch.cat([1.0 - p, p], dim=-1)
        else:
            proba = torch.softmax(z, dim=-1)
        return proba @ self.placement


class MultilabelLinearStackModule(nn.Module):
    """One logistic regression per label on that label's member features [members, batch, labels]."""

    coef: torch.Tensor  # a buffer
    intercept: torch.Tensor  # a buffer

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, features: str, floor: float):
        super().__init__()
        self.features = features
        self.floor = floor
        # coef [labels, members] -> [members, 1, labels] to broadcast over the batch.
        self.register_buffer("coef", torch.as_tensor(np.asarray(coef).T[:, None, :], dtype=torch.float32))
        self.register_buffer("intercept", torch.as_tensor(intercept, dtype=torch.float32))

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        f = torch_transform_scores(scores, "multilabel", self.features, self.floor)
        return torch.sigmoid((f * self.coef).sum(dim=0) + self.intercept)


# -- helpers ------------------------------------------------------------------------------------


def _default_logistic(c: float) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=_DEFAULT_MAX_ITER, solver="lbfgs")


def _fit_logistic(X: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
    """The default meta-learner: fitted on standardised features, returned on raw ones.

    Standardising makes one ``C`` fit features of any scale and speeds up lbfgs; folding
    the scaling into ``coef_`` and ``intercept_`` leaves a plain LogisticRegression.
    """
    scaler = StandardScaler().fit(X)
    model = _default_logistic(c).fit(scaler.transform(X), y)
    coef = model.coef_ / scaler.scale_
    model.intercept_ = model.intercept_ - coef @ scaler.mean_
    model.coef_ = coef
    return model


def _nll(proba: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], EPS, None))))


def _binary_nll(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, EPS, 1.0 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1.0 - p)))


def _place_columns(proba: np.ndarray, classes: np.ndarray, n_outputs: int) -> np.ndarray:
    """Spread probabilities over the fitted ``classes`` into ``n_outputs`` columns (others 0)."""
    classes = np.asarray(classes, dtype=np.int64)
    if proba.shape[1] == n_outputs and np.array_equal(classes, np.arange(n_outputs)):
        return np.asarray(proba, dtype=np.float64)
    out = np.zeros((proba.shape[0], n_outputs))
    out[:, classes] = proba
    return out


def _is_linear(estimator: Any, task: str) -> bool:
    if task == "regression":
        return (
            type(estimator).__module__.startswith("sklearn.linear_model")
            and hasattr(estimator, "coef_")
            and hasattr(estimator, "intercept_")
            and not is_classifier(estimator)
        )
    return isinstance(estimator, LogisticRegression)


def _rebuild_linear(estimator, coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray | None):
    estimator.coef_ = np.asarray(coef, dtype=np.float64)
    estimator.intercept_ = np.asarray(intercept, dtype=np.float64)
    if classes is not None:
        estimator.classes_ = np.asarray(classes)
    estimator.n_features_in_ = int(estimator.coef_.shape[-1])
    return estimator
