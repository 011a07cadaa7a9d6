"""CCAMatcher: ridge CCA + CSLS matching of two modalities, calibrated out of fold."""

from __future__ import annotations

import numpy as np
import pytest

from modelfusion.errors import InputError, ModelFusionWarning, ParameterError, StrategyError
from modelfusion.multimodal import CCAMatcher


def _paired(n: int, seed: int = 0, dx: int = 40, dy: int = 30, latent: int = 6, noise: float = 0.5):
    """Two views of one latent code: row i of X and row i of Y describe the same item."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, latent))
    X = z @ rng.normal(size=(latent, dx)) + noise * rng.normal(size=(n, dx))
    Y = np.tanh(z @ rng.normal(size=(latent, dy))) + noise * rng.normal(size=(n, dy))
    return X, Y


@pytest.fixture(scope="module")
def data():
    X, Y = _paired(500, seed=0)
    return X[:400], Y[:400], X[400:], Y[400:]


@pytest.fixture(scope="module")
def matcher(data):
    X, Y, _, _ = data
    return CCAMatcher(n_components=(4, 8), alpha=(0.01, 0.1), csls_k=(0, 10), seed=0).fit(X, Y)


def test_fit_returns_self_and_learns_the_documented_attributes(data):
    X, Y, _, _ = data
    matcher = CCAMatcher(n_components=6, alpha=0.05)
    assert matcher.fit(X, Y) is matcher
    assert (matcher.n_components_, matcher.alpha_, matcher.csls_k_) == (6, 0.05, 10)
    assert matcher.correlations_.shape == (6,) and (np.diff(matcher.correlations_) <= 1e-12).all()
    assert matcher.x_weights_.shape == (40, 6) and matcher.y_weights_.shape == (30, 6)
    assert set(matcher.cv_scores_) == {(6, 0.05, 10)} and matcher.coef_ > 0
    assert matcher.get_params()["alpha"] == 0.05


def test_held_out_true_pairs_are_told_from_mismatched_ones(data, matcher):
    _, _, X, Y = data
    shuffled = np.roll(np.arange(len(Y)), 1)
    true, false = matcher.score_pairs(X, Y), matcher.score_pairs(X, Y[shuffled])
    labels = np.r_[np.ones(len(X)), np.zeros(len(X))]
    predicted = np.r_[matcher.predict(X, Y), matcher.predict(X, Y[shuffled])]
    assert (true > false).mean() > 0.95
    assert (predicted == labels).mean() > 0.9
    proba = matcher.predict_proba(X, Y)
    assert proba.shape == (len(X), 2) and np.allclose(proba.sum(axis=1), 1)
    assert ((proba >= 0) & (proba <= 1)).all() and proba[:, 1].mean() > 0.8


def test_the_candidate_with_the_best_out_of_fold_auc_is_chosen(matcher):
    assert set(matcher.cv_scores_) == {(k, a, n) for k in (4, 8) for a in (0.01, 0.1) for n in (0, 10)}
    best = max(matcher.cv_scores_, key=matcher.cv_scores_.get)
    assert (matcher.n_components_, matcher.alpha_, matcher.csls_k_) == best
    assert all(0.5 < auc <= 1 for auc in matcher.cv_scores_.values())


def test_retrieval_finds_the_true_partner_in_both_directions(data, matcher):
    _, _, X, Y = data
    image_to_text = matcher.similarity(X, Y, query="x")
    text_to_image = matcher.similarity(Y, X, query="y")
    assert image_to_text.shape == text_to_image.shape == (100, 100)
    assert (image_to_text.argmax(axis=1) == np.arange(100)).mean() > 0.3  # chance: 0.01
    assert (text_to_image.argmax(axis=1) == np.arange(100)).mean() > 0.3
    # one CSLS score, whichever side asks: pairs are scored the same in both matrices
    assert np.allclose(image_to_text, text_to_image.T)
    assert np.allclose(np.diag(image_to_text), matcher.score_pairs(X, Y))


def test_csls_corrects_plain_cosine_by_each_sides_hubness(data):
    X, Y, Xt, Yt = data
    plain = CCAMatcher(n_components=8, alpha=0.05, csls_k=0).fit(X, Y)
    csls = CCAMatcher(n_components=8, alpha=0.05, csls_k=10).fit(X, Y)
    a, b = plain.transform(Xt, Yt)
    assert np.allclose(plain.similarity(Xt, Yt), a @ b.T)
    a, b = csls.transform(Xt, Yt)
    hub_x = np.sort(a @ csls.y_reference_.T, axis=1)[:, -10:].mean(axis=1)
    hub_y = np.sort(b @ csls.x_reference_.T, axis=1)[:, -10:].mean(axis=1)
    assert np.allclose(csls.similarity(Xt, Yt), 2 * a @ b.T - hub_x[:, None] - hub_y[None, :])


@pytest.mark.parametrize(("n", "dx", "dy"), [(400, 40, 30), (60, 500, 300)])
def test_the_row_space_solution_is_exact_ridge_cca(n, dx, dy):
    X, Y = _paired(n, seed=3, dx=dx, dy=dy)
    alpha, k = 0.03, 5
    matcher = CCAMatcher(n_components=k, alpha=alpha, cv=3).fit(X, Y)
    zx, zy = matcher.x_scaling_.apply(X), matcher.y_scaling_.apply(Y)
    cxx, cyy, cxy = zx.T @ zx / n + alpha * np.eye(dx), zy.T @ zy / n + alpha * np.eye(dy), zx.T @ zy / n

    def inverse_root(c):
        values, vectors = np.linalg.eigh(c)
        return vectors @ np.diag(values**-0.5) @ vectors.T

    direct = np.linalg.svd(inverse_root(cxx) @ cxy @ inverse_root(cyy), compute_uv=False)[:k]
    assert np.allclose(matcher.correlations_, direct, atol=1e-10)
    wx, wy = matcher.x_weights_, matcher.y_weights_
    # (C + alpha I)-orthonormal canonical directions on both sides, diagonal cross-covariance
    assert np.allclose(wx.T @ cxx @ wx, np.eye(k), atol=1e-8)
    assert np.allclose(wy.T @ cyy @ wy, np.eye(k), atol=1e-8)
    assert np.allclose(wx.T @ cxy @ wy, np.diag(matcher.correlations_), atol=1e-8)


def test_unrelated_modalities_score_at_chance_out_of_fold_and_match_nothing():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(80, 200)), rng.normal(size=(80, 150))
    with pytest.warns(ModelFusionWarning, match="do not predict each other"):
        matcher = CCAMatcher(n_components=(4, 16), alpha=0.01, cv=4, seed=0).fit(X, Y)
    assert matcher.correlations_[0] > 0.5  # in sample, wide noise correlates strongly ...
    assert max(matcher.cv_scores_.values()) < 0.65  # ... out of fold it does not
    assert matcher.predict(X, Y).sum() == 0 and np.allclose(matcher.predict_proba(X, Y), 0.5)


def test_predict_agrees_with_predict_proba(data, matcher):
    _, _, X, Y = data
    Y = np.r_[Y[:50], np.roll(Y[50:], 1, axis=0)]
    assert np.array_equal(matcher.predict(X, Y), (matcher.predict_proba(X, Y)[:, 1] > 0.5).astype(int))


def test_repeated_candidates_and_more_components_than_the_rank(data):
    X, Y, _, _ = data
    matcher = CCAMatcher(n_components=(8, 8, 100, 500), alpha=(0.1, 0.1), csls_k=[5, 5]).fit(X, Y)
    assert set(matcher.cv_scores_) == {(8, 0.1, 5), (30, 0.1, 5)}  # 30: Y's width, the rank
    assert len(matcher.correlations_) == matcher.n_components_


def test_blocks_are_standardised_to_the_same_total_variance(data):
    X, Y, _, _ = data
    matcher = CCAMatcher(n_components=4, x_widths=[10, 30]).fit(X, Y)
    z = matcher.x_scaling_.apply(X)
    assert np.isclose(z[:, :10].var(axis=0).sum(), 1) and np.isclose(z[:, 10:].var(axis=0).sum(), 1)


def test_a_seed_makes_the_fit_reproducible(data):
    X, Y, Xt, Yt = data
    first = CCAMatcher(n_components=(4, 8), seed=7).fit(X, Y)
    second = CCAMatcher(n_components=(4, 8), seed=7).fit(X, Y)
    assert first.cv_scores_ == second.cv_scores_
    assert np.array_equal(first.predict_proba(Xt, Yt), second.predict_proba(Xt, Yt))


def test_torch_tensors_are_accepted(data, matcher):
    torch = pytest.importorskip("torch")
    _, _, X, Y = data
    assert matcher.score_pairs(torch.from_numpy(X).bfloat16(), torch.from_numpy(Y).bfloat16()).shape == (100,)
    assert np.allclose(
        matcher.score_pairs(torch.from_numpy(X), torch.from_numpy(Y)), matcher.score_pairs(X, Y)
    )


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"n_components": 0}, ParameterError, "n_components must be an integer >= 1"),
        ({"n_components": ()}, ParameterError, "n_components must be .* non-empty list"),
        ({"n_components": 4.5}, ParameterError, "n_components must be an integer"),
        ({"alpha": -1.0}, ParameterError, "alpha must be a finite number > 0"),
        ({"alpha": float("nan")}, ParameterError, "alpha must be a finite number > 0"),
        ({"alpha": "lots"}, ParameterError, "alpha must be a finite number"),
        ({"csls_k": (10, -1)}, ParameterError, "csls_k must be an integer >= 0"),
        ({"x_widths": [10, 10]}, ParameterError, "x_widths=.*summing to the 40 features"),
        ({"y_widths": ["a"]}, ParameterError, "y_widths=.*positive integers"),
        ({"cv": 1}, ParameterError, "cv must be an integer >= 2, got 1"),
        ({"cv": 2.5}, ParameterError, "cv must be an integer >= 2, got 2.5"),
    ],
)
def test_bad_parameters_are_named(data, options, error, message):
    X, Y, _, _ = data
    with pytest.raises(error, match=message):
        CCAMatcher(**options).fit(X, Y)


def test_bad_inputs_are_named(data, matcher):
    X, Y, Xt, Yt = data
    with pytest.raises(InputError, match="X has 400 rows and Y 399"):
        CCAMatcher().fit(X, Y[:-1])
    with pytest.raises(InputError, match="cv=5 folds need at least 10 pairs, got 6"):
        CCAMatcher().fit(X[:6], Y[:6])
    with pytest.raises(InputError, match="NaN"):
        CCAMatcher().fit(np.where(np.eye(400, 40) > 0, np.nan, X), Y)
    with pytest.raises(InputError, match="Y has 29 features; the matcher was fitted on 30"):
        matcher.score_pairs(Xt, Yt[:, :29])
    with pytest.raises(InputError, match="2-D"):
        matcher.score_pairs(Xt[0], Yt[0])
    with pytest.raises(ParameterError, match="query must be"):
        matcher.similarity(Xt, Yt, query="image")
    for method in ("predict", "predict_proba", "score_pairs"):
        with pytest.raises(StrategyError, match="not fitted"):
            getattr(CCAMatcher(), method)(Xt, Yt)


def test_recall_at_k_reads_the_true_pairs_off_the_diagonal(data, matcher):
    from modelfusion.multimodal import recall_at_k, retrieval_recall

    similarity = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.1], [0.3, 0.5, 0.1]])
    assert recall_at_k(similarity, ks=(1, 2)) == {"R@1": 1 / 3, "R@2": 2 / 3}
    _, _, X, Y = data
    a, b = matcher.transform(X, Y)
    torch = pytest.importorskip("torch")
    assert recall_at_k(a @ b.T) == retrieval_recall(torch.from_numpy(a), torch.from_numpy(b))
    assert recall_at_k(np.zeros((4, 4)), ks=(1, 4)) == {"R@1": 0.0, "R@4": 1.0}  # ties count against
    bf16 = torch.from_numpy(a @ b.T).to(torch.bfloat16)
    assert set(recall_at_k(bf16)) == {"R@1", "R@5"}
    with pytest.raises(ParameterError, match="square"):
        recall_at_k(similarity[:2])
    with pytest.raises(ParameterError, match="NaN"):
        recall_at_k(np.full((2, 2), np.nan))
    with pytest.raises(ParameterError, match="ks must be ranks >= 1"):
        recall_at_k(similarity, ks=(0,))


def test_a_saved_matcher_reloads_without_pickle_and_scores_the_same(tmp_path, data, matcher):
    _, _, X, Y = data
    path = matcher.save(tmp_path / "matcher.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["matcher.safetensors"]  # no temp file left
    loaded = CCAMatcher.load(path)
    assert np.array_equal(loaded.predict_proba(X, Y), matcher.predict_proba(X, Y))
    assert (
        np.array_equal(loaded.predict(X, Y), matcher.predict(X, Y))
        and loaded.threshold_ == matcher.threshold_
    )
    assert np.array_equal(loaded.similarity(Y, X, query="y"), matcher.similarity(Y, X, query="y"))
    assert loaded.cv_scores_ == matcher.cv_scores_
    assert (loaded.n_components_, loaded.alpha_, loaded.csls_k_) == (
        matcher.n_components_,
        matcher.alpha_,
        matcher.csls_k_,
    )
    assert loaded.get_params()["n_components"] == [4, 8]
    X_train, Y_train, _, _ = data
    numpy_params = CCAMatcher(n_components=np.array([4, 6]), alpha=np.float32(0.05), x_widths=[np.int64(40)])
    reloaded = CCAMatcher.load(numpy_params.fit(X_train, Y_train).save(tmp_path / "numpy.safetensors"))
    assert reloaded.get_params()["n_components"] == [4, 6] and reloaded.x_widths == [40]


def test_loading_something_else_names_the_file(tmp_path, data):
    from safetensors.numpy import save_file

    from modelfusion.errors import BundleError

    with pytest.raises(BundleError, match="not a file"):
        CCAMatcher.load(tmp_path / "none.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BundleError, match="junk.safetensors is not a readable CCAMatcher"):
        CCAMatcher.load(tmp_path / "junk.safetensors")
    save_file({"w": np.zeros(3)}, str(tmp_path / "other.safetensors"), metadata={"format": "weights"})
    with pytest.raises(BundleError, match="other.safetensors is not a saved CCAMatcher .format 'weights'"):
        CCAMatcher.load(tmp_path / "other.safetensors")
    with pytest.raises(StrategyError, match="not fitted"):
        CCAMatcher().save(tmp_path / "unfitted.safetensors")
    assert not (tmp_path / "unfitted.safetensors").exists()


def _tampered(path, tmp_path, arrays=None, metadata=None):
    """A copy of the saved matcher at ``path`` with some arrays / metadata entries replaced."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with safe_open(str(path), framework="numpy") as handle:
        meta = dict(handle.metadata())
    tensors = {**load_file(str(path)), **(arrays or {})}
    meta.update(metadata or {})
    out = tmp_path / "tampered.safetensors"
    save_file(
        {k: v for k, v in tensors.items() if v is not None},
        str(out),
        metadata={k: v for k, v in meta.items() if v is not None},
    )
    return out


