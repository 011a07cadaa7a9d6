"""One ONNX graph for the whole ensemble: parity with the library, dynamic batch, and every bad input."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from torch import nn

from modelfusion import FusedModel, load_member, score_members
from modelfusion.data import build_preprocessor
from modelfusion.runtime import ExportError, ExportWarning, build_fused_onnx
from modelfusion.strategies import Mean, Stacking, WeightedAverage

from .conftest import export_torch_onnx


def _run(proto_or_path, X: np.ndarray) -> np.ndarray:
    source = (
        proto_or_path.SerializeToString()
        if hasattr(proto_or_path, "SerializeToString")
        else str(proto_or_path)
    )
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(["scores"], {"input": X})[0]


def _linear_onnx(
    path, *, opset: int, op: str = "Relu", batch: int | str = "N", reshape_to: int | None = None
):
    """A tiny ONNX classifier [batch, 64] -> 10 logits, optionally with a Reshape baking in the batch."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(64, 10)).astype(np.float32), "W")]
    nodes, x = [], "x"
    if reshape_to is not None:
        inits.append(numpy_helper.from_array(np.array([reshape_to, 64], np.int64), "shape"))
        nodes.append(helper.make_node("Reshape", ["x", "shape"], ["xr"]))
        x = "xr"
    nodes += [helper.make_node("MatMul", [x, "W"], ["z"]), helper.make_node(op, ["z"], ["logits"])]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _fused_with(extra_member, digits_members, digits_split) -> FusedModel:
    members = [digits_members[2], extra_member]  # logreg + the member under test
    preds = score_members(members, digits_split["X_val"], progress=False)
    return FusedModel(members, Mean().fit(preds))


def test_heterogeneous_digits_graph_matches_predict_proba_within_1e_4(digits_fused, digits_split):
    X = digits_split["X_test"]
    proto = build_fused_onnx(digits_fused)
    expected = digits_fused.predict_proba(X, engine="members")
    np.testing.assert_allclose(_run(proto, X), expected, atol=1e-4)
    assert {"torch", "onnx", "sklearn"} <= set(json.loads(proto.metadata_props[1].value))


def test_graph_has_a_dynamic_batch_axis(digits_fused, digits_split, tmp_path):
    path = digits_fused.export_onnx(tmp_path / "fused.onnx")
    model = onnx.load(str(path))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    X = digits_split["X_test"]
    expected = digits_fused.predict_proba(X, engine="members")
    for n in (1, 7, len(X)):
        np.testing.assert_allclose(_run(path, X[:n]), expected[:n], atol=1e-4)


def test_all_torch_ensemble_graph_matches_eager_within_1e_4(torch_fused, digits_split):
    X = digits_split["X_test"]
    got = _run(build_fused_onnx(torch_fused), X)
    np.testing.assert_allclose(got, torch_fused.predict_proba(X, engine="members"), atol=1e-4)
    np.testing.assert_allclose(got, torch_fused.predict_proba(X, engine="torch"), atol=1e-4)


def test_binary_members_with_one_logit_column_are_expanded_like_the_library(digits_split):
    d = digits_split
    y = (d["y_train"] >= 5).astype(int)
    torch.manual_seed(0)
    net = load_member(nn.Sequential(nn.Linear(64, 1)).eval(), name="net", output_kind="logits")
    lr = load_member(LogisticRegression(max_iter=300).fit(d["X_train"], y), name="lr")
    members = [net, lr]
    preds = score_members(members, d["X_val"], progress=False)
    fused = FusedModel(members, WeightedAverage([0.3, 0.7]).fit(preds))
    np.testing.assert_allclose(
        _run(build_fused_onnx(fused), d["X_test"]),
        fused.predict_proba(d["X_test"], engine="members"),
        atol=1e-4,
    )


def test_regression_ensemble_exports_values(digits_split):
    d = digits_split
    target = d["y_train"].astype(float)
    members = [
        load_member(LinearRegression().fit(d["X_train"], target), name="ols"),
        load_member(Ridge(alpha=3.0).fit(d["X_train"], target), name="ridge"),
    ]
    preds = score_members(members, d["X_val"], progress=False)
    fused = FusedModel(members, Mean().fit(preds))
    got = _run(build_fused_onnx(fused), d["X_test"])
    np.testing.assert_allclose(got, fused.predict_scores(d["X_test"], engine="members"), rtol=1e-4, atol=1e-4)


def test_strategy_without_tensor_form_is_named(digits_members, digits_val_preds, digits_split):
    stacking = Stacking(meta_learner=RandomForestClassifier(n_estimators=5, random_state=0), cv=2)
    fused = FusedModel(digits_members, stacking.fit(digits_val_preds, digits_split["y_val"]))
    with pytest.raises(
        ExportError, match="Stacking with meta_learner RandomForestClassifier has no tensor form"
    ):
        build_fused_onnx(fused)


def test_member_with_a_fixed_batch_size_is_named(digits_members, digits_split, tmp_path):
    path = _linear_onnx(tmp_path / "fixed.onnx", opset=17, batch=4, reshape_to=4)
    member = load_member(path, name="fixed", output_kind="logits")
    fused = _fused_with(member, digits_members, digits_split)
    with pytest.raises(ExportError, match="member 'fixed' has a fixed batch size of 4"):
        build_fused_onnx(fused)


