"""Engines: concurrent members equal the serial path, auto picks ONNX and falls back, providers, bundle cache."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier

from modelfusion import FusedModel
from modelfusion.runtime import (
    ExecutionProviderError,
    ExportError,
    MemberExecutor,
    OnnxExecutor,
    TorchExecutor,
    build_fused_onnx,
    select_engine,
)
from modelfusion.strategies import Stacking


@pytest.fixture(scope="module")
def stacked_forest(digits_members, digits_val_preds, digits_split) -> FusedModel:
    stacking = Stacking(meta_learner=RandomForestClassifier(n_estimators=5, random_state=0), cv=2)
    return FusedModel(digits_members, stacking.fit(digits_val_preds, digits_split["y_val"]))


def _fresh(model: FusedModel) -> FusedModel:
    """The same members and strategy without cached engines."""
    return FusedModel(model.members, model.strategy)


def test_concurrent_member_executor_equals_serial_predictions(digits_fused, digits_split):
    X = digits_split["X_test"]
    serial = digits_fused.member_predictions(X, batch_size=64)
    with MemberExecutor(digits_fused, max_workers=4) as executor:
        concurrent = executor.member_predictions(X, batch_size=64)
        scores = executor.run(X, batch_size=64)
    assert concurrent.names == serial.names
    np.testing.assert_array_equal(concurrent.outputs, serial.outputs)
    np.testing.assert_allclose(scores, digits_fused.strategy.combine(serial), atol=1e-6)


def test_auto_engine_runs_the_onnx_graph_and_matches_the_members_within_1e_5(digits_fused, digits_split):
    model = _fresh(digits_fused)
    X = digits_split["X_test"]
    auto = model.predict_proba(X)
    assert select_engine(model).name == "onnx"
    np.testing.assert_allclose(auto, model.predict_proba(X, engine="members"), atol=1e-5)
    np.testing.assert_array_equal(model.predict(X), model.classes[auto.argmax(axis=1)])


def test_auto_engine_falls_back_to_members_for_a_strategy_without_tensor_form(stacked_forest, digits_split):
    X = digits_split["X_test"]
    scores = stacked_forest.predict_proba(X)
    engine = select_engine(stacked_forest)
    assert engine.name == "members"
    assert "Stacking" in engine.reason
    expected = stacked_forest.strategy.combine(stacked_forest.member_predictions(X))
    np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_forcing_onnx_on_a_model_that_does_not_export_raises(stacked_forest, digits_split):
    with pytest.raises(ExportError, match="no tensor form"):
        _fresh(stacked_forest).predict_proba(digits_split["X_test"][:4], engine="onnx")


def test_torch_engine_runs_members_with_their_preprocessing(torch_fused, digits_split):
    X = digits_split["X_test"]
    np.testing.assert_allclose(
        TorchExecutor(torch_fused).run(X), torch_fused.predict_proba(X, engine="members"), atol=1e-5
    )


def test_torch_engine_needs_torch_members(digits_fused):
    with pytest.raises(ValueError, match="are not torch modules"):
        TorchExecutor(digits_fused)


def test_unknown_engine_lists_the_engines(digits_fused, digits_split):
    with pytest.raises(ValueError, match="engine='fast' is not one of auto, onnx, torch, members"):
        digits_fused.predict_proba(digits_split["X_test"][:2], engine="fast")


def test_missing_execution_provider_names_it_and_lists_the_available_ones(torch_fused):
    missing = next(
        p
        for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider")
        if p not in ort.get_available_providers()
    )
    with pytest.raises(
        ExecutionProviderError, match=f"{missing} not available.*available: .*CPUExecutionProvider"
    ):
        OnnxExecutor(build_fused_onnx(torch_fused), providers=[missing])


def test_predicting_never_writes_into_the_bundle_and_uses_an_exported_graph(
    digits_bundle, digits_split, tmp_path, monkeypatch
):
    from modelfusion.bundle import record_bundle_graph
    from modelfusion.runtime.onnx_export import build_fused_onnx

    X = digits_split["X_test"]
    path = shutil.copytree(digits_bundle, tmp_path / "bundle")
    before = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    model = FusedModel.load(path)
    first = model.predict_proba(X)
    assert {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()} == before
    proto = build_fused_onnx(model, example_input=X[:8])
    record_bundle_graph(path, proto.SerializeToString(), proto)  # what `modelfusion export` does
    manifest = json.loads((path / "manifest.json").read_text())
    assert "fused.onnx" in manifest["checksums"]
    assert manifest["metadata"]["runtime"]["onnx"]["input_shape"] == [64]

    import modelfusion.runtime.onnx_export as export

    def no_export(*args, **kwargs):
        raise AssertionError("the recorded fused.onnx should have been used")

    monkeypatch.setattr(export, "build_fused_onnx", no_export)
    again = FusedModel.load(path)  # verifies every checksum, fused.onnx included
    np.testing.assert_allclose(again.predict_proba(X), first, atol=1e-6)
    assert select_engine(again).name == "onnx"


def test_a_changed_cached_graph_is_not_used(digits_bundle, digits_split, tmp_path):
    path = shutil.copytree(digits_bundle, tmp_path / "bundle")
    X = digits_split["X_test"][:8]
    FusedModel.load(path).predict_proba(X)
    model = FusedModel.load(path)
    (path / "fused.onnx").write_bytes(b"not onnx")
    np.testing.assert_allclose(model.predict_proba(X), model.predict_proba(X, engine="members"), atol=1e-5)


def test_inputs_that_are_not_arrays_go_to_the_member_executor(digits_fused, digits_split):
    X = digits_split["X_test"][:16]
    np.testing.assert_allclose(
        digits_fused.predict_proba(X.tolist()), digits_fused.predict_proba(X, engine="members"), atol=1e-6
    )


@pytest.mark.gpu
def test_fused_module_runs_on_cuda_like_on_cpu(torch_fused, digits_split):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    X = digits_split["X_test"]
    on_gpu = TorchExecutor(torch_fused, device="cuda")
    assert on_gpu.device.type == "cuda"
    np.testing.assert_allclose(on_gpu.run(X), TorchExecutor(torch_fused).run(X), atol=1e-4)
    assert next(torch_fused.members[0].parameters()).device.type == "cpu"  # the model itself stays put
