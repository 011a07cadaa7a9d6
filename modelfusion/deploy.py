"""Deployment, with the tutorial's names: one ONNX graph, int8/fp16, TensorRT (see :mod:`modelfusion.runtime`).

Examples
--------
>>> from modelfusion.deploy import TensorRTConverter, export_fused_onnx, quantize_bundle
>>> export_fused_onnx(fused, "fused.onnx")
>>> quantize_bundle("runs/demo/results/bundle", mode="dynamic", data=(X_val, y_val))
>>> TensorRTConverter(model_path="fused.onnx", output_path="fused.engine", precision="fp16").convert()
"""

from modelfusion.runtime import (
    OnnxExecutor,
    TensorRTConverter,
    export_fused_onnx,
    graph_breakdown,
    quantize_bundle,
    quantize_onnx,
    select_engine,
)

__all__ = [
    "OnnxExecutor",
    "TensorRTConverter",
    "export_fused_onnx",
    "graph_breakdown",
    "quantize_bundle",
    "quantize_onnx",
    "select_engine",
]
