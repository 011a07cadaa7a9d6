"""int8 and fp16 graphs: accuracy within one point on digits, recorded in the manifest; bad requests refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from modelfusion import FusedModel
from modelfusion.runtime import OnnxExecutor, QuantizationError, quantize_bundle, quantize_onnx


@pytest.fixture(scope="module")
def fused_graph(digits_fused, tmp_path_factory):
    return digits_fused.export_onnx(tmp_path_factory.mktemp("graphs") / "fused.onnx")


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_bundle_keeps_digits_accuracy_within_one_point(mode, digits_bundle, digits_split, tmp_path):
    bundle = shutil.copytree(digits_bundle, tmp_path / "bundle")
    record = quantize_bundle(bundle, mode=mode, data=(digits_split["X_val"], digits_split["y_val"]))
    assert abs(record["delta_pp"]) <= 1.0
    assert record["accuracy_fp32"] > 0.9
    assert (bundle / "fused.int8.onnx").stat().st_size == record["size_bytes"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["metadata"]["runtime"]["quantized"]["int8"]["mode"] == mode
    assert "fused.int8.onnx" in manifest["checksums"]
    FusedModel.load(bundle)  # every checksum, the new files' included, still verifies


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