def test_fixed_batch_graph_whose_rows_are_independent_is_merged(digits_members, digits_split, tmp_path):
    path = _linear_onnx(tmp_path / "fixed.onnx", opset=17, batch=4)
    fused = _fused_with(load_member(path, name="fixed", output_kind="logits"), digits_members, digits_split)
    X = digits_split["X_test"]
    np.testing.assert_allclose(
        _run(build_fused_onnx(fused), X), fused.predict_proba(X, engine="members"), atol=1e-4
    )


def test_opset_that_cannot_be_converted_names_member_and_both_opsets(digits_members, digits_split, tmp_path):
    path = _linear_onnx(tmp_path / "gelu.onnx", opset=20, op="Gelu")
    fused = _fused_with(load_member(path, name="gelu", output_kind="logits"), digits_members, digits_split)
    with pytest.raises(ExportError, match="member 'gelu': its ONNX graph uses opset 20 .* opset 17"):
        build_fused_onnx(fused, opset=17)


def test_opset_conversion_is_announced_and_keeps_parity(digits_members, digits_split, tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    path = export_torch_onnx(net, torch.zeros(2, 64), tmp_path / "old.onnx", opset=13)
    fused = _fused_with(load_member(path, name="old", output_kind="logits"), digits_members, digits_split)
    with pytest.warns(ExportWarning, match="member 'old': converted its ONNX graph from opset 13 to 17"):
        proto = build_fused_onnx(fused, opset=17)
    X = digits_split["X_test"]
    np.testing.assert_allclose(_run(proto, X), fused.predict_proba(X, engine="members"), atol=1e-4)


def test_preprocessing_without_an_onnx_form_names_member_and_step(digits_members, digits_split):
    spec = {"image": {"size": 16}}
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(256, 10)).eval()
    member = load_member(
        net,
        name="upscaled",
        output_kind="logits",
        preprocess=build_preprocessor([{"reshape": [1, 8, 8]}, spec]),
    )
    member.preprocess_spec = [{"reshape": [1, 8, 8]}, spec]
    fused = _fused_with(member, digits_members, digits_split)
    with pytest.raises(ExportError, match="member 'upscaled': preprocess image size \\[16, 16\\]"):
        build_fused_onnx(fused)


def test_image_normalisation_is_baked_into_the_graph(digits_members, digits_split):
    spec = [{"reshape": [1, 8, 8]}, {"image": {"mean": [0.5], "std": [0.25]}}]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    member = load_member(net, name="normed", output_kind="logits", preprocess=build_preprocessor(spec))
    member.preprocess_spec = spec
    fused = _fused_with(member, digits_members, digits_split)
    X = digits_split["X_test"]
    np.testing.assert_allclose(
        _run(build_fused_onnx(fused), X), fused.predict_proba(X, engine="members"), atol=1e-4
    )


def test_preprocess_callable_without_spec_is_named(digits_members, digits_split):
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    member = load_member(net, name="opaque", output_kind="logits", preprocess=lambda b: b * 2)
    fused = _fused_with(member, digits_members, digits_split)
    with pytest.raises(ExportError, match="member 'opaque' has a preprocess callable with no spec"):
        build_fused_onnx(fused)


class _TupleHead(nn.Module):
    """Returns (logits, features): a TorchScript member's scores are its first output."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(64, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = torch.relu(self.body(x))
        return self.head(features), features


@pytest.mark.filterwarnings("ignore:`torch.jit.(script|trace)` is deprecated:FutureWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.(trace_method|load)` is deprecated:FutureWarning")
@pytest.mark.parametrize("how", ["script", "trace", "tuple"])
def test_torchscript_members_from_files_are_merged_with_parity(how, digits_members, digits_split, tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    if how == "script":
        scripted = torch.jit.script(net)
    elif how == "trace":
        scripted = torch.jit.trace(net, torch.zeros(2, 64))
    else:
        scripted = torch.jit.script(_TupleHead().eval())
    path = tmp_path / f"{how}.torchscript.pt"
    scripted.save(str(path))
    member = load_member(path, name=how, output_kind="logits", trust=True)
    fused = _fused_with(member, digits_members, digits_split)
    X = digits_split["X_test"]
    proto = build_fused_onnx(fused)
    np.testing.assert_allclose(_run(proto, X), fused.predict_proba(X, engine="members"), atol=1e-4)


def test_each_adapter_converts_itself_and_reports_its_sample_shape(digits_members, digits_split):
    """Member.to_onnx / sample_shape: one framework, one file; a member without a converter says so."""
    from modelfusion.members.base import Member

    by_name = {m.name: m for m in digits_members}
    assert by_name["logreg"].sample_shape() == (64,)
    assert by_name["mlp"].sample_shape() in ((64,), None)  # an ONNX file with a dynamic or fixed input
    example = digits_split["X_test"][:4]
    graph = by_name["logreg"].to_onnx(example, 17)
    assert len(graph.model.graph.input) == 1 and len(graph.model.graph.output) == 1
    assert by_name["mlp"].onnx_opset() is not None and by_name["logreg"].onnx_opset() is None

    class Opaque(Member):
        framework = "custom"

        def _predict(self, batch):
            return np.zeros((len(batch), 10), np.float32)

        def fingerprint(self):
            return "0"

        def save(self, directory):
            return {"file": "none"}

        @classmethod
        def load_saved(cls, directory, spec, *, trust=False):
            return cls(name="opaque")

    opaque = Opaque(name="opaque", classes=list(range(10)))
    assert opaque.sample_shape() is None and opaque.example_input() is None
    with pytest.raises(ExportError, match="member 'opaque' \\(custom\\) has no ONNX converter here"):
        opaque.to_onnx(example, 17)
