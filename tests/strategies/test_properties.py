"""Properties every strategy shares: the estimator contract, the tensor form, and invariants
(identical members, weights on the simplex, permutation symmetry) checked with hypothesis."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from modelfusion.predictions import PredictionSet
from modelfusion.strategies.averaging import GeometricMean, Mean, Median, WeightedAverage
from modelfusion.strategies.base import STRATEGY_REGISTRY, get_strategy
from modelfusion.strategies.calibration import Calibrated
from modelfusion.strategies.dynamic import DynamicWeighting, MaxConfidence
from modelfusion.strategies.gating import Gating
from modelfusion.strategies.rank import RankAverage
from modelfusion.strategies.voting import MajorityVote

#: Arguments that keep a strategy fast in tests; everything else is its default.
FAST = {"Stacking": {"cv": 3}, "Gating": {"epochs": 25}, "GreedySelection": {"ensemble_size": 10}}


def _factory(cls):
    return lambda: cls(**FAST.get(cls.__name__, {}))


# Every registered strategy (so a new one is covered the day it is added), plus variants;
# factories, so every test can build a fresh, unfitted strategy.
REGISTERED = sorted({cls for cls in STRATEGY_REGISTRY.values()}, key=lambda c: c.__name__)
STRATEGIES = {
    **{cls.alias or cls.__name__.lower(): _factory(cls) for cls in REGISTERED},
    "dynamic-entropy": lambda: DynamicWeighting(measure="entropy"),
    "dynamic-confidence": lambda: DynamicWeighting(measure="confidence", power=2.0),
}
SEEDED = ["stacking", "gating"]
PROPERTY_SETTINGS = settings(max_examples=25, deadline=None)


@pytest.fixture(scope="module")
def fitted(digits_predictions):
    """Each strategy fitted once on the digits validation set: {name: (strategy, what fit returned)}."""
    val, y_val, _, _ = digits_predictions
    out = {}
    for name, make in STRATEGIES.items():
        strategy = make()
        out[name] = (strategy, strategy.fit(val, y_val))
    return out


# -- the estimator contract ---------------------------------------------------------------------


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_fit_returns_self(fitted, name):
    strategy, returned = fitted[name]
    assert returned is strategy


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_combine_before_fit_raises_not_fitted(digits_predictions, name):
    _, _, test, _ = digits_predictions
    with pytest.raises(NotFittedError, match="not fitted"):
        STRATEGIES[name]().combine(test)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_combine_returns_samples_by_classes(fitted, digits_predictions, name):
    _, _, test, _ = digits_predictions
    assert fitted[name][0].combine(test).shape == (test.n_samples, test.n_outputs)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_fused_rows_sum_to_one(fitted, digits_predictions, name):
    _, _, test, _ = digits_predictions
    fused = fitted[name][0].combine(test)
    np.testing.assert_allclose(fused.sum(axis=1), 1.0, atol=1e-6)
    assert (fused >= 0).all()


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_to_torch_matches_combine(fitted, digits_predictions, name):
    _, _, test, _ = digits_predictions
    strategy = fitted[name][0]
    with torch.no_grad():
        out = strategy.to_torch()(torch.tensor(test.scores)).numpy()
    np.testing.assert_allclose(out, strategy.combine(test), atol=1e-5)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_onnx_export_matches_combine(fitted, digits_predictions, name, tmp_path):
    _, _, test, _ = digits_predictions
    strategy = fitted[name][0]
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its own deprecation
        torch.onnx.export(
            strategy.to_torch().eval(),
            (torch.tensor(test.scores[:, :8]),),
            str(path),
            dynamo=False,
            input_names=["scores"],
            dynamic_axes={"scores": {1: "batch"}},
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"scores": test.scores})[0]  # a batch size other than the traced one
    np.testing.assert_allclose(out, strategy.combine(test), atol=1e-4)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_get_params_survive_clone_and_registry(name):
    strategy = STRATEGIES[name]()
    params = strategy.get_params(deep=False)
    copy = clone(strategy)
    assert {k: repr(v) for k, v in copy.get_params(deep=False).items()} == {
        k: repr(v) for k, v in params.items()
    }
    rebuilt = get_strategy(strategy.alias, **params)
    assert type(rebuilt) is type(strategy)
    assert repr(rebuilt.get_params(deep=False)) == repr(params)


@pytest.mark.parametrize("name", SEEDED)
def test_same_random_state_gives_same_output(fitted, digits_predictions, name):
    val, y_val, test, _ = digits_predictions
    again = STRATEGIES[name]().fit(val, y_val)
    np.testing.assert_array_equal(again.combine(test), fitted[name][0].combine(test))


# -- hypothesis: invariants ---------------------------------------------------------------------


@st.composite
def prediction_sets(draw, min_members: int = 1, max_members: int = 5) -> tuple[PredictionSet, np.ndarray]:
    """Random probabilistic members (softmax of bounded logits, ties included) and labels."""
    m = draw(st.integers(min_members, max_members))
    n = draw(st.integers(4, 30))
    c = draw(st.integers(2, 6))
    logits = draw(hnp.arrays(np.float64, (m, n, c), elements=st.floats(-5, 5, allow_nan=False)))
    proba = np.exp(logits - logits.max(axis=2, keepdims=True))
    proba /= proba.sum(axis=2, keepdims=True)
    y = draw(hnp.arrays(np.int64, n, elements=st.integers(0, c - 1)))
    return PredictionSet(proba.astype(np.float32), names=[f"m{i}" for i in range(m)]), y


def _identical(preds: PredictionSet, copies: int) -> PredictionSet:
    one = preds.outputs[:1]
    return PredictionSet(np.repeat(one, copies, axis=0), names=[f"copy{i}" for i in range(copies)])


IDENTITY_RULES = {
    "mean": lambda m: Mean(),
    "weighted": lambda m: WeightedAverage(weights=np.arange(1, m + 1).tolist()),
    "geometric": lambda m: GeometricMean(),
    "median": lambda m: Median(),
    "maxconf": lambda m: MaxConfidence(),
    "dynamic-confidence": lambda m: DynamicWeighting(measure="confidence", power=3.0),
    "dynamic-entropy": lambda m: DynamicWeighting(measure="entropy"),
}


@pytest.mark.parametrize("name", list(IDENTITY_RULES))
@PROPERTY_SETTINGS
@given(data=prediction_sets(), copies=st.integers(1, 4))
def test_fusing_identical_members_returns_that_member(name, data, copies):
    preds = _identical(data[0], copies)
    fused = IDENTITY_RULES[name](copies).fit(preds).combine(preds)
    np.testing.assert_allclose(fused, preds.proba[0], atol=1e-5)


@PROPERTY_SETTINGS
@given(data=prediction_sets(), copies=st.integers(1, 4))
def test_voting_identical_members_keeps_that_members_argmax(data, copies):
    preds = _identical(data[0], copies)
    fused = MajorityVote().fit(preds).combine(preds)
    np.testing.assert_array_equal(fused.argmax(axis=1), preds.proba[0].argmax(axis=1))


@PROPERTY_SETTINGS
@given(data=prediction_sets(min_members=2), raw=st.lists(st.floats(0, 10), min_size=5, max_size=5))
def test_weighted_average_normalises_onto_the_simplex(data, raw):
    preds, _ = data
    raw = raw[: preds.n_members]
    raw[0] += 0.1  # at least one positive weight
    w = WeightedAverage(weights=raw).fit(preds).weights_
    assert (w >= 0).all()
    assert w.sum() == pytest.approx(1.0)


LEARNED_WEIGHT_RULES = {
    "gating": lambda: Gating(epochs=3, hidden=4),
    "calibrated-mean": lambda: Calibrated(base=Mean()),
    "maxconf": lambda: MaxConfidence(),
    "dynamic": lambda: DynamicWeighting(),
}


@pytest.mark.parametrize("name", list(LEARNED_WEIGHT_RULES))
@PROPERTY_SETTINGS
@given(data=prediction_sets())
def test_learned_member_weighting_lies_on_the_simplex(name, data):
    preds, y = data
    w = LEARNED_WEIGHT_RULES[name]().fit(preds, y).weights_
    assert w.shape == (preds.n_members,)
    assert (w >= 0).all()
    assert w.sum() == pytest.approx(1.0)


SYMMETRIC_RULES = {
    "mean": Mean,
    "geometric": GeometricMean,
    "median": Median,
    "vote": MajorityVote,
    "rank": RankAverage,
    "maxconf": MaxConfidence,
    "dynamic": DynamicWeighting,
}


@pytest.mark.parametrize("name", list(SYMMETRIC_RULES))
def test_symmetric_rules_declare_it(name):
    assert SYMMETRIC_RULES[name].symmetric


@pytest.mark.parametrize("name", list(SYMMETRIC_RULES))
@PROPERTY_SETTINGS
@given(data=prediction_sets(min_members=2), seed=st.integers(0, 2**16))
def test_permuting_members_changes_nothing_for_symmetric_rules(name, data, seed):
    preds, _ = data
    perm = np.random.default_rng(seed).permutation(preds.n_members).tolist()
    shuffled = preds.subset(perm)
    fused = SYMMETRIC_RULES[name]().fit(preds).combine(preds)
    fused_shuffled = SYMMETRIC_RULES[name]().fit(shuffled).combine(shuffled)
    np.testing.assert_allclose(fused_shuffled, fused, atol=1e-5)
