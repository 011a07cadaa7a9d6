"""``modelfusion export`` and ``quantize`` end to end on a saved digits bundle; user errors exit with 2."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from modelfusion.cli.app import _register, app

_register()
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["--quiet", *map(str, args)], catch_exceptions=False)


@pytest.fixture
def bundle(digits_bundle, tmp_path):
    return shutil.copytree(digits_bundle, tmp_path / "bundle")


def test_export_writes_fused_onnx_into_the_bundle_and_records_it(bundle):
    result = invoke("export", bundle, "--format", "onnx")
    assert result.exit_code == 0, result.output
    assert "fused.onnx" in result.output
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["metadata"]["runtime"]["onnx"]["file"] == "fused.onnx"
    assert "fused.onnx" in manifest["checksums"]


def test_export_to_another_path(bundle, tmp_path):
    result = invoke("export", bundle, "--format", "onnx", "--output", tmp_path / "out" / "model.onnx")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "model.onnx").stat().st_size > 0


def test_quantize_prints_size_and_accuracy_before_and_after(bundle):
    result = invoke(
        "quantize", bundle, "--mode", "dynamic", "--data", "builtin:digits", "--split", "validation"
    )
    assert result.exit_code == 0, result.output
    assert "int8 dynamic" in result.output and "fp32" in result.output and "accuracy" in result.output
    assert "where the bytes go" in result.output
    knn = next(line for line in result.output.splitlines() if line.strip().startswith("knn"))
    assert float(knn.split()[-1].rstrip("x×")) > 4  # its training set is stored in one byte per value
    record = json.loads((bundle / "manifest.json").read_text())["metadata"]["runtime"]["quantized"]["int8"]
    assert record["samples"] > 0 and abs(record["delta_pp"]) <= 1.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["quantize", "{b}", "--mode", "weekly", "--data", "builtin:digits"], "mode='weekly' is not one of"),
        (["quantize", "{b}", "--mode", "dynamic", "--precision", "int4", "--data", "builtin:digits"], "int4"),
        (["export", "{b}", "--format", "tflite"], "--format must be one of onnx, tensorrt"),
        (["export", "{b}/missing"], "is not a bundle folder"),
    ],
)
def test_user_errors_exit_with_2_and_one_line(bundle, args, message):
    result = runner.invoke(app, [a.format(b=bundle) for a in args])
    assert result.exit_code == 2
    assert message in result.output
