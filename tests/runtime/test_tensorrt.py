"""TensorRTConverter: one clear error without TensorRT or a GPU, the build path on a stand-in, the real one on a GPU."""

from __future__ import annotations

import importlib.util
import sys
from unittest import mock

import pytest
import torch
from torch import nn

from modelfusion.runtime import ExportError, TensorRTConverter, TensorRTUnavailableError

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


@pytest.fixture(scope="module")
def onnx_file(torch_fused, tmp_path_factory):
    return torch_fused.export_onnx(tmp_path_factory.mktemp("trt") / "fused.onnx")


@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT and a GPU are present")
def test_without_tensorrt_or_gpu_one_error_says_what_is_missing_and_what_to_use(onnx_file, tmp_path):
    converter = TensorRTConverter(model_path=onnx_file, output_path=tmp_path / "fused.engine")
    with pytest.raises(
        TensorRTUnavailableError,
        match=r"missing .*(tensorrt|CUDA GPU).*modelfusion export BUNDLE --format onnx",
    ):
        converter.convert()
    assert not (tmp_path / "fused.engine").exists()


def test_state_dict_file_asks_for_the_architecture(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(nn.Linear(64, 10).state_dict(), path)
    with pytest.raises(ExportError, match="holds only weights .*architecture"):
        TensorRTConverter(model_path=path, output_path=tmp_path / "x.engine").convert()


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_without_input_shape_asks_for_it(tmp_path):
    path = tmp_path / "net.pt"
    torch.jit.script(nn.Linear(64, 10)).save(str(path))
    with pytest.raises(ExportError, match="pass input_shape="):
        TensorRTConverter(model_path=path, output_path=tmp_path / "x.engine").convert()


def _stand_in_tensorrt(input_shape=(-1, 64)):
    trt = mock.MagicMock(name="tensorrt")
    network = trt.Builder.return_value.create_network.return_value
    network.num_inputs = 1
    network.get_input.return_value.shape = input_shape
    network.get_input.return_value.name = "input"
    trt.OnnxParser.return_value.parse.return_value = True
    trt.Builder.return_value.build_serialized_network.return_value = b"serialized engine"
    return trt


@pytest.mark.parametrize(("precision", "flag"), [("fp16", "FP16"), ("fp32", None)])
def test_build_sets_precision_and_a_dynamic_batch_profile(onnx_file, tmp_path, monkeypatch, precision, flag):
    trt = _stand_in_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    out = TensorRTConverter(
        model_path=onnx_file, output_path=tmp_path / "f.engine", precision=precision, max_batch=64
    ).convert()
    assert out.read_bytes() == b"serialized engine"
    assert trt.OnnxParser.return_value.parse.call_args.args[0] == onnx_file.read_bytes()
    config = trt.Builder.return_value.create_builder_config.return_value
    flags = [c.args[0] for c in config.set_flag.call_args_list]
    assert flags == ([getattr(trt.BuilderFlag, flag)] if flag else [])
    profile = trt.Builder.return_value.create_optimization_profile.return_value
    profile.set_shape.assert_called_once_with("input", (1, 64), (32, 64), (64, 64))


def test_int8_needs_a_statically_quantized_graph(onnx_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", _stand_in_tensorrt())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ValueError, match="int8 TensorRT engine needs a statically quantized graph"):
        TensorRTConverter(model_path=onnx_file, output_path=tmp_path / "f.engine", precision="int8").convert()


def test_torch_export_archive_goes_through_onnx(tmp_path, monkeypatch):
    net = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    program = torch.export.export(
        net, (torch.zeros(2, 64),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, tmp_path / "net.pt2")
    trt = _stand_in_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    TensorRTConverter(model_path=tmp_path / "net.pt2", output_path=tmp_path / "net.engine").convert()
    import onnx

    graph = onnx.load_from_string(trt.OnnxParser.return_value.parse.call_args.args[0]).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_TENSORRT, reason="needs tensorrt and a CUDA GPU")
def test_real_engine_builds_from_an_all_torch_graph(onnx_file, tmp_path):
    out = TensorRTConverter(
        model_path=onnx_file, output_path=tmp_path / "fused.engine", precision="fp16"
    ).convert()
    assert out.stat().st_size > 0
