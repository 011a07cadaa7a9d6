import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn import metrics as skm

from modelfusion.evaluation import (
    METRICS,
    accuracy,
    bootstrap_ci,
    brier,
    calibration_bins,
    ece,
    evaluate,
    get_metric,
    macro_f1,
    mae,
    nll,
    r2,
    rmse,
    score_to_loss,
    top_k_accuracy,
)


def random_case(n=500, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(classes), size=n)
    # make the top class right more often than chance so metrics are not degenerate
    y = np.where(rng.random(n) < 0.5, proba.argmax(axis=1), rng.integers(0, classes, n))
    return y, proba


def test_accuracy_matches_sklearn():
    y, p = random_case()
    assert accuracy(y, p) == pytest.approx(skm.accuracy_score(y, p.argmax(axis=1)))


def test_nll_matches_sklearn_log_loss():
    y, p = random_case()
    assert nll(y, p) == pytest.approx(skm.log_loss(y, p, labels=np.arange(10)), rel=1e-9)


def test_nll_clips_zero_probability_at_1e_12():
    y = np.array([0, 1])
    p = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert nll(y, p) == pytest.approx(-np.log(1e-12) / 2)


def test_macro_f1_matches_sklearn_including_a_class_never_seen():
    y, p = random_case(classes=8)
    y = np.where(y == 7, 6, y)  # class 7 never occurs in y
    assert macro_f1(y, p) == pytest.approx(skm.f1_score(y, p.argmax(axis=1), average="macro"))


def test_brier_matches_sklearn_multiclass():
    y, p = random_case()
    assert brier(y, p) == pytest.approx(skm.brier_score_loss(y, p, labels=np.arange(10)))


def test_brier_binary_is_the_classic_positive_class_score():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    pos = rng.random(300)
    expected = skm.brier_score_loss(y, pos)
    assert brier(y, np.stack([1 - pos, pos], axis=1)) == pytest.approx(expected)
    assert brier(y, pos) == pytest.approx(expected)  # a 1-d array is the positive class


def test_top5_matches_sklearn():
    y, p = random_case(classes=20)
    assert top_k_accuracy(y, p, k=5) == pytest.approx(
        skm.top_k_accuracy_score(y, p, k=5, labels=np.arange(20))
    )
    assert METRICS["top5"](y, p) == pytest.approx(top_k_accuracy(y, p, k=5))


def test_top_k_at_least_number_of_classes_is_one():
    y, p = random_case(classes=4)
    assert top_k_accuracy(y, p, k=4) == 1.0


def test_metrics_accept_float32_scores():
    y, p = random_case()
    assert nll(y, p.astype(np.float32)) == pytest.approx(nll(y, p), rel=1e-5)


def test_multilabel_metrics_match_per_label_sklearn():
    rng = np.random.default_rng(1)
    p = rng.random((400, 6))
    y = (rng.random((400, 6)) < p).astype(int)
    pred = (p > 0.5).astype(int)
    per_label_acc = np.mean([skm.accuracy_score(y[:, j], pred[:, j]) for j in range(6)])
    per_label_nll = np.mean([skm.log_loss(y[:, j], p[:, j], labels=[0, 1]) for j in range(6)])
    assert accuracy(y, p) == pytest.approx(per_label_acc)
    assert nll(y, p) == pytest.approx(per_label_nll)
    assert macro_f1(y, p) == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert brier(y, p) == pytest.approx(np.mean((p - y) ** 2))


def test_multilabel_has_no_top_k():
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="multi-label"):
        top_k_accuracy(rng.integers(0, 2, (10, 6)), rng.random((10, 6)))


def test_ece_is_zero_for_perfectly_calibrated_scores():
    # 100 samples at confidence 0.8 (80 right) and 100 at 0.4 (40 right)
    n_classes = 5
    p = np.full((200, n_classes), 0.0)
    p[:100] = (1 - 0.8) / (n_classes - 1)
    p[:100, 0] = 0.8
    p[100:] = (1 - 0.4) / (n_classes - 1)
    p[100:, 0] = 0.4
    y = np.r_[np.zeros(80), np.ones(20), np.zeros(40), np.ones(60)].astype(int)
    assert ece(y, p) == pytest.approx(0.0, abs=1e-12)


def test_ece_matches_hand_computed_example():
    p = np.array([[0.95, 0.03, 0.02], [0.72, 0.2, 0.08], [0.58, 0.4, 0.02], [0.45, 0.3, 0.25]])
    y = np.array([0, 1, 0, 2])  # right, wrong, right, wrong
    # 2 bins: (0, 0.5] holds 0.45 (wrong); (0.5, 1] holds 0.95, 0.72, 0.58 (mean 0.75, 2/3 right)
    assert ece(y, p, n_bins=2) == pytest.approx((abs(0 - 0.45) + 3 * abs(2 / 3 - 0.75)) / 4)
    # 10 bins: one sample per bin
    expected = (abs(1 - 0.95) + abs(0 - 0.72) + abs(1 - 0.58) + abs(0 - 0.45)) / 4
    assert ece(y, p, n_bins=10) == pytest.approx(expected)