@pytest.mark.parametrize(
    ("arrays", "metadata", "message"),
    [
        ({"correlations_": np.ones(1)}, None, "do not fit together"),
        ({"x_mean": np.zeros(39)}, None, "do not fit together"),
        ({"x_scale": np.zeros(40)}, None, "do not fit together"),
        ({"x_reference_": np.zeros((0, 8))}, None, "do not fit together"),
        ({"x_weights_": np.ones((40, 8), dtype=np.float32)}, None, "finite float64"),
        ({"y_reference_": np.full((400, 8), np.inf)}, None, "finite float64"),
        ({"x_weights_": None}, None, "not a readable CCAMatcher"),
        (None, {"state": None}, "lacks \\['state'\\]"),
        (None, {"state": "[1, 2]"}, "is a list, expected a dict"),
        (None, {"params": '{"colour": 1}'}, "not a readable CCAMatcher"),
        (
            None,
            {"state": '{"n_components_": 8, "alpha_": NaN, "csls_k_": 0, "coef_": 1, "intercept_": 0}'},
            "NaN",
        ),
        (
            None,
            {"state": '{"n_components_": 8, "alpha_": 0.1, "csls_k_": -3, "coef_": 1, "intercept_": 0}'},
            "out of range",
        ),
        (
            None,
            {"state": '{"n_components_": 8, "alpha_": 0.1, "csls_k_": "5", "coef_": 1, "intercept_": 0}'},
            "out of range",
        ),
        (
            None,
            {"state": '{"n_components_": 8, "alpha_": 0.1, "csls_k_": 5, "coef_": -1, "intercept_": 0}'},
            "coef_ >= 0",
        ),
    ],
)
def test_a_tampered_file_is_refused_at_load_naming_it(tmp_path, data, arrays, metadata, message):
    from modelfusion.errors import BundleError

    X, Y, _, _ = data
    good = CCAMatcher(n_components=8, alpha=0.1, csls_k=5).fit(X, Y).save(tmp_path / "good.safetensors")
    with pytest.raises(BundleError, match=f"tampered.safetensors.*{message}"):
        CCAMatcher.load(_tampered(good, tmp_path, arrays, metadata))


def test_a_matcher_that_matches_nothing_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(80, 200)), rng.normal(size=(80, 150))
    with pytest.warns(ModelFusionWarning):
        matcher = CCAMatcher(n_components=4, cv=4).fit(X, Y)
    loaded = CCAMatcher.load(matcher.save(tmp_path / "none.safetensors"))
    assert loaded.threshold_ == np.inf and loaded.predict(X, Y).sum() == 0
    assert np.array_equal(loaded.predict_proba(X, Y), matcher.predict_proba(X, Y))
