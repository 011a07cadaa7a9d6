"""``modelfusion convert`` end to end: one line per conversion; user errors are one red line and exit 2."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from modelfusion.cli.app import _register, app

from .conftest import run_onnx

_register()
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["--quiet", *map(str, args)], catch_exceptions=False)


@pytest.fixture
def folder(models, tmp_path):
    return shutil.copytree(models["folder"], tmp_path / "models")


def test_convert_skops_to_onnx_prints_the_difference_and_writes_the_file(models, folder, digits):
    X, _ = digits
    result = invoke("convert", folder / "logreg.skops", "--to", "onnx", "--check", "builtin:digits")
    assert result.exit_code == 0, result.output
    line = result.output.strip()
    assert re.search(
        r"logreg\.skops \(sklearn\) -> .*logreg\.onnx \(onnx\): max abs difference \S+ over 1024", line
    )
    diff = float(re.search(r"max abs difference (\S+)", line).group(1))
    assert diff <= 1e-4
    assert np.abs(run_onnx(folder / "logreg.onnx", X) - models["logreg"].predict_proba(X)).max() <= 1e-4


def test_convert_onnx_to_torch_writes_a_pt2(folder):
    invoke("convert", folder / "cnn.pt2", "--to", "onnx")
    result = invoke("convert", folder / "cnn.onnx", "--to", "torch", "-o", folder / "cnn_back.pt2")
    assert result.exit_code == 0, result.output
    assert "(onnx) -> " in result.output and "cnn_back.pt2 (torch)" in result.output
    assert (folder / "cnn_back.pt2").stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{f}/logreg.skops", "--to", "tflite"], "--to must be one of onnx, torch"),
        (["{f}/logreg.skops", "--to", "onnx", "--input-shape", "1;64"], "batch first, e.g. 1,3,32,32"),
        (["{f}/missing.pt2", "--to", "onnx"], "missing.pt2' does not exist"),
        (["{f}/logreg.skops", "--to", "onnx", "-o", "{f}/no/dir/x.onnx"], "does not exist; create it first"),
        (["{f}/cnn.pt2", "--to", "onnx", "--tolerance", "1e-12"], "above the tolerance 1e-12"),
    ],
)
def test_user_errors_are_one_red_line_and_exit_2(folder, args, message):
    before = set(folder.iterdir())
    result = invoke("convert", *(a.format(f=folder) for a in args))
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and message in result.output.replace("\n", " ")
    assert "Traceback" not in result.output
    assert set(folder.iterdir()) == before