def test_calibration_bins_partition_the_samples():
    y, p = random_case()
    bins = calibration_bins(y, p, n_bins=15)
    assert bins["count"].sum() == len(y)
    filled = bins["count"] > 0
    gap = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    assert np.sum(gap * bins["count"][filled]) / len(y) == pytest.approx(ece(y, p))
    assert np.isnan(bins["accuracy"][~filled]).all()


@pytest.mark.parametrize("targets", [None, 3])
def test_regression_metrics_match_sklearn(targets):
    rng = np.random.default_rng(2)
    shape = (300,) if targets is None else (300, targets)
    y = rng.normal(size=shape)
    pred = y + rng.normal(scale=0.5, size=shape)
    assert rmse(y, pred) == pytest.approx(skm.root_mean_squared_error(y, pred))
    assert mae(y, pred) == pytest.approx(skm.mean_absolute_error(y, pred))
    assert r2(y, pred) == pytest.approx(skm.r2_score(y, pred))


def test_regression_accepts_a_single_output_column():
    y = np.array([1.0, 2.0, 3.0])
    assert rmse(y, y[:, None] + 1.0) == pytest.approx(1.0)


def test_r2_of_a_constant_target_follows_sklearn():
    y = np.ones(5)
    assert r2(y, y) == skm.r2_score(y, y) == 1.0
    assert r2(y, y + 1) == skm.r2_score(y, y + 1) == 0.0


def test_get_metric_error_lists_valid_names():
    with pytest.raises(ValueError, match="unknown metric 'auc'") as err:
        get_metric("auc")
    for name in ("accuracy", "nll", "log_loss", "ece", "brier", "f1", "top5", "rmse", "mae", "r2"):
        assert name in str(err.value)


def test_aliases_resolve_to_the_same_metric():
    assert get_metric("acc") is get_metric("accuracy")
    assert get_metric("log_loss") is get_metric("NLL")
    assert get_metric("f1") is get_metric("macro_f1")
    assert get_metric(get_metric("ece")) is get_metric("ece")


def test_evaluate_reports_the_standard_classification_set():
    y, p = random_case(classes=10)
    result = evaluate(y, p, "classification")
    assert list(result) == ["accuracy", "nll", "ece", "brier", "macro_f1", "top5"]
    assert result["nll"] == pytest.approx(nll(y, p))
    y4, p4 = random_case(classes=4)
    assert "top5" not in evaluate(y4, p4, "classification")


def test_evaluate_regression_and_chosen_metrics():
    y = np.arange(10.0)
    assert list(evaluate(y, y + 1, "regression")) == ["rmse", "mae", "r2"]
    yc, p = random_case()
    assert evaluate(yc, p, "classification", ["acc", "log_loss"]) == {
        "acc": accuracy(yc, p),
        "log_loss": nll(yc, p),
    }


def test_evaluate_rejects_a_metric_of_another_task():
    with pytest.raises(ValueError, match="not defined for regression"):
        evaluate(np.arange(5.0), np.arange(5.0), "regression", ["accuracy"])


def test_score_to_loss_makes_lower_better():
    assert score_to_loss("accuracy", 0.9) == -0.9
    assert score_to_loss("nll", 0.3) == 0.3
    assert score_to_loss("r2", 0.5) < score_to_loss("r2", 0.1)


def test_labels_outside_the_score_columns_raise():
    with pytest.raises(ValueError, match="outside 0..2"):
        accuracy(np.array([0, 3]), np.full((2, 3), 1 / 3))


def test_unencoded_string_labels_raise_type_error():
    with pytest.raises(TypeError, match="encode_labels"):
        accuracy(np.array(["cat", "dog"]), np.full((2, 2), 0.5))


def test_bootstrap_ci_brackets_the_estimate_and_is_reproducible():
    y, p = random_case()
    for metric in ("accuracy", "nll", "ece"):
        lo, hi = bootstrap_ci(y, p, metric, n_boot=300, seed=0)
        value = get_metric(metric)(y, p)
        assert lo <= value <= hi
        assert (lo, hi) == bootstrap_ci(y, p, metric, n_boot=300, seed=0)


@settings(max_examples=30, deadline=None)
@given(
    arrays(np.float64, (20, 4), elements=st.floats(0.01, 1.0)),
    arrays(np.int64, 20, elements=st.integers(0, 3)),
)
def test_classification_metrics_stay_in_their_ranges(raw, y):
    p = raw / raw.sum(axis=1, keepdims=True)
    assert 0.0 <= accuracy(y, p) <= 1.0
    assert 0.0 <= macro_f1(y, p) <= 1.0
    assert 0.0 <= ece(y, p) <= 1.0
    assert 0.0 <= brier(y, p) <= 2.0
    assert nll(y, p) >= 0.0
