"""Cross-modal matching fitted in closed form: ridge CCA between two modalities' features, scored
with CSLS and calibrated by cross-validation.

Canonical correlation analysis (Hotelling, 1936) finds the projections of image features ``X`` and
text features ``Y`` whose paired rows correlate most; with ridge regularisation (Vinod, 1976) it is
the closed-form optimum of a low-rank bilinear similarity ``<A x, B y>`` between the two. Cosine
similarity in that space suffers from *hubs* (a few captions close to every image); CSLS (Conneau
et al., 2018, "Word translation without parallel data") subtracts each side's mean similarity to its
``csls_k`` nearest neighbours in the training set of the other side. Out-of-fold scores choose the
regularisation and the number of components (by ROC AUC) and fit a logistic calibration, so
:meth:`CCAMatcher.predict_proba` is a probability that a pair matches, learned without test rows.

Examples
--------
>>> matcher = CCAMatcher(n_components=64, alpha=(0.01, 0.03), seed=0).fit(image_features, text_features)
>>> matcher.predict_proba(image_features_new, text_features_new)[:, 1]      # row i with row i
>>> matcher.similarity(text_features_new, image_features_new, query="y")      # [texts, images]
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from modelfusion.errors import InputError, ParameterError, StrategyError


class CCAMatcher:
    """Image-text (any two modalities) matching by ridge CCA + CSLS, calibrated out of fold.

    Parameters
    ----------
    n_components : canonical components kept (an int, or several to choose from by CV).
    alpha : ridge regularisation added to each side's covariance, relative to the features'
        total variance of one block (a float, or several to choose from by CV).
    csls_k : neighbours of the CSLS hubness correction (0: plain cosine similarity).
    x_widths, y_widths : widths of the feature blocks concatenated in X (Y), e.g. the stages of a
        :class:`MultiScaleEncoder`; each block is standardised and given the same total variance,
        so a wide block does not drown a narrow one. Default: one block.
    cv : folds for choosing ``n_components``/``alpha`` and fitting the calibration.
    seed : the folds and the mismatched pairs they are scored on.

    Attributes
    ----------
    n_components_, alpha_ : the chosen values.
    correlations_ : float array [n_components_], the regularised canonical correlations.
    cv_scores_ : ``{(n_components, alpha): out-of-fold ROC AUC}`` of every candidate.
    coef_, intercept_ : the logistic calibration ``p = sigmoid(coef_ * score + intercept_)``.
    threshold_ : the score above which a pair is predicted to match (p = 0.5).

    Examples
    --------
    >>> matcher = CCAMatcher(n_components=32, alpha=0.03).fit(X_train, Y_train)
    >>> matcher.predict(X_test, Y_test)            # 1 where row i of X matches row i of Y
    """

    def __init__(
        self,
        n_components: int | Sequence[int] = 64,
        alpha: float | Sequence[float] = 0.01,
        *,
        csls_k: int = 10,
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

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {
            "n_components": self.n_components,
            "alpha": self.alpha,
            "csls_k": self.csls_k,
            "x_widths": self.x_widths,
            "y_widths": self.y_widths,
            "cv": self.cv,
            "seed": self.seed,
        }

    def fit(self, X: Any, Y: Any) -> CCAMatcher:
        """Learn from paired rows: row i of ``X`` [n, dx] (one modality's features) matches row i of
        ``Y`` [n, dy] (the other's). Rows must be distinct items (a mismatched pair is two rows)."""
        X, Y = _paired(X, Y, "fit")
        components, alphas = (
            _candidates(self.n_components, "n_components", int),
            _candidates(self.alpha, "alpha", float),
        )
        if any(c < 1 for c in components) or any(a <= 0 for a in alphas):
            raise ParameterError(f"n_components must be >= 1 and alpha > 0, got {components} and {alphas}")
        if self.csls_k < 0:
            raise ParameterError(f"csls_k must be >= 0, got {self.csls_k}")
        if self.cv < 2 or len(X) < 2 * self.cv:
            raise InputError(
                f"cv={self.cv} folds need cv >= 2 and at least {2 * self.cv} pairs, got {len(X)}"
            )
        x_widths, y_widths = _widths(self.x_widths, X, "x_widths"), _widths(self.y_widths, Y, "y_widths")
        scores, labels = _out_of_fold_scores(
            X, Y, x_widths, y_widths, components, alphas, self.csls_k, self.cv, self.seed
        )
        self.cv_scores_ = {candidate: _roc_auc(scores[candidate], labels) for candidate in scores}
        self.n_components_, self.alpha_ = max(self.cv_scores_, key=lambda c: self.cv_scores_[c])
        self.coef_, self.intercept_ = _logistic_fit(scores[(self.n_components_, self.alpha_)], labels)
        self.threshold_ = -self.intercept_ / self.coef_
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
        p = 1.0 / (1.0 + np.exp(-(self.coef_ * self.score_pairs(X, Y) + self.intercept_)))
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, X: Any, Y: Any) -> np.ndarray:
        """1 where row i of X matches row i of Y (score above ``threshold_``), else 0."""
        return (self.score_pairs(X, Y) > self.threshold_).astype(np.int64)

    def _fit_projection(self, X: np.ndarray, Y: np.ndarray, x_widths: list[int], y_widths: list[int]) -> None:
        self.x_scaling_, self.y_scaling_ = _Scaling.fit(X, x_widths), _Scaling.fit(Y, y_widths)
        zx, zy = self.x_scaling_.apply(X), self.y_scaling_.apply(Y)
        self._set_projection(zx, zy, _RowSpace(zx), _RowSpace(zy))

    def _set_projection(self, zx: np.ndarray, zy: np.ndarray, x: _RowSpace, y: _RowSpace) -> None:
        self.x_weights_, self.y_weights_, self.correlations_ = _ridge_cca(
            x, y, self.n_components_, self.alpha_
        )
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
        if not self.csls_k:
            return cosine
        # each side's neighbours are the training embeddings of the other side
        a_reference = self.y_reference_ if query == "x" else self.x_reference_
        b_reference = self.x_reference_ if query == "x" else self.y_reference_
        ra, rb = _mean_top_k(a, a_reference, self.csls_k), _mean_top_k(b, b_reference, self.csls_k)
        if cosine.ndim == 1:
            return 2 * cosine - ra - rb
        return 2 * cosine - ra[:, None] - rb[None, :]

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
    """A thin SVD ``z = u s vt`` of centred features, kept so every ``alpha`` and ``k`` reuses it."""

    def __init__(self, z: np.ndarray):
        u, s, vt = np.linalg.svd(z, full_matrices=False)
        keep = s > s[0] * 1e-10
        self.scores, self.s, self.vt, self.n = u[:, keep] * s[keep], s[keep], vt[keep], len(z)

    def inverse_root(self, alpha: float) -> np.ndarray:
        """(C + alpha I)^(-1/2) in this basis, where the covariance C is diagonal."""
        return 1.0 / np.sqrt(self.s**2 / self.n + alpha)


def _ridge_cca(x: _RowSpace, y: _RowSpace, k: int, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Projections [dx, k], [dy, k] and correlations [k] of ridge CCA on centred features.

    Works in each side's row space, where the regularised covariance is diagonal: exact, and as
    cheap for 10,000 features as for 100 when there are fewer rows than features.
    """
    wx, wy = x.inverse_root(alpha), y.inverse_root(alpha)
    cross = (wx[:, None] * (x.scores.T @ y.scores) * wy[None, :]) / x.n
    p, correlations, qt = np.linalg.svd(cross, full_matrices=False)
    k = min(k, len(correlations))
    x_weights = x.vt.T @ (wx[:, None] * p[:, :k])
    y_weights = y.vt.T @ (wy[:, None] * qt[:k].T)
    return x_weights, y_weights, correlations[:k]


def _out_of_fold_scores(
    X: np.ndarray,
    Y: np.ndarray,
    x_widths: list[int],
    y_widths: list[int],
    components: list[int],
    alphas: list[float],
    csls_k: int,
    cv: int,
    seed: int,
) -> tuple[dict[tuple[int, float], np.ndarray], np.ndarray]:
    """Each candidate's CSLS scores of the held-out fold's true pairs and of as many mismatched ones
    (each row with another row of its fold), every fold scored by a matcher fitted on the others."""
    rng = np.random.default_rng(seed)
    folds = np.array_split(rng.permutation(len(X)), cv)
    scores: dict[tuple[int, float], list[np.ndarray]] = {c: [] for c in itertools.product(components, alphas)}
    labels = []
    for fold in folds:
        train = np.setdiff1d(np.arange(len(X)), fold)
        other = fold[(np.arange(len(fold)) + rng.integers(1, len(fold), size=len(fold))) % len(fold)]
        rows_x, rows_y = np.concatenate([fold, fold]), np.concatenate([fold, other])
        labels.append(np.r_[np.ones(len(fold)), np.zeros(len(fold))])
        inner = CCAMatcher(csls_k=csls_k, x_widths=x_widths, y_widths=y_widths)
        inner.x_scaling_, inner.y_scaling_ = (
            _Scaling.fit(X[train], x_widths),
            _Scaling.fit(Y[train], y_widths),
        )
        zx, zy = inner.x_scaling_.apply(X[train]), inner.y_scaling_.apply(Y[train])
        x_space, y_space = _RowSpace(zx), _RowSpace(zy)  # one SVD per fold for every candidate
        for (k, alpha), out in scores.items():
            inner.n_components_, inner.alpha_ = k, alpha
            inner._set_projection(zx, zy, x_space, y_space)
            out.append(inner.score_pairs(X[rows_x], Y[rows_y]))
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


def _candidates(value: Any, name: str, kind: type) -> list[Any]:
    values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
    try:
        return [kind(v) for v in values]
    except (TypeError, ValueError) as error:
        raise ParameterError(f"{name} must be a number or a list of numbers, got {value!r}") from error


def _widths(widths: Sequence[int] | None, values: np.ndarray, name: str) -> list[int]:
    if widths is None:
        return [values.shape[1]]
    widths = [int(w) for w in widths]
    if sum(widths) != values.shape[1] or min(widths) < 1:
        raise ParameterError(f"{name}={widths} must be positive and sum to the {values.shape[1]} features")
    return widths


def _matrix(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
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
