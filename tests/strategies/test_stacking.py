"""Stacking: a cross-validated meta-learner on the members' outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from modelfusion.errors import StrategyError
from modelfusion.predictions import PredictionSet
from modelfusion.strategies import stacking as stacking_module
from modelfusion.strategies.averaging import Mean
from modelfusion.strategies.stacking import C_GRID, Stacking


@pytest.fixture(scope="module")
def digits_stack(digits_predictions):
    val, y_val, _, _ = digits_predictions
    return Stacking().fit(val, y_val)


def _multilabel(n: int = 300, seed: int = 0) -> tuple[PredictionSet, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (n, 3))
    logits = np.where(y == 1, 1.0, -1.0)[None] * np.array([2.0, 1.0, 0.5])[:, None, None]
    logits = logits + rng.normal(size=(3, n, 3))
    return PredictionSet((1 / (1 + np.exp(-logits))).astype(np.float32), task="multilabel"), y


def _torch_out(strategy, preds: PredictionSet) -> np.ndarray:
    with torch.no_grad():
        return strategy.to_torch()(torch.tensor(preds.scores)).numpy()


def test_stacking_is_at_least_as_accurate_as_the_mean_on_digits(digits_predictions, digits_stack):
    val, _, test, y_test = digits_predictions
    mean_accuracy = (Mean().fit(val).predict(test) == y_test).mean()
    assert (digits_stack.predict(test) == y_test).mean() >= mean_accuracy


def test_out_of_fold_predictions_cover_every_fit_row(digits_predictions, digits_stack):
    val, y_val, _, _ = digits_predictions
    oof = digits_stack.oof_predictions_
    assert oof.shape == (val.n_samples, val.n_outputs)
    np.testing.assert_array_equal(digits_stack.oof_rows_, np.arange(val.n_samples))
    np.testing.assert_allclose(oof.sum(axis=1), 1.0, atol=1e-6)


def test_out_of_fold_accuracy_is_an_honest_estimate_below_in_sample(digits_predictions, digits_stack):
    val, y_val, _, _ = digits_predictions
    oof_accuracy = (digits_stack.oof_predictions_.argmax(axis=1) == y_val).mean()
    in_sample = (digits_stack.predict(val) == y_val).mean()
    assert 0.8 < oof_accuracy <= in_sample


def test_c_is_chosen_from_the_grid(digits_stack):
    assert digits_stack.C_ in C_GRID
    assert isinstance(digits_stack.meta_learner_, LogisticRegression)


def test_cv_none_skips_out_of_fold_predictions_and_tuning(random_predictions):
    stack = Stacking(cv=None).fit(random_predictions)
    assert stack.oof_predictions_ is None
    assert stack.C_ == 1.0


def test_a_given_meta_learner_is_cloned_and_left_unfitted(random_predictions):
    tree = DecisionTreeClassifier(max_depth=3, random_state=0)
    stack = Stacking(meta_learner=tree, cv=3).fit(random_predictions)
    assert stack.meta_learner_ is not tree
    assert not hasattr(tree, "classes_")
    assert stack.oof_predictions_.shape == (random_predictions.n_samples, random_predictions.n_outputs)


def test_non_linear_meta_learner_has_no_tensor_form(random_predictions):
    stack = Stacking(meta_learner=DecisionTreeClassifier(max_depth=3), cv=None).fit(random_predictions)
    with pytest.raises(StrategyError, match="DecisionTreeClassifier"):
        stack.to_torch()


def test_meta_learner_without_predict_proba_is_rejected(random_predictions):
    with pytest.raises(StrategyError, match="RidgeClassifier has no predict_proba"):
        Stacking(meta_learner=RidgeClassifier()).fit(random_predictions)


def test_linear_meta_learner_is_saved_as_plain_arrays(digits_stack):
    state = digits_stack.fitted_state()
    assert "meta_learner_" not in state
    assert state["meta_kind_"] == "logistic"
    for key in ("meta_coef_", "meta_intercept_", "meta_classes_"):
        assert isinstance(state[key], np.ndarray)


def test_saved_linear_state_restores_the_same_predictions(digits_predictions, digits_stack):
    _, _, test, _ = digits_predictions
    restored = Stacking().set_fitted_state(digits_stack.fitted_state())
    assert isinstance(restored.meta_learner_, LogisticRegression)
    np.testing.assert_allclose(restored.combine(test), digits_stack.combine(test), atol=1e-12)


def test_non_linear_meta_learner_is_saved_as_the_estimator(random_predictions):
    stack = Stacking(meta_learner=DecisionTreeClassifier(max_depth=3), cv=None).fit(random_predictions)
    state = stack.fitted_state()
    assert isinstance(state["meta_learner_"], DecisionTreeClassifier)
    restored = Stacking().set_fitted_state(state)
    np.testing.assert_array_equal(restored.combine(random_predictions), stack.combine(random_predictions))


def test_binary_export_uses_one_logit_and_matches_combine():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.5 + (y - 0.5) * 0.4 + rng.normal(scale=0.2, size=(3, 200)), 0.01, 0.99)
    preds = PredictionSet(p[:, :, None].astype(np.float32))
    stack = Stacking(cv=3).fit(preds, y)
    assert stack.meta_learner_.coef_.shape == (1, 6)
    np.testing.assert_allclose(_torch_out(stack, preds), stack.combine(preds), atol=1e-5)


def test_a_class_missing_from_the_fit_labels_gets_probability_zero(random_predictions):
    keep = random_predictions.labels != 5
    preds = random_predictions.take(np.flatnonzero(keep))
    stack = Stacking(cv=3).fit(preds)
    fused = stack.combine(random_predictions)
    assert (fused[:, 5] == 0).all()
    np.testing.assert_allclose(fused.sum(axis=1), 1.0)
    np.testing.assert_allclose(_torch_out(stack, random_predictions), fused, atol=1e-5)


def test_multilabel_fits_one_meta_learner_per_label():
    preds, y = _multilabel()
    stack = Stacking(cv=3).fit(preds, y)
    assert len(stack.meta_learner_) == 3
    assert stack.oof_predictions_.shape == (300, 3)
    assert stack.combine(preds).shape == (300, 3)


def test_multilabel_export_matches_combine():
    preds, y = _multilabel()
    stack = Stacking(cv=3).fit(preds, y)
    np.testing.assert_allclose(_torch_out(stack, preds), stack.combine(preds), atol=1e-5)


def test_multilabel_state_round_trips():
    preds, y = _multilabel()
    stack = Stacking(cv=None).fit(preds, y)
    restored = Stacking().set_fitted_state(stack.fitted_state())
    np.testing.assert_allclose(restored.combine(preds), stack.combine(preds), atol=1e-12)


def test_multilabel_label_with_one_value_is_rejected():
    preds, y = _multilabel()
    y[:, 1] = 0
    with pytest.raises(StrategyError, match=r"labels \[1\]"):
        Stacking().fit(preds, y)


def test_regression_stack_is_no_worse_than_the_best_member_on_held_out_data(regression_predictions):
    preds, y = regression_predictions
    fit, held = np.arange(200), np.arange(200, 400)
    stack = Stacking().fit(preds.take(fit), y[fit])
    fused_mse = ((stack.combine(preds.take(held))[:, 0] - y[held]) ** 2).mean()
    best_member = min(((preds.outputs[m, held, 0] - y[held]) ** 2).mean() for m in range(preds.n_members))
    assert fused_mse <= best_member * 1.05
    assert stack.oof_predictions_.shape == (200, 1)


def test_regression_export_matches_combine(regression_predictions):
    preds, y = regression_predictions
    stack = Stacking(cv=None).fit(preds, y)
    np.testing.assert_allclose(_torch_out(stack, preds), stack.combine(preds), atol=1e-5)


def test_regression_state_round_trips(regression_predictions):
    preds, y = regression_predictions
    stack = Stacking(cv=None).fit(preds, y)
    state = stack.fitted_state()
    assert state["meta_kind_"] == "linear"
    np.testing.assert_allclose(
        Stacking().set_fitted_state(state).combine(preds), stack.combine(preds), atol=1e-9
    )


def test_regression_with_a_tree_has_no_tensor_form(regression_predictions):
    preds, y = regression_predictions
    stack = Stacking(meta_learner=DecisionTreeRegressor(max_depth=3), cv=None).fit(preds, y)
    with pytest.raises(StrategyError, match="DecisionTreeRegressor"):
        stack.to_torch()


def test_large_fit_sets_are_subsampled(random_predictions, monkeypatch):
    monkeypatch.setattr(stacking_module, "MAX_FIT_ROWS", 120)
    stack = Stacking(cv=3).fit(random_predictions)
    assert len(stack.oof_rows_) == 120
    assert len(np.unique(stack.oof_rows_)) == 120
    assert stack.oof_predictions_.shape == (120, random_predictions.n_outputs)


def test_proba_features_are_accepted(random_predictions):
    stack = Stacking(features="proba", cv=None).fit(random_predictions)
    np.testing.assert_allclose(
        _torch_out(stack, random_predictions), stack.combine(random_predictions), atol=1e-5
    )


def test_unknown_features_are_rejected_with_their_name(random_predictions):
    with pytest.raises(StrategyError, match="'logits'"):
        Stacking(features="logits").fit(random_predictions)


def test_bad_cv_is_rejected_with_its_value(random_predictions):
    with pytest.raises(StrategyError, match="got 1"):
        Stacking(cv=1).fit(random_predictions)


def test_labels_are_required(random_predictions):
    unlabeled = PredictionSet(random_predictions.outputs, names=random_predictions.names)
    with pytest.raises(StrategyError, match="pass y"):
        Stacking().fit(unlabeled)


def test_stacking_fitted_without_a_class_says_it_never_predicts_it(digits_predictions):
    from modelfusion.errors import UnseenClassWarning

    val, y_val, _, _ = digits_predictions
    keep = np.flatnonzero(np.asarray(y_val) != 3)
    with pytest.warns(UnseenClassWarning, match=r"Stacking: class\(es\) 3 have no sample"):
        Stacking().fit(val.take(keep), np.asarray(y_val)[keep])


def test_averaging_strategies_fitted_without_a_class_do_not_warn(digits_predictions):
    import warnings

    val, y_val, _, _ = digits_predictions
    keep = np.flatnonzero(np.asarray(y_val) != 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Mean().fit(val.take(keep), np.asarray(y_val)[keep])


def test_a_run_warns_when_test_holds_a_class_validation_lacks(digits_predictions):
    from modelfusion.stages import unseen_class_warnings as _unseen_class_warnings

    val, y_val, test, y_test = digits_predictions
    y_val_enc, y_test_enc = val.encode_labels(y_val), test.encode_labels(y_test)
    assert _unseen_class_warnings(val, y_val_enc, y_test_enc) == []
    keep = np.flatnonzero(np.asarray(y_val) != 7)
    (message,) = _unseen_class_warnings(val.take(keep), y_val_enc[keep], y_test_enc)
    assert "class(es) 7 appear in the test split but not in validation" in message


def test_stacking_reports_each_members_share_of_the_meta_learner(digits_predictions):
    val, y_val, _, _ = digits_predictions
    weights, meaning = Stacking().fit(val, y_val).member_weights()
    assert list(weights) == list(val.names) and sum(weights.values()) == pytest.approx(1.0)
    assert all(w >= 0 for w in weights.values()) and "meta-learner" in meaning
