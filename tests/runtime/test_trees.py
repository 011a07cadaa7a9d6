"""Tree ensembles lose their zero class weights and default attributes, and compute bit for bit the same."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestClassifier

from modelfusion.members.sklearn import _int_attributes
from modelfusion.runtime.trees import compact_tree_ensembles


def _convert(estimator, X):
    with _int_attributes():
        return to_onnx(
            estimator,
            X[:1],
            options={id(estimator): {"zipmap": False}} if hasattr(estimator, "classes_") else None,
        )


def _outputs(proto, X) -> list[np.ndarray]:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: X})


def _assert_bit_identical(before: list[np.ndarray], after: list[np.ndarray]) -> None:
    for a, b in zip(before, after, strict=True):
        assert a.tobytes() == b.tobytes()


def _attribute_lengths(proto) -> dict[str, int]:
    (node,) = [n for n in proto.graph.node if n.op_type.startswith("TreeEnsemble")]
    return {a.name: len(a.floats) or len(a.ints) for a in node.attribute}


def test_multiclass_forest_drops_zero_class_weights_and_shrinks_without_changing_outputs():
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    proto = _convert(RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y), X)
    before, size = _outputs(proto, X), proto.ByteSize()
    leaves = _attribute_lengths(proto)["class_weights"]

    assert compact_tree_ensembles(proto) > 0
    after = _attribute_lengths(proto)
    assert after["class_weights"] == after["class_ids"] == after["class_nodeids"] < leaves / 2
    assert "nodes_hitrates" not in after
    assert proto.ByteSize() < size / 2
    _assert_bit_identical(before, _outputs(proto, X))


def test_binary_forest_keeps_every_class_weight():
    X, y = load_breast_cancer(return_X_y=True)
    X = X.astype(np.float32)
    proto = _convert(RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y), X)
    before, weights = _outputs(proto, X), _attribute_lengths(proto)["class_weights"]
    compact_tree_ensembles(proto)
    assert (
        _attribute_lengths(proto)["class_weights"] == weights
    )  # ORT reads binary weights by which ids appear
    _assert_bit_identical(before, _outputs(proto, X))


def test_regressor_drops_default_node_attributes():
    X, y = load_diabetes(return_X_y=True)
    X = X.astype(np.float32)
    proto = _convert(HistGradientBoostingRegressor(max_iter=20, random_state=0).fit(X, y), X)
    before = _outputs(proto, X)
    assert compact_tree_ensembles(proto) > 0
    assert "nodes_hitrates" not in _attribute_lengths(proto)
    _assert_bit_identical(before, _outputs(proto, X))
