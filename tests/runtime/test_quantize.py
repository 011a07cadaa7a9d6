"""int8 and fp16 graphs: accuracy within one point on digits, recorded in the manifest; bad requests refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from modelfusion import FusedModel
from modelfusion.files import current_umask
from modelfusion.runtime import OnnxExecutor, QuantizationError, quantize_bundle, quantize_onnx
from modelfusion.runtime.quantize import (
    DYNAMIC_SESSION,
    QUANTIZED_OPS,
    float_nodes,
    static_selection,
    store_grid_tensors_uint8,
)
from modelfusion.runtime.session import read_settings, write_settings


@pytest.fixture(scope="module")
def fused_graph(digits_fused, tmp_path_factory):
    return digits_fused.export_onnx(tmp_path_factory.mktemp("graphs") / "fused.onnx")


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_bundle_keeps_digits_accuracy_within_one_point(mode, digits_bundle, digits_split, tmp_path):
    bundle = shutil.copytree(digits_bundle, tmp_path / "bundle")
    record = quantize_bundle(bundle, mode=mode, data=(digits_split["X_val"], digits_split["y_val"]))
    assert abs(record["delta_pp"]) <= 1.0
    assert record["accuracy_fp32"] > 0.9
    key = "int8" if mode == "dynamic" else "int8-static"  # each mode its own file: neither overwrites
    assert record["file"] == f"fused.{key}.onnx"
    assert (bundle / record["file"]).stat().st_size == record["size_bytes"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["metadata"]["runtime"]["quantized"][key]["mode"] == mode
    assert record["file"] in manifest["checksums"]
    FusedModel.load(bundle)  # every checksum, the new files' included, still verifies
    usual = 0o666 & ~current_umask()  # what open(..., "w") gives; mkstemp alone would give 0600
    assert {(bundle / f).stat().st_mode & 0o777 for f in (record["file"], "manifest.json")} == {usual}


@pytest.fixture
def requantized(digits_bundle, digits_split, tmp_path):
    """A bundle quantized once (dynamic), the data, and the files a failed second quantization must leave."""
    bundle = shutil.copytree(digits_bundle, tmp_path / "bundle")
    data = (digits_split["X_val"], digits_split["y_val"])
    quantize_bundle(bundle, mode="dynamic", data=data)
    before = (bundle / "fused.int8.onnx").read_bytes(), (bundle / "manifest.json").read_text()

    def unchanged() -> bool:
        files = (bundle / "fused.int8.onnx").read_bytes(), (bundle / "manifest.json").read_text()
        hidden = [p.name for p in bundle.iterdir() if p.name.startswith(".")]
        FusedModel.load(bundle)  # verifies every checksum
        return files == before and not hidden

    return bundle, data, unchanged


def _raise(error: BaseException):
    def fail(*args, **kwargs):
        raise error

    return fail


def test_interrupted_requantization_leaves_the_previous_graph_and_a_bundle_that_verifies(
    requantized, monkeypatch
):
    import modelfusion.runtime.quantize as quantize

    bundle, data, unchanged = requantized
    monkeypatch.setattr(quantize, "_quality", _raise(KeyboardInterrupt()))  # Ctrl-C while measuring
    with pytest.raises(KeyboardInterrupt):
        quantize_bundle(bundle, mode="static", data=data)
    assert unchanged()


@pytest.mark.parametrize("hard_links", [True, False])
def test_a_manifest_that_cannot_be_written_puts_the_previous_graph_back(requantized, monkeypatch, hard_links):
    import os

    import modelfusion.manifest as manifest_module

    bundle, data, unchanged = requantized
    if not hard_links:  # vfat, SMB: the recorded graph is copied aside instead
        monkeypatch.setattr(os, "link", _raise(PermissionError(1, "Operation not permitted")))
    monkeypatch.setattr(manifest_module, "write_text_atomic", _raise(OSError(28, "No space left on device")))
    with pytest.raises(OSError, match="No space left"):
        quantize_bundle(bundle, mode="static", data=data)
    monkeypatch.undo()
    assert unchanged()


def test_ctrl_c_between_renaming_the_graph_and_recording_it_waits_for_the_record(
    digits_bundle, digits_split, tmp_path, monkeypatch
):
    import os
    import signal

    import modelfusion.bundle as bundle_module

    bundle = shutil.copytree(digits_bundle, tmp_path / "bundle")
    real = bundle_module.update_manifest

    def interrupted(*args, **kwargs):  # Ctrl-C right after the rename, before the checksum
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(bundle_module, "update_manifest", interrupted)
    with pytest.raises(KeyboardInterrupt):
        quantize_bundle(bundle, mode="dynamic", data=(digits_split["X_val"], digits_split["y_val"]))
    # the first staged file is the exported fp32 graph: it arrived with its record, and the
    # interrupt stopped the run before the int8 graph
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert "fused.onnx" in manifest["checksums"] and "fused.int8.onnx" not in manifest["checksums"]
    assert not (bundle / "fused.int8.onnx").exists()
    FusedModel.load(bundle)


def test_fp16_graph_keeps_the_predictions(fused_graph, digits_split, tmp_path):
    half = quantize_onnx(fused_graph, tmp_path / "fused.fp16.onnx", precision="fp16")
    X = digits_split["X_test"]
    full, reduced = OnnxExecutor(fused_graph).run(X), OnnxExecutor(half).run(X)
    assert np.abs(full - reduced).max() < 1e-2
    assert (full.argmax(1) == reduced.argmax(1)).mean() > 0.99


def test_static_quantization_without_calibration_data_is_refused(fused_graph, tmp_path):
    with pytest.raises(QuantizationError, match="static quantization needs calibration data"):
        quantize_onnx(fused_graph, tmp_path / "q.onnx", mode="static")
    assert not (tmp_path / "q.onnx").exists()


def test_static_bundle_quantization_without_data_is_refused(digits_bundle):
    with pytest.raises(QuantizationError, match="static quantization needs calibration data"):
        quantize_bundle(digits_bundle, mode="static")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "weekly"}, "mode='weekly' is not one of dynamic, static"),
        ({"precision": "int4"}, "precision='int4' is not one of int8, fp16"),
        ({"mode": "static", "precision": "fp16"}, "fp16 is a cast with no calibration"),
    ],
)
def test_bad_quantization_requests_say_what_is_accepted(fused_graph, tmp_path, kwargs, message):
    with pytest.raises(QuantizationError, match=message):
        quantize_onnx(fused_graph, tmp_path / "q.onnx", **kwargs)


@pytest.fixture(scope="module")
def conv_graph(conv_fused, digits_split, tmp_path_factory):
    graph = tmp_path_factory.mktemp("graphs") / "conv.onnx"
    return conv_fused.export_onnx(graph, example_input=digits_split["X_val"][:8])


def _initializer_types(path) -> dict[str, int]:
    model = onnx.load(str(path))
    return {init.name: init.data_type for init in model.graph.initializer}


def test_dynamic_int8_stores_conv_weights_in_int8_and_shrinks_the_graph(conv_graph, digits_split, tmp_path):
    small = quantize_onnx(conv_graph, tmp_path / "conv.int8.onnx", mode="dynamic")
    assert conv_graph.stat().st_size / small.stat().st_size >= 3.5
    model = onnx.load(str(small))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    assert len(convs) == 4 and all(n.input[1] in dequantized for n in convs)  # float Conv, int8 storage
    assert not [n for n in model.graph.node if n.op_type == "ConvInteger"]
    assert read_settings(small) == DYNAMIC_SESSION | {"disabled_optimizers": []}
    X, y = digits_split["X_test"], digits_split["y_test"]
    full, reduced = OnnxExecutor(conv_graph).run(X), OnnxExecutor(small).run(X)
    assert np.abs(full - reduced).max() < 0.05
    acc = [(s.argmax(1) == y).mean() for s in (full, reduced)]
    assert acc[0] > 0.85 and abs(acc[0] - acc[1]) <= 0.01


def test_executor_applies_the_session_settings_a_graph_records(conv_graph, tmp_path):
    small = quantize_onnx(conv_graph, tmp_path / "conv.int8.onnx", mode="dynamic")
    options = OnnxExecutor(small).session.get_session_options()
    assert options.get_session_config_entry("session.disable_quant_qdq") == "1"
    plain = OnnxExecutor(conv_graph).session.get_session_options()
    with pytest.raises(RuntimeError, match="does not have configuration"):
        plain.get_session_config_entry("session.disable_quant_qdq")


def test_static_int8_keeps_shallow_convolutions_float_and_int8_flowing_through_pools(
    conv_graph, digits_split, tmp_path
):
    source = onnx.load(str(conv_graph))
    ops, excluded = static_selection(source, QUANTIZED_OPS["static"], float_nodes(source))
    by_name = {n.name: n for n in source.graph.node}
    excluded_ops = sorted(by_name[name].op_type for name in excluded if "features" in name)
    # per member: the shallow first conv and the ReLU it feeds stay float; conv 2 -> ReLU -> MaxPool go int8
    assert excluded_ops == ["Conv", "Conv", "Relu", "Relu"]
    assert set(ops) >= {"Conv", "MatMul", "Gemm", "Relu", "MaxPool"}

    X = digits_split["X_val"]
    q = quantize_onnx(conv_graph, tmp_path / "conv.static.onnx", mode="static", calibration=X)
    model = onnx.load(str(q))
    convs_with_float_weights = [
        n for n in model.graph.node if n.op_type == "Conv" and _initializer_types(q).get(n.input[1]) == 1
    ]
    assert len(convs_with_float_weights) == 2  # the two members' first layers
    assert read_settings(q)["disabled_optimizers"] == ["QDQPropagationTransformer"]
    X_test, y = digits_split["X_test"], digits_split["y_test"]
    full, reduced = OnnxExecutor(conv_graph).run(X_test), OnnxExecutor(q).run(X_test)
    assert abs((full.argmax(1) == y).mean() - (reduced.argmax(1) == y).mean()) <= 0.01


def test_session_settings_round_trip_and_replace_earlier_ones(conv_graph):
    model = onnx.load(str(conv_graph))
    write_settings(model, config={"a": "1"})
    write_settings(model, disabled_optimizers=["X"])
    assert read_settings(model) == {"config": {}, "disabled_optimizers": ["X"]}
    assert sum(p.key == "modelfusion.ort_session" for p in model.metadata_props) == 1
    assert read_settings(conv_graph) == {}


def _grid_graph(tensors: dict[str, np.ndarray], *, reader_names: dict[str, str] | None = None):
    """A graph returning each tensor through Identity (node named ``reader_names[name]``, default ``read_NAME``)."""
    from onnx import helper, numpy_helper

    reader_names = reader_names or {}
    nodes = [
        helper.make_node("Identity", [name], [f"out_{name}"], name=reader_names.get(name, f"read_{name}"))
        for name in tensors
    ]
    outputs = [
        helper.make_tensor_value_info(f"out_{name}", helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
        for name, v in tensors.items()
    ]
    inits = [numpy_helper.from_array(v, name) for name, v in tensors.items()]
    graph = helper.make_graph(nodes, "grid", [], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run_bytes(model) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {})


def test_grid_valued_tensors_are_stored_in_one_byte_and_restored_bit_for_bit(digits_split):
    from onnx import TensorProto

    rng = np.random.default_rng(0)
    tensors = {
        "pixels": digits_split["X_train"].astype(np.float64),  # multiples of 1/16
        "pixels32": digits_split["X_train"][:200],
        "labels": rng.integers(0, 10, size=2048).astype(np.int64),
        "evens": rng.choice(np.array([-40, 0, 6, 10], np.int32), size=2048),  # gcd 2, smallest gap 4
        "noise": rng.normal(size=(64, 32)),  # no grid
        "signed_zero": np.tile(np.array([-0.0, 0.0, 1.0, 2.0]), 512),  # -0.0 would come back as 0.0
        "wraps": np.tile(np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max]), 1024),
    }
    model = _grid_graph(tensors)
    before = _run_bytes(model)
    size = model.ByteSize()
    assert store_grid_tensors_uint8(model, [f"read_{name}" for name in tensors]) == 4
    stored = {init.name: init.data_type for init in model.graph.initializer}
    for name in ("pixels", "pixels32", "labels", "evens"):
        assert stored[f"{name}_uint8"] == TensorProto.UINT8 and name not in stored
    for name in ("noise", "signed_zero", "wraps"):
        assert name in stored
    assert model.ByteSize() < size / 2
    onnx.checker.check_model(model, full_check=True)
    for a, b in zip(before, _run_bytes(model), strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()  # lossless, not merely close


def test_grid_storage_touches_only_the_given_nodes_tensors_and_avoids_name_clashes():
    codes = np.tile(np.arange(4, dtype=np.float32), 512)
    tensors = {"mine": codes, "mine_uint8": codes + 1, "theirs": codes}
    model = _grid_graph(tensors, reader_names={"mine_uint8": "mine_cast"})
    before = _run_bytes(model)
    # "theirs" is read by a node outside the set: left alone; the others get names that clash with nothing
    assert store_grid_tensors_uint8(model, ["read_mine", "mine_cast"]) == 2
    assert "theirs" in {init.name for init in model.graph.initializer}
    onnx.checker.check_model(model, full_check=True)
    for a, b in zip(before, _run_bytes(model), strict=True):
        assert a.tobytes() == b.tobytes()


def test_int8_shrinks_a_graph_dominated_by_a_knn_training_set(fused_graph, digits_split, tmp_path):
    small = quantize_onnx(fused_graph, tmp_path / "fused.int8.onnx", mode="dynamic")
    assert fused_graph.stat().st_size / small.stat().st_size >= 1.8  # was 1.03x before k-NN's data went uint8
    X, y = digits_split["X_test"], digits_split["y_test"]
    full, reduced = OnnxExecutor(fused_graph).run(X), OnnxExecutor(small).run(X)
    assert abs((full.argmax(1) == y).mean() - (reduced.argmax(1) == y).mean()) <= 0.01


def test_static_and_dynamic_int8_graphs_live_side_by_side(digits_bundle, digits_split, tmp_path):
    bundle = shutil.copytree(digits_bundle, tmp_path / "bundle")
    data = (digits_split["X_val"], digits_split["y_val"])
    dynamic = quantize_bundle(bundle, mode="dynamic", data=data)
    first = (bundle / dynamic["file"]).read_bytes()
    static = quantize_bundle(bundle, mode="static", data=data)
    assert (dynamic["file"], static["file"]) == ("fused.int8.onnx", "fused.int8-static.onnx")
    assert (bundle / dynamic["file"]).read_bytes() == first  # the static run left the dynamic graph alone
    quantized = json.loads((bundle / "manifest.json").read_text())["metadata"]["runtime"]["quantized"]
    assert quantized["int8"]["mode"] == "dynamic" and quantized["int8-static"]["mode"] == "static"


def test_fp16_of_a_bundle_with_a_keras_member_loads_and_matches(digits_split, tmp_path):
    keras = pytest.importorskip("keras")
    from modelfusion import load_member, score_members
    from modelfusion.strategies import Mean

    net = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
    net.save(tmp_path / "k.keras")
    member = load_member(tmp_path / "k.keras", name="k", output_kind="proba")
    X, y = digits_split["X_val"][:200], digits_split["y_val"][:200]
    bundle = FusedModel([member], Mean().fit(score_members([member], X, y=y))).save(tmp_path / "bundle")
    record = quantize_bundle(bundle, mode="dynamic", precision="fp16", data=(X, y))  # was: ORT type error
    assert record["file"] == "fused.fp16.onnx" and record["max_abs_diff"] < 1e-2
