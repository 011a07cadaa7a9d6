"""Real member predictions on scikit-learn's digits, shared by the strategy tests."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.tree import DecisionTreeClassifier

from modelfusion.predictions import PredictionSet


@pytest.fixture(scope="session")
def digits_predictions() -> tuple[PredictionSet, np.ndarray, PredictionSet, np.ndarray]:
    """(val_preds, y_val, test_preds, y_test) from five diverse sklearn members on digits."""
    X, y = load_digits(return_X_y=True)
    X_train, X_rest, y_train, y_rest = train_test_split(X, y, test_size=0.6, random_state=0, stratify=y)
    X_val, X_test, y_val, y_test = train_test_split(
        X_rest, y_rest, test_size=0.5, random_state=0, stratify=y_rest
    )
    members = {
        "logreg": LogisticRegression(max_iter=300, C=0.05),
        "knn": KNeighborsClassifier(n_neighbors=15),
        "tree": DecisionTreeClassifier(max_depth=8, random_state=0),
        "forest": RandomForestClassifier(n_estimators=15, max_depth=6, random_state=0),
        "bayes": GaussianNB(),
    }
    for m in members.values():
        m.fit(X_train, y_train)
    val = np.stack([m.predict_proba(X_val) for m in members.values()]).astype(np.float32)
    test = np.stack([m.predict_proba(X_test) for m in members.values()]).astype(np.float32)
    names = list(members)
    return (
        PredictionSet(val, names=names, labels=y_val),
        y_val,
        PredictionSet(test, names=names, labels=y_test),
        y_test,
    )


@pytest.fixture(scope="session")
def random_predictions() -> PredictionSet:
    """Four random probabilistic members, 300 samples, 6 classes, with labels."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, 300)
    logits = rng.normal(size=(4, 300, 6)) + 2.0 * np.eye(6)[y][None]
    p = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    return PredictionSet(p.astype(np.float32), names=["a", "b", "c", "d"], labels=y)


@pytest.fixture(scope="session")
def regression_predictions() -> tuple[PredictionSet, np.ndarray]:
    """Three noisy regressors of a known target, 400 samples."""
    rng = np.random.default_rng(1)
    y = rng.normal(size=400)
    outs = np.stack([y + rng.normal(scale=s, size=400) for s in (0.2, 0.5, 1.0)])[:, :, None]
    return PredictionSet(outs.astype(np.float32), names=["r1", "r2", "r3"], kind="values"), y
