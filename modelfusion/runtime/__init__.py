"""Fast fused inference: one ONNX graph for the whole ensemble, engines to run it, int8/fp16, TensorRT.

Examples
--------
>>> from modelfusion.runtime import export_fused_onnx, select_engine, quantize_onnx
>>> export_fused_onnx(fused, "fused.onnx")                      # members + rule in one graph
>>> select_engine(fused).run(X_test)                             # ONNX Runtime, torch or members
>>> quantize_onnx("fused.onnx", "fused.int8.onnx", mode="dynamic")
>>> graph_breakdown("fused.int8.onnx", X_test[:256])                # bytes and time per member
"""

from modelfusion.runtime.engine import ENGINES, select_engine
from modelfusion.runtime.errors import (
    ExecutionProviderError,
    ExportError,
    ExportWarning,
    QuantizationError,
    TensorRTUnavailableError,
)
from modelfusion.runtime.executors import MemberExecutor, OnnxExecutor, TorchExecutor
from modelfusion.runtime.onnx_export import build_fused_onnx, export_fused_onnx
from modelfusion.runtime.profile import graph_breakdown
from modelfusion.runtime.quantize import quantize_bundle, quantize_onnx
from modelfusion.runtime.tensorrt import TensorRTConverter

__all__ = [
    "ENGINES",
    "ExecutionProviderError",
    "ExportError",
    "ExportWarning",
    "MemberExecutor",
    "OnnxExecutor",
    "QuantizationError",
    "TensorRTConverter",
    "TensorRTUnavailableError",
    "TorchExecutor",
    "build_fused_onnx",
    "export_fused_onnx",
    "graph_breakdown",
    "quantize_bundle",
    "quantize_onnx",
    "select_engine",
]
