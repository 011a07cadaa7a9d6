"""Synthetic fusion results for the report tests: 3 members, 200 samples, 10 classes, 4 strategies."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.special import softmax  # noqa: E402

from modelfusion.report import FusionReport  # noqa: E402

MEMBER_NAMES = ["resnet18", "vit<tiny>", "log|reg"]
WEIGHTS = {"resnet18": 0.3, "vit<tiny>": 0.5, "log|reg": 0.2}


def synthetic_scores(seed: int = 0, n: int = 200, classes: int = 10):
    """Labels, member probabilities [3, n, classes] and four fused strategies' scores."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    logits = rng.normal(size=(3, n, classes))
    logits[:, np.arange(n), y] += np.array([1.2, 1.8, 0.8])[:, None]  # members of unequal skill
    proba = softmax(1.5 * logits, axis=2)
    weights = np.array(list(WEIGHTS.values()))
    strategies = {
        "mean": proba.mean(axis=0),
        "weighted_avg": np.tensordot(weights, proba, axes=1),
        "voting": 0.9 * np.eye(classes)[proba.argmax(axis=2)].mean(axis=0) + 0.1 / classes,
        "best_single": proba[1],
    }
    folds = {name: rng.uniform(0.6, 0.8, size=5).tolist() for name in strategies}
    return y, proba, strategies, folds


@pytest.fixture(scope="session")
def make_report():
    def make(**overrides) -> FusionReport:
        y, proba, strategies, folds = synthetic_scores()
        kwargs = dict(
            title="Synthetic fusion",
            y_test=y,
            member_scores=proba,
            member_names=MEMBER_NAMES,
            strategy_scores=strategies,
            chosen="weighted_avg",
            metric="accuracy",
            fold_scores=folds,
            weights=WEIGHTS,
            class_names=[f"class_{i}" for i in range(10)],
            member_info={
                "resnet18": {
                    "framework": "torch",
                    "latency_ms": 0.42,
                    "n_parameters": 11_689_512,
                    "file_size": 46_830_571,
                },
                "vit<tiny>": {
                    "framework": "onnx",
                    "latency_ms": 1.3,
                    "n_parameters": 5_717_416,
                    "file_size": 22_900_000,
                },
                "log|reg": {
                    "framework": "sklearn",
                    "latency_ms": 0.004,
                    "n_parameters": 650,
                    "file_size": 6_100,
                },
            },
            strategy_info={
                "weighted_avg": {"latency_ms": 1.8},
                "mean": {"latency_ms": 1.8, "n_members_used": 3},
            },
            config={"metric": "accuracy", "folds": 5},
            notes=["synthetic data <for tests>"],
        )
        kwargs.update(overrides)
        return FusionReport.from_scores(**kwargs)

    return make


@pytest.fixture(scope="session")
def report(make_report) -> FusionReport:
    return make_report()


@pytest.fixture(scope="session")
def regression_report() -> FusionReport:
    rng = np.random.default_rng(1)
    y = rng.normal(size=120)
    preds = y[None, :] + rng.normal(scale=[[0.3], [0.5], [0.8]], size=(3, 120))
    return FusionReport.from_scores(
        y_test=y,
        member_scores=preds[:, :, None],
        member_names=["gbm", "mlp", "ridge"],
        strategy_scores={"mean": preds.mean(axis=0)[:, None], "best_single": preds[0][:, None]},
        fold_scores={"mean": [0.31, 0.33, 0.30], "best_single": [0.35, 0.36, 0.34]},
        chosen="mean",
        task="regression",
        metric="rmse",
        title="Synthetic regression",
    )
