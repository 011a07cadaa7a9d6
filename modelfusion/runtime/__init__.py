"""Fast fused inference: one ONNX graph for the whole ensemble, engines to run it, int8/fp16, TensorRT.

Examples
--------
>>> from modelfusion.runtime import export_fused_onnx, select_engine, quantize_onnx
>>> export_fused_onnx(fused, "fused.onnx")                      # members + rule in one graph
>>> select_engine(fused).run(X_test)                             # ONNX Runtime, torch or members
>>> quantize_onnx("fused.onnx", "fused.int8.onnx", mode="dynamic")
>>> graph_breakdown("fused.int8.onnx", X_test[:256])                # bytes and time per member
"""

from modelfusion.lazy import lazy_attributes

#: Public names and the module each lives in, imported on first use (PEP 562): importing one
#: runtime module (the engine, for ``FusedModel.predict``) does not import quantization or TensorRT.
_LAZY = {
    "ENGINES": "modelfusion.runtime.engine",
    "select_engine": "modelfusion.runtime.engine",
    "ExecutionProviderError": "modelfusion.errors",
    "ExportError": "modelfusion.errors",
    "ExportWarning": "modelfusion.errors",
    "QuantizationError": "modelfusion.errors",
    "TensorRTUnavailableError": "modelfusion.errors",
    "MemberExecutor": "modelfusion.runtime.executors",
    "OnnxExecutor": "modelfusion.runtime.executors",
    "TorchExecutor": "modelfusion.runtime.executors",
    "Executor": "modelfusion.runtime.executors",
    "build_fused_onnx": "modelfusion.runtime.onnx_export",
    "export_fused_onnx": "modelfusion.runtime.onnx_export",
    "graph_breakdown": "modelfusion.runtime.profile",
    "quantize_bundle": "modelfusion.runtime.quantize",
    "quantize_onnx": "modelfusion.runtime.quantize",
    "TensorRTConverter": "modelfusion.runtime.tensorrt",
}
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())

__all__ = [
    "ENGINES",
    "ExecutionProviderError",
    "Executor",
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
