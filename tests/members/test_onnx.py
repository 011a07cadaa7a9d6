"""OnnxMember: dynamic and fixed batches, scikit-learn converter outputs, inputs, persistence."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from modelfusion.errors import MemberLoadError
from modelfusion.members import OnnxMember, load_member


def _two_input_model() -> onnx.ModelProto:
    """out = a + b, both float [batch, 3]."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 3])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["out"])], "add", [a, b], [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_onnx_dynamic_batch_matches_the_torch_module(onnx_dynamic_path, X, mlp_logits):
    member = load_member(onnx_dynamic_path)
    assert isinstance(member, OnnxMember) and member.name == "mlp_dynamic"
    assert member.fixed_batch_size is None
    assert member.output_kind == "logits"
    np.testing.assert_allclose(member.predict(X), mlp_logits, atol=1e-5)


def test_onnx_fixed_batch_runs_in_padded_chunks(onnx_fixed_path, X, mlp_logits):
    member = load_member(onnx_fixed_path)
    assert member.fixed_batch_size == 4
    np.testing.assert_allclose(member.predict(X[:10]), mlp_logits[:10], atol=1e-5)


def test_onnx_casts_a_float64_batch_to_the_input_dtype(onnx_dynamic_path, X, mlp_logits):
    out = load_member(onnx_dynamic_path).predict(X.astype(np.float64))
    np.testing.assert_allclose(out, mlp_logits, atol=1e-5)


def test_skl2onnx_classifier_returns_probabilities_with_classes(logreg_onnx_path, logreg, X):
    member = load_member(logreg_onnx_path)
    assert member.output_name == "probabilities"
    assert member.output_kind == "proba"
    assert member.classes.tolist() == logreg.classes_.tolist()
    np.testing.assert_allclose(member.predict(X), logreg.predict_proba(X), atol=1e-5)


def test_skl2onnx_zipmap_output_is_converted_to_an_array(logreg_zipmap_onnx_path, logreg, X):
    member = load_member(logreg_zipmap_onnx_path)
    assert member.output_kind == "proba"
    np.testing.assert_allclose(member.predict(X), logreg.predict_proba(X), atol=1e-5)


def test_onnx_unknown_output_name_lists_the_outputs(logreg_onnx_path):
    with pytest.raises(MemberLoadError, match="no output 'scores'.*label, probabilities"):
        load_member(logreg_onnx_path, output_name="scores")


def test_onnx_output_kind_option_overrides_the_default(onnx_dynamic_path):
    assert load_member(onnx_dynamic_path, output_kind="values", task="regression").output_kind == "values"


def test_onnx_model_with_several_inputs_takes_a_dict_batch():
    member = load_member(_two_input_model(), name="add")
    a, b = np.ones((2, 3)), np.full((2, 3), 2.0)
    np.testing.assert_allclose(member.predict({"a": a, "b": b}), np.full((2, 3), 3.0))


def test_onnx_model_with_several_inputs_refuses_a_bare_array():
    member = load_member(_two_input_model(), name="add")
    with pytest.raises(ValueError, match="pass the batch as a dict"):
        member.predict(np.ones((2, 3)))


def test_onnx_member_loads_from_bytes(onnx_dynamic_path, X, mlp_logits):
    member = load_member(onnx_dynamic_path.read_bytes(), name="from_bytes")
    np.testing.assert_allclose(member.predict(X), mlp_logits, atol=1e-5)


def test_onnx_corrupt_file_raises_member_load_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(200))
    with pytest.raises(MemberLoadError, match="broken.onnx"):
        load_member(path)


def test_onnx_save_round_trip_gives_identical_predictions(logreg_onnx_path, X, tmp_path):
    member = load_member(logreg_onnx_path, name="logreg")
    spec = member.save(tmp_path)
    restored = OnnxMember.load_saved(tmp_path, spec)
    assert (tmp_path / spec["file"]).read_bytes() == logreg_onnx_path.read_bytes()
    np.testing.assert_allclose(restored.predict(X), member.predict(X), atol=1e-6)
    assert restored.classes.tolist() == member.classes.tolist()


def test_onnx_fingerprint_is_the_file_hash_and_differs_between_models(onnx_dynamic_path, onnx_fixed_path):
    member = load_member(onnx_dynamic_path)
    assert member.fingerprint() == hashlib.sha256(onnx_dynamic_path.read_bytes()).hexdigest()
    assert load_member(onnx_dynamic_path.read_bytes(), name="x").fingerprint() == member.fingerprint()
    assert load_member(onnx_fixed_path).fingerprint() != member.fingerprint()


def test_onnx_n_parameters_counts_initializer_elements(onnx_dynamic_path):
    assert load_member(onnx_dynamic_path).n_parameters == 64 * 32 + 32 + 32 * 10 + 10
