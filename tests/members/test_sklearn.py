"""SklearnMember: scoring methods, safe loading (skops, pickle only when trusted), persistence."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
import skops.io as sio
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier

from modelfusion.errors import MemberLoadError, UnsafeFormatError
from modelfusion.members import SklearnMember, load_member
from tests.members.architectures import shift_by_one


@pytest.fixture(scope="module")
def forest(digits):
    X, y = digits
    return RandomForestClassifier(n_estimators=5, max_depth=6, random_state=0).fit(X[:400], y[:400])


def test_sklearn_classifier_emits_predict_proba_with_its_classes(logreg, X):
    member = load_member(logreg)
    assert member.name == "logisticregression"
    assert (member.task, member.output_kind) == ("classification", "proba")
    assert member.classes.tolist() == list(range(10))
    np.testing.assert_allclose(member.predict(X), logreg.predict_proba(X), atol=1e-6)


def test_sklearn_classifier_without_predict_proba_uses_decision_function_as_logits(digits, X):
    svc = LinearSVC().fit(digits[0][:300], digits[1][:300])
    member = SklearnMember(svc)
    assert member.output_kind == "logits"
    np.testing.assert_allclose(member.predict(X), svc.decision_function(X), atol=1e-6)


def test_sklearn_binary_decision_function_gives_one_column(digits, X):
    svc = LinearSVC().fit(digits[0][:300], digits[1][:300] % 2)
    out = SklearnMember(svc).predict(X)
    assert out.shape == (len(X), 1)
    assert SklearnMember(svc).predict_proba(X).shape == (len(X), 2)


def test_sklearn_regressor_emits_values_for_a_regression_task(digits, X):
    reg = LinearRegression().fit(digits[0][:300], digits[1][:300].astype(float))
    member = SklearnMember(reg)
    assert (member.task, member.output_kind) == ("regression", "values")
    np.testing.assert_allclose(member.predict(X)[:, 0], reg.predict(X), atol=1e-5)


def test_sklearn_unfitted_estimator_raises_a_not_fitted_error():
    with pytest.raises(MemberLoadError, match="not fitted yet"):
        load_member(LogisticRegression(), name="raw")


def test_sklearn_n_parameters_counts_fitted_array_elements(logreg):
    assert SklearnMember(logreg).n_parameters >= logreg.coef_.size + logreg.intercept_.size


def test_skops_file_loads(logreg, X, tmp_path):
    path = tmp_path / "logreg.skops"
    sio.dump(logreg, path)
    member = load_member(path)
    assert member.name == "logreg" and member.source_path == path
    np.testing.assert_allclose(member.predict(X), logreg.predict_proba(X), atol=1e-6)


def test_skops_file_with_only_sklearn_types_loads_without_trust(digits, X, tmp_path):
    tree = DecisionTreeClassifier(max_depth=3).fit(digits[0][:200], digits[1][:200])
    path = tmp_path / "tree.skops"
    sio.dump(tree, path)  # holds sklearn.tree._tree.Tree, which skops does not trust by default
    np.testing.assert_allclose(load_member(path).predict(X), tree.predict_proba(X))


def _foreign_pipeline(digits):
    import operator

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    return make_pipeline(FunctionTransformer(operator.pos), LogisticRegression(max_iter=200)).fit(
        digits[0][:300], digits[1][:300]
    )


def test_skops_file_with_foreign_types_is_refused_without_trust(digits, tmp_path):
    path = tmp_path / "pipe.skops"
    sio.dump(_foreign_pipeline(digits), path)
    with pytest.raises(UnsafeFormatError, match=r"_operator\.pos.*trust=True"):
        load_member(path)


def test_skops_file_with_foreign_types_loads_with_trust(digits, X, tmp_path):
    pipe = _foreign_pipeline(digits)
    path = tmp_path / "pipe.skops"
    sio.dump(pipe, path)
    np.testing.assert_allclose(load_member(path, trust=True).predict(X), pipe.predict_proba(X), atol=1e-6)


@pytest.mark.parametrize("suffix", [".pkl", ".pickle", ".joblib"])
def test_sklearn_pickle_is_refused_without_trust(logreg, tmp_path, suffix):
    path = tmp_path / f"logreg{suffix}"
    joblib.dump(logreg, path)
    with pytest.raises(UnsafeFormatError, match=r"unpickling runs arbitrary code.*\.skops"):
        load_member(path)


def test_sklearn_pickle_loads_with_trust(logreg, X, tmp_path):
    path = tmp_path / "logreg.pkl"
    joblib.dump(logreg, path)
    np.testing.assert_allclose(load_member(path, trust=True).predict(X), logreg.predict_proba(X), atol=1e-6)


def test_sklearn_save_round_trip_gives_identical_predictions(forest, X, tmp_path):
    member = SklearnMember(forest, name="forest")
    spec = member.save(tmp_path)
    assert spec["file"] == "model.skops"
    restored = SklearnMember.load_saved(tmp_path, spec)
    np.testing.assert_allclose(restored.predict(X), member.predict(X), atol=1e-6)
    assert restored.name == "forest" and restored.classes.tolist() == member.classes.tolist()


def test_sklearn_load_saved_refuses_types_outside_sklearn_numpy_scipy(digits, tmp_path):
    pipe = make_pipeline(FunctionTransformer(shift_by_one), LogisticRegression(max_iter=500))
    spec = SklearnMember(pipe.fit(digits[0][:200], digits[1][:200]), name="pipe").save(tmp_path)
    with pytest.raises(UnsafeFormatError, match="shift_by_one"):
        SklearnMember.load_saved(tmp_path, spec)


def test_sklearn_fingerprint_is_stable_across_reloads(forest, tmp_path):
    path = tmp_path / "forest.skops"
    sio.dump(forest, path)
    first = load_member(path, trust=True).fingerprint()
    assert first == load_member(path, trust=True).fingerprint() == SklearnMember(forest).fingerprint()


def test_sklearn_fingerprint_differs_for_different_fits(digits):
    X, y = digits
    a = LogisticRegression(max_iter=500).fit(X[:200], y[:200])
    b = LogisticRegression(max_iter=500).fit(X[200:400], y[200:400])
    assert SklearnMember(a).fingerprint() != SklearnMember(b).fingerprint()
