"""Cross-modal matching fitted in closed form: ridge CCA between two modalities' features, scored
with CSLS and calibrated by cross-validation.

Canonical correlation analysis (Hotelling, 1936) finds the projections of image features ``X`` and
text features ``Y`` whose paired rows correlate most; with ridge regularisation (Vinod, 1976) it is
the closed-form optimum of a low-rank bilinear similarity ``<A x, B y>`` between the two. Both
sides' embeddings are scaled by the canonical correlations, so the cosine between them weights
component i by about its squared correlation. Cosine similarity in that space suffers from *hubs*
(a few captions close to every image); CSLS (Conneau et al., 2018, "Word translation without
parallel data") subtracts each side's mean similarity to its ``csls_k`` nearest neighbours in the
training set of the other side. Out-of-fold scores choose the number of components, the ridge and
the neighbours (by ROC AUC) and fit a logistic calibration, learned without test rows:
:meth:`CCAMatcher.predict_proba` is the probability that a pair matches when true and mismatched
pairs are equally common (as in the folds), not a retrieval probability among many candidates.

Examples
--------
>>> matcher = CCAMatcher(n_components=64, alpha=(0.01, 0.03), seed=0).fit(image_features, text_features)
>>> matcher.predict_proba(image_features_new, text_features_new)[:, 1]      # row i with row i
>>> matcher.similarity(text_features_new, image_features_new, query="y")      # [texts, images]
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator

from modelfusion.errors import BundleError, InputError, ModelFusionWarning, ParameterError, StrategyError

#: The arrays ``fit`` learns (saved as they are by :meth:`CCAMatcher.save`).
_FITTED_ARRAYS = ("x_weights_", "y_weights_", "correlations_", "x_reference_", "y_reference_")


class CCAMatcher(BaseEstimator):
    """Image-text (any two modalities) matching by ridge CCA + CSLS, calibrated out of fold.

    Parameters
    ----------
    n_components : canonical components kept (an int, or several to choose from by CV); more
        than the rank (both widths, the rows of a training fold) are clipped to it.
    alpha : ridge regularisation added to each side's covariance; each block of features is
        scaled to unit total variance first (a float, or several to choose from by CV).
    csls_k : neighbours of the CSLS hubness correction (0: plain cosine similarity; an int, or
        several to choose from by CV). In a fold it is scaled by the fold's share of the rows.
    x_widths, y_widths : widths of the feature blocks concatenated in X (Y), e.g. the stages of a
        :class:`MultiScaleEncoder`; each block is standardised and given the same total variance,
        so a wide block does not drown a narrow one. Default: one block.
    cv : folds for choosing the hyperparameters and fitting the calibration.
    seed : the folds and the mismatched pairs they are scored on.

    Attributes
    ----------
    n_components_, alpha_, csls_k_ : the chosen values.
    correlations_ : float array [n_components_], the regularised canonical correlations.
    cv_scores_ : ``{(n_components, alpha, csls_k): out-of-fold ROC AUC}`` of every candidate.
    coef_, intercept_ : the logistic calibration ``p = sigmoid(coef_ * score + intercept_)``.
    threshold_ : the score above which a pair is predicted to match (p > 0.5; infinite, with a
        warning, when the out-of-fold scores do not tell true pairs from mismatched ones).

    Examples
    --------
    >>> matcher = CCAMatcher(n_components=32, alpha=0.03).fit(X_train, Y_train)
    >>> matcher.predict(X_test, Y_test)            # 1 where row i of X matches row i of Y
    >>> CCAMatcher.load(matcher.save("matcher.safetensors")).predict(X_test, Y_test)
    """

    def __init__(
        self,
        n_components: int | Sequence[int] = 64,
        alpha: float | Sequence[float] = 0.01,
        *,
        csls_k: int | Sequence[int] = 10,
        x_widths: Sequence[int] | None = None,
        y_widths: Sequence[int] | None = None,
        cv: int = 5,
        seed: int = 0,
    ):
        self.n_components = n_components
        self.alpha = alpha
        self.csls_k = csls_k
        self.x_widths = x_widths
        self.y_widths = y_widths
        self.cv = cv
        self.seed = seed

    def fit(self, X: Any, Y: Any) -> CCAMatcher:
        """Learn from paired rows: row i of ``X`` [n, dx] (one modality's features) matches row i of
        ``Y`` [n, dy] (the other's). Rows must be distinct items (a mismatched pair is two rows)."""
        X, Y = _paired(X, Y, "fit")
        if isinstance(self.cv, bool) or not isinstance(self.cv, (int, np.integer)) or self.cv < 2:
            raise ParameterError(f"cv must be an integer >= 2, got {self.cv!r}")
        if len(X) < 2 * self.cv:
            raise InputError(f"cv={self.cv} folds need at least {2 * self.cv} pairs, got {len(X)}")
        rank = min(X.shape[1], Y.shape[1], len(X) - math.ceil(len(X) / self.cv))
        components = sorted({min(k, rank) for k in _candidates(self.n_components, "n_components", 1)})
        alphas = _alphas(self.alpha)
        neighbours = _candidates(self.csls_k, "csls_k", 0)
        x_widths, y_widths = _widths(self.x_widths, X, "x_widths"), _widths(self.y_widths, Y, "y_widths")
        scores, labels = _out_of_fold_scores(
            X, Y, x_widths, y_widths, components, alphas, neighbours, self.cv, self.seed
        )
        self.cv_scores_ = {candidate: _roc_auc(scores[candidate], labels) for candidate in scores}
        best = max(self.cv_scores_, key=lambda c: self.cv_scores_[c])
        self.n_components_, self.alpha_, self.csls_k_ = best
        self.coef_, self.intercept_ = _logistic_fit(scores[best], labels)
        if self.coef_ <= 0 or self.cv_scores_[best] <= 0.5:
            warnings.warn(
                f"CCAMatcher: the best out-of-fold ROC AUC is {self.cv_scores_[best]:.3f}: X and Y do not "
                "predict each other, so no pair is predicted to match",
                ModelFusionWarning,
                stacklevel=2,
            )
            self.coef_, self.intercept_ = 0.0, 0.0  # p = 0.5 for every pair, none predicted to match
        self.threshold_ = self._threshold()
        self._fit_projection(X, Y, x_widths, y_widths)
        return self

    def transform(self, X: Any = None, Y: Any = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Unit-length embeddings [n, n_components_] of X, of Y, or of both (a tuple)."""
        self._check_fitted()
        if X is None and Y is None:
            raise ParameterError("transform needs X, Y or both")
        out = [self._embed(v, side) for v, side in ((X, "x"), (Y, "y")) if v is not None]
        return out[0] if len(out) == 1 else (out[0], out[1])

    def similarity(self, A: Any, B: Any, *, query: str = "x") -> np.ndarray:
        """CSLS similarity [len(A), len(B)]: ``query="x"`` when A holds X-side features and B Y-side
        ones, ``"y"`` the other way round (e.g. texts querying an image gallery)."""
        if query not in ("x", "y"):
            raise ParameterError(f"query must be 'x' or 'y', got {query!r}")
        self._check_fitted()
        other = "y" if query == "x" else "x"
        a, b = self._embed(A, query), self._embed(B, other)
        return self._csls(a @ b.T, a, b, query)

    def score_pairs(self, X: Any, Y: Any) -> np.ndarray:
        """CSLS score [n] of each pair (row i of X with row i of Y)."""
        self._check_fitted()
        X, Y = _paired(X, Y, "score_pairs")
        a, b = self._embed(X, "x"), self._embed(Y, "y")
        return self._csls(np.einsum("ij,ij->i", a, b), a, b, "x")

    def predict_proba(self, X: Any, Y: Any) -> np.ndarray:
        """[n, 2]: the probability that row i of X does not / does match row i of Y."""
        score = self.score_pairs(X, Y)
        p = expit(self.coef_ * score + self.intercept_)
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, X: Any, Y: Any) -> np.ndarray:
        """1 where row i of X matches row i of Y (score above ``threshold_``), else 0."""
        return (self.score_pairs(X, Y) > self.threshold_).astype(np.int64)

    def save(self, path: str | Path) -> Path:
        """Write the fitted matcher to one safetensors file (atomically; no pickle); returns ``path``."""
        from modelfusion.multimodal.matching_file import SCALARS, write_matcher_file

        self._check_fitted()
        arrays = {name: getattr(self, name) for name in _FITTED_ARRAYS}
        for side, scaling in (("x", self.x_scaling_), ("y", self.y_scaling_)):
            arrays[f"{side}_mean"], arrays[f"{side}_scale"] = scaling.mean, scaling.scale
        state = {name: getattr(self, name) for name in SCALARS}
        return write_matcher_file(
            path, arrays, params=self.get_params(), state=state, cv_scores=self.cv_scores_
        )

    @classmethod
    def load(cls, path: str | Path) -> CCAMatcher:
        """A matcher written by :meth:`save`; BundleError naming the file if it is not one (or is damaged)."""
        from modelfusion.multimodal.matching_file import read_matcher_file

        arrays, params, state, cv_scores = read_matcher_file(path)
        try:
            matcher = cls(**params)
        except TypeError as error:
            raise BundleError(f"{path} is not a readable CCAMatcher: {error}") from error
        for name, value in {**state, **{name: arrays[name] for name in _FITTED_ARRAYS}}.items():
            setattr(matcher, name, value)
        matcher.cv_scores_ = cv_scores
        matcher.x_scaling_ = _Scaling(arrays["x_mean"], arrays["x_scale"])
        matcher.y_scaling_ = _Scaling(arrays["y_mean"], arrays["y_scale"])
        matcher.threshold_ = matcher._threshold()
        return matcher

    def _fit_projection(self, X: np.ndarray, Y: np.ndarray, x_widths: list[int], y_widths: list[int]) -> None:
        self.x_scaling_, self.y_scaling_ = _Scaling.fit(X, x_widths), _Scaling.fit(Y, y_widths)
        zx, zy = self.x_scaling_.apply(X), self.y_scaling_.apply(Y)
        self._set_projection(zx, zy, _canonical(_RowSpace(zx), _RowSpace(zy), self.alpha_))

    def _set_projection(self, zx: np.ndarray, zy: np.ndarray, canonical: _Canonical) -> None:
        self.x_weights_, self.y_weights_, self.correlations_ = canonical.first(self.n_components_)
        # the training embeddings are the neighbours CSLS measures hubness against
        self.x_reference_, self.y_reference_ = self._project(zx, "x"), self._project(zy, "y")

    def _embed(self, values: Any, side: str) -> np.ndarray:
        values = _matrix(values, side.upper())
        scaling = self.x_scaling_ if side == "x" else self.y_scaling_
        if values.shape[1] != scaling.mean.shape[0]:
            raise InputError(
                f"{side.upper()} has {values.shape[1]} features; the matcher was fitted on {scaling.mean.shape[0]}"
            )
        return self._project(scaling.apply(values), side)

    def _project(self, standardised: np.ndarray, side: str) -> np.ndarray:
        weights = self.x_weights_ if side == "x" else self.y_weights_
        z = (standardised @ weights) * self.correlations_
        return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)

    def _csls(self, cosine: np.ndarray, a: np.ndarray, b: np.ndarray, query: str) -> np.ndarray:
        if not self.csls_k_:
            return cosine
        # each side's neighbours are the training embeddings of the other side
        a_reference = self.y_reference_ if query == "x" else self.x_reference_
        b_reference = self.x_reference_ if query == "x" else self.y_reference_
        ra, rb = _mean_top_k(a, a_reference, self.csls_k_), _mean_top_k(b, b_reference, self.csls_k_)
        if cosine.ndim == 1:
            return 2 * cosine - ra - rb
        return 2 * cosine - ra[:, None] - rb[None, :]

    def _threshold(self) -> float:
        return -self.intercept_ / self.coef_ if self.coef_ > 0 else np.inf

    def _check_fitted(self) -> None:
        if not hasattr(self, "x_weights_"):
            raise StrategyError(
                "this CCAMatcher is not fitted yet: call fit(X, Y) with paired features first"
            )


class _Scaling:
    """Per-column standardisation, each block then scaled to unit total variance."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray):
        self.mean, self.scale = mean, scale

    @classmethod
    def fit(cls, values: np.ndarray, widths: list[int]) -> _Scaling:
        mean, std = values.mean(axis=0), values.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)
        block = np.repeat(np.sqrt(np.asarray(widths, dtype=float)), widths)
        return cls(mean, std * block)

    def apply(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.scale


class _RowSpace:
    """A thin SVD ``z = u s vt`` of centred features, kept so every ``alpha`` reuses it."""

    def __init__(self, z: np.ndarray):
        u, s, vt = np.linalg.svd(z, full_matrices=False)
        keep = s > s[0] * 1e-10 if s.size and s[0] > 0 else np.zeros(s.shape, dtype=bool)
        self.scores, self.s, self.vt, self.n = u[:, keep] * s[keep], s[keep], vt[keep], len(z)

    def inverse_root(self, alpha: float) -> np.ndarray:
        """(C + alpha I)^(-1/2) in this basis, where the covariance C is diagonal."""
        return 1.0 / np.sqrt(self.s**2 / self.n + alpha)


class _Canonical:
    """Every canonical pair of one ridge CCA, sliced to the first k for each ``n_components``."""

    def __init__(self, x: _RowSpace, y: _RowSpace, wx: np.ndarray, wy: np.ndarray, cross: np.ndarray):
        self.p, self.correlations, qt = np.linalg.svd(cross, full_matrices=False)
        self.q, self.x, self.y, self.wx, self.wy = qt.T, x, y, wx, wy

    def first(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Projections [dx, k], [dy, k] and correlations [k] (fewer where the rank is lower)."""
        x_weights = self.x.vt.T @ (self.wx[:, None] * self.p[:, :k])
        y_weights = self.y.vt.T @ (self.wy[:, None] * self.q[:, :k])
        return x_weights, y_weights, self.correlations[:k]


def _canonical(x: _RowSpace, y: _RowSpace, alpha: float) -> _Canonical:
    """Ridge CCA of centred features, solved in each side's row space, where the regularised
    covariance is diagonal: exact, and after the row-space SVDs (linear in the features) the cost
    no longer depends on the number of features."""
    wx, wy = x.inverse_root(alpha), y.inverse_root(alpha)
    cross = (wx[:, None] * (x.scores.T @ y.scores) * wy[None, :]) / x.n
    return _Canonical(x, y, wx, wy, cross)


def _out_of_fold_scores(
    X: np.ndarray,
    Y: np.ndarray,
    x_widths: list[int],
    y_widths: list[int],
    components: list[int],
    alphas: list[float],
    neighbours: list[int],
    cv: int,
    seed: int,
) -> tuple[dict[tuple[int, float, int], np.ndarray], np.ndarray]:
    """Each candidate's CSLS scores of the held-out fold's true pairs and of as many mismatched ones
    (each row with another row of its fold), every fold scored by a matcher fitted on the others."""
    rng = np.random.default_rng(seed)
    folds = np.array_split(rng.permutation(len(X)), cv)
    candidates = list(itertools.product(components, alphas, neighbours))
    scores: dict[tuple[int, float, int], list[np.ndarray]] = {c: [] for c in candidates}
    labels = []
    for fold in folds:
        train = np.setdiff1d(np.arange(len(X)), fold)
        other = fold[(np.arange(len(fold)) + rng.integers(1, len(fold), size=len(fold))) % len(fold)]
        rows_x, rows_y = np.concatenate([fold, fold]), np.concatenate([fold, other])
        labels.append(np.r_[np.ones(len(fold)), np.zeros(len(fold))])
        inner = CCAMatcher(x_widths=x_widths, y_widths=y_widths)
        inner.x_scaling_ = _Scaling.fit(X[train], x_widths)
        inner.y_scaling_ = _Scaling.fit(Y[train], y_widths)
        zx, zy = inner.x_scaling_.apply(X[train]), inner.y_scaling_.apply(Y[train])
        x_space, y_space = _RowSpace(zx), _RowSpace(zy)  # one SVD per side and fold for every candidate
        for alpha in alphas:
            canonical = _canonical(x_space, y_space, alpha)  # one CCA per alpha for every k
            for k in components:
                inner.n_components_, inner.alpha_ = k, alpha
                inner._set_projection(zx, zy, canonical)
                for csls_k in neighbours:
                    # the same neighbourhood as a share of the references: fewer of them, fewer neighbours
                    inner.csls_k_ = max(1, round(csls_k * len(train) / len(X))) if csls_k else 0
                    scores[(k, alpha, csls_k)].append(inner.score_pairs(X[rows_x], Y[rows_y]))
    return {c: np.concatenate(v) for c, v in scores.items()}, np.concatenate(labels)


def _mean_top_k(queries: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    similarity = queries @ reference.T
    k = min(k, reference.shape[0])
    return np.partition(similarity, -k, axis=1)[:, -k:].mean(axis=1)


def _roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def _logistic_fit(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1e4).fit(scores[:, None], labels)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def _values(value: Any) -> list[Any]:
    return (
        list(value) if isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, str) else [value]
    )


def _candidates(value: Any, name: str, minimum: int) -> list[int]:
    """The distinct integers >= minimum in ``value`` (one, or a sequence), in the given order."""
    values = _values(value)
    if not values or not all(_is_integer(v, minimum) for v in values):
        raise ParameterError(
            f"{name} must be an integer >= {minimum} or a non-empty list of them, got {value!r}"
        )
    return list(dict.fromkeys(int(v) for v in values))


def _is_integer(value: Any, minimum: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and bool(value >= minimum)


def _alphas(value: Any) -> list[float]:
    values = _values(value)
    try:
        alphas = [float(v) for v in values]
    except (TypeError, ValueError):
        alphas = []
    if not alphas or not all(math.isfinite(a) and a > 0 for a in alphas):
        raise ParameterError(f"alpha must be a finite number > 0 or a non-empty list of them, got {value!r}")
    return list(dict.fromkeys(alphas))


def _widths(widths: Sequence[int] | None, values: np.ndarray, name: str) -> list[int]:
    if widths is None:
        return [values.shape[1]]
    blocks = _values(widths)
    if not all(_is_integer(w, 1) for w in blocks) or sum(int(w) for w in blocks) != values.shape[1]:
        raise ParameterError(
            f"{name}={widths!r} must be positive integers summing to the {values.shape[1]} features"
        )
    return [int(w) for w in blocks]


def _matrix(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor (any dtype, bfloat16 too)
        values = values.detach().float().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or not array.size:
        raise InputError(
            f"{name} must be a non-empty 2-D array [rows, features], got shape {list(array.shape)}"
        )
    if not np.isfinite(array).all():
        raise InputError(f"{name} has NaN or infinite values")
    return array


def _paired(X: Any, Y: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    X, Y = _matrix(X, "X"), _matrix(Y, "Y")
    if len(X) != len(Y):
        raise InputError(f"{what}: X has {len(X)} rows and Y {len(Y)}; row i of X pairs with row i of Y")
    return X, Y


__all__ = ["CCAMatcher"]
