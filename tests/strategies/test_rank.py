"""RankAverage: Borda count for multiclass, empirical-CDF ranks for binary and multi-label."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

from modelfusion.errors import StrategyError
from modelfusion.predictions import PredictionSet
from modelfusion.strategies.rank import MAX_QUANTILES, RankAverage


def _binary(n: int, members: int = 3, seed: int = 0) -> PredictionSet:
    rng = np.random.default_rng(seed)
    return PredictionSet(rng.random((members, n, 1)).astype(np.float32))  # expanded to [1 - p, p]


def test_borda_averages_class_ranks_and_normalises_to_one():
    p = np.array([[[0.5, 0.3, 0.2]], [[0.1, 0.6, 0.3]]], dtype=np.float32)  # ranks [2,1,0] and [0,2,1]
    preds = PredictionSet(p)
    fused = RankAverage().fit(preds).combine(preds)
    np.testing.assert_allclose(fused, [[1 / 3, 1 / 2, 1 / 6]])


def test_borda_gives_tied_classes_the_same_rank():
    preds = PredictionSet(np.array([[[0.4, 0.4, 0.2]]], dtype=np.float32))
    fused = RankAverage().fit(preds).combine(preds)
    np.testing.assert_allclose(fused, [[0.5, 0.5, 0.0]])


def test_binary_rank_is_the_empirical_cdf_of_the_fit_scores():
    fit = PredictionSet(np.array([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32))
    new = PredictionSet(np.array([[0.05, 0.25, 0.4, 0.9]], dtype=np.float32))
    fused = RankAverage().fit(fit).combine(new)
    np.testing.assert_allclose(fused[:, 1], [0.0, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(fused[:, 0], 1.0 - fused[:, 1])


def test_binary_rank_averages_the_members_ranks():
    fit = PredictionSet(np.array([[0.1, 0.2, 0.3, 0.4], [0.6, 0.7, 0.8, 0.9]], dtype=np.float32))
    new = PredictionSet(np.array([[0.35], [0.65]], dtype=np.float32))  # ranks 0.75 and 0.25
    np.testing.assert_allclose(RankAverage().fit(fit).combine(new)[:, 1], [0.5])


def test_binary_rank_ignores_monotone_rescaling_of_a_member():
    rng = np.random.default_rng(0)
    # Well-separated scores, so float32 rounding cannot create ties after the rescaling.
    positive = np.stack([rng.permutation(1000)[:200] / 1000.0 for _ in range(3)])[:, :, None]
    preds = PredictionSet(positive.astype(np.float32))
    rescaled = PredictionSet((positive**2).astype(np.float32))
    np.testing.assert_allclose(
        RankAverage().fit(rescaled).combine(rescaled), RankAverage().fit(preds).combine(preds), atol=1e-6
    )


def test_at_most_1024_quantiles_are_kept_per_member():
    preds = _binary(3000)
    assert RankAverage().fit(preds).quantiles_.shape == (3, 1, MAX_QUANTILES)


def test_multilabel_ranks_each_label():
    rng = np.random.default_rng(0)
    preds = PredictionSet(rng.random((3, 80, 4)).astype(np.float32), task="multilabel")
    rank = RankAverage().fit(preds)
    assert rank.quantiles_.shape == (3, 4, 80)
    fused = rank.combine(preds)
    assert fused.shape == (80, 4)
    assert ((fused >= 0) & (fused <= 1)).all()


@pytest.mark.parametrize("n", [300, 3000])
def test_binary_to_torch_matches_combine(n):
    preds = _binary(n)
    rank = RankAverage().fit(preds)
    new = _binary(100, seed=1)
    with torch.no_grad():
        out = rank.to_torch()(torch.tensor(new.scores)).numpy()
    np.testing.assert_allclose(out, rank.combine(new), atol=1e-5)


def test_multilabel_to_torch_matches_combine():
    rng = np.random.default_rng(0)
    preds = PredictionSet(rng.random((3, 80, 4)).astype(np.float32), task="multilabel")
    rank = RankAverage().fit(preds)
    with torch.no_grad():
        out = rank.to_torch()(torch.tensor(preds.scores)).numpy()
    np.testing.assert_allclose(out, rank.combine(preds), atol=1e-5)


def test_binary_rank_exports_to_onnx(tmp_path):
    rank = RankAverage().fit(_binary(2000))
    new = _binary(64, seed=2)
    path = tmp_path / "rank.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            rank.to_torch(),
            (torch.tensor(new.scores[:, :5]),),
            str(path),
            dynamo=False,
            input_names=["scores"],
            dynamic_axes={"scores": {1: "batch"}},
        )
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"scores": new.scores}
    )[0]
    np.testing.assert_allclose(out, rank.combine(new), atol=1e-4)


def test_regression_is_rejected(regression_predictions):
    preds, y = regression_predictions
    with pytest.raises(StrategyError, match="does not support regression"):
        RankAverage().fit(preds, y)


def test_rank_is_at_least_as_accurate_as_the_worst_member_on_digits(digits_predictions):
    val, y_val, test, y_test = digits_predictions
    worst = min((test.proba[m].argmax(axis=1) == y_test).mean() for m in range(test.n_members))
    accuracy = (RankAverage().fit(val, y_val).predict(test) == y_test).mean()
    assert accuracy >= worst
