"""``convert_model``: real models to ONNX and back to PyTorch, checked in real ONNX Runtime sessions."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from modelfusion import convert_model, load_member
from modelfusion.conversion import parse_input_shape
from modelfusion.errors import (
    ExportError,
    InputError,
    MemberFileNotFoundError,
    MemberLoadError,
    ParameterError,
    UnsafeFormatError,
)

from .conftest import run_onnx, torch_out

TOL = 1e-4


@pytest.fixture
def folder(models, tmp_path):
    """A private copy of the model files, so each test sees only what it wrote."""
    return shutil.copytree(models["folder"], tmp_path / "models")


def test_logistic_regression_skops_to_onnx_predicts_like_the_estimator(models, folder, digits):
    X, _ = digits
    result = convert_model(folder / "logreg.skops", to="onnx")
    assert result.output == folder / "logreg.onnx" and result.format == "onnx"
    assert result.max_abs_diff <= TOL and result.samples == 16 and result.source_framework == "sklearn"
    assert np.abs(run_onnx(result.output, X) - models["logreg"].predict_proba(X)).max() <= TOL


def test_random_forest_is_checked_on_the_rows_of_the_check_data(models, folder, digits):
    X, _ = digits
    result = convert_model(folder / "forest.skops", to="onnx", check=X[:300])
    assert result.samples == 300 and result.max_abs_diff <= TOL
    assert np.abs(run_onnx(result.output, X) - models["forest"].predict_proba(X)).max() <= TOL


def test_check_data_can_be_a_dataset_name(folder):
    result = convert_model(folder / "logreg.skops", to="onnx", check="builtin:digits")
    assert result.samples == 1024 and result.max_abs_diff <= TOL


def test_torch_mlp_pt2_to_onnx_predicts_like_the_module(models, folder, digits):
    X, _ = digits
    result = convert_model(folder / "mlp.pt2", to="onnx", output=folder / "mlp_graph.onnx", opset=17)
    assert result.max_abs_diff <= TOL
    assert np.abs(run_onnx(result.output, X) - torch_out(models["mlp"], X)).max() <= TOL


def test_cnn_with_batchnorm_to_onnx_and_back_to_torch_reloads_without_trust(models, folder, digits):
    X, _ = digits
    graph = convert_model(folder / "cnn.pt2", to="onnx")
    assert np.abs(run_onnx(graph.output, X) - torch_out(models["cnn"], X)).max() <= TOL
    back = convert_model(graph.output, to="torch", output=folder / "cnn_back.pt2")
    assert back.format == "torch" and back.max_abs_diff <= TOL and back.source_framework == "onnx"
    reloaded = load_member(back.output, trust=False)
    assert np.abs(reloaded.predict(X) - torch_out(models["cnn"], X)).max() <= TOL


def test_state_dict_with_an_architecture_converts(folder, digits, monkeypatch):
    import torch
    from safetensors.torch import save_model

    X, _ = digits
    (folder / "tinynets.py").write_text(
        "from torch import nn\n\ndef mlp():\n    return nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10))\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    net = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10)).eval()
    save_model(net, str(folder / "net.safetensors"))
    result = convert_model(
        folder / "net.safetensors", to="onnx", input_shape="1,64", architecture="tinynets:mlp"
    )
    assert result.max_abs_diff <= TOL
    assert np.abs(run_onnx(result.output, X) - torch_out(net, X)).max() <= TOL


def test_torchscript_needs_trust_and_an_input_shape(models, folder, digits):
    import torch

    X, _ = digits
    torch.jit.trace(models["mlp"], torch.from_numpy(X[:2])).save(str(folder / "mlp.ts"))
    with pytest.raises(UnsafeFormatError, match="TorchScript"):
        convert_model(folder / "mlp.ts", to="onnx", input_shape="1,64")
    with pytest.raises(InputError, match=r"cannot tell the input shape of '.*mlp\.ts'.*--input-shape"):
        convert_model(folder / "mlp.ts", to="onnx", trust=True)
    result = convert_model(folder / "mlp.ts", to="onnx", input_shape=(1, 64), trust=True)
    assert np.abs(run_onnx(result.output, X) - torch_out(models["mlp"], X)).max() <= TOL


def test_keras_model_to_onnx_and_to_torch(folder, digits):
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("keras runs on the torch backend here")
    X, _ = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.save(folder / "tiny.keras")
    expected = np.asarray(model.predict_on_batch(X))
    graph = convert_model(folder / "tiny.keras", to="onnx")
    assert graph.source_framework == "keras" and graph.max_abs_diff <= TOL
    assert np.abs(run_onnx(graph.output, X) - expected).max() <= TOL
    program = convert_model(folder / "tiny.keras", to="torch")
    assert program.output == folder / "tiny.pt2"
    assert np.abs(load_member(program.output).predict(X) - expected).max() <= TOL


def test_a_float64_linear_skl2onnx_graph_converts_to_torch(models, folder, digits):
    X, _ = digits
    graph = convert_model(folder / "logreg.skops", to="onnx")
    result = convert_model(graph.output, to="torch", output=folder / "logreg.pt2", check=X[:200])
    assert result.max_abs_diff <= TOL
    assert np.abs(load_member(result.output).predict(X) - models["logreg"].predict_proba(X)).max() <= TOL


def test_a_tree_ensemble_graph_is_refused_by_name_for_torch(folder):
    graph = convert_model(folder / "forest.skops", to="onnx")
    with pytest.raises(ExportError, match=r"ai\.onnx\.ml\.TreeEnsemble"):
        convert_model(graph.output, to="torch", output=folder / "forest.pt2")
    assert not (folder / "forest.pt2").exists()


@pytest.mark.parametrize("to", ["onnx", "torch"])
def test_parity_over_tolerance_fails_with_the_number_and_writes_nothing(folder, to):
    source = folder / "cnn.pt2"
    if to == "torch":
        source = convert_model(source, to="onnx").output
    before = set(folder.iterdir())
    with pytest.raises(ExportError, match=r"differ .* by up to \d\.\d+e-\d+ .*above the tolerance 1e-12"):
        convert_model(
            source, to=to, output=folder / f"strict.{'onnx' if to == 'onnx' else 'pt2'}", tolerance=1e-12
        )
    assert set(folder.iterdir()) == before  # neither the file nor a temporary one


def test_a_missing_model_is_named(folder):
    with pytest.raises(MemberFileNotFoundError, match=r"missing\.skops' does not exist"):
        convert_model(folder / "missing.skops", to="onnx")


def test_an_unknown_format_names_the_file_and_the_supported_ones(folder):
    (folder / "model.xyz").write_bytes(b"0")
    with pytest.raises(MemberLoadError, match=r"model\.xyz.*'\.xyz'.*supported: \.onnx, \.skops"):
        convert_model(folder / "model.xyz", to="onnx", output=folder / "model.onnx")


def test_an_unknown_target_is_refused(folder):
    with pytest.raises(ParameterError, match="--to must be one of onnx, torch, got 'tflite'"):
        convert_model(folder / "logreg.skops", to="tflite")


@pytest.mark.parametrize("shape", ["a,b", "64", "1,-3", "1,,64"])
def test_a_malformed_input_shape_says_the_expected_form(shape):
    with pytest.raises(ParameterError, match=r"batch first, e\.g\. 1,3,32,32"):
        parse_input_shape(shape)


def test_input_shape_parses_commas_and_spaces():
    assert parse_input_shape(" 1, 3,32 ,32") == (1, 3, 32, 32)


def test_a_missing_output_folder_is_refused_before_loading(folder):
    with pytest.raises(ParameterError, match="does not exist; create it first"):
        convert_model(folder / "logreg.skops", to="onnx", output=folder / "nowhere" / "m.onnx")
    assert not (folder / "nowhere").exists()


def test_converting_to_the_format_it_already_has_is_refused(folder):
    graph = convert_model(folder / "logreg.skops", to="onnx")
    with pytest.raises(ParameterError, match="already a onnx model; convert it with --to torch"):
        convert_model(graph.output, to="onnx", output=folder / "again.onnx")
