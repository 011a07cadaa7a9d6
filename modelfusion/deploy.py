"""Deployment, with the tutorial's names: one ONNX graph, int8/fp16, TensorRT (see :mod:`modelfusion.runtime`),
serving (:mod:`modelfusion.serving`) and format conversion (:mod:`modelfusion.conversion`).

Examples
--------
>>> from modelfusion.deploy import TensorRTConverter, export_fused_onnx, quantize_bundle
>>> export_fused_onnx(fused, "fused.onnx")
>>> quantize_bundle("runs/demo/results/bundle", mode="dynamic", data=(X_val, y_val))
>>> TensorRTConverter(model_path="fused.onnx", output_path="fused.engine", precision="fp16").convert()
>>> app = create_app("runs/demo/results/bundle", ServeSettings(max_batch=64))  # uvicorn.run(app)
>>> convert_model("model.keras", to="onnx").max_abs_diff
"""

from modelfusion.conversion import ConversionResult, convert_model
from modelfusion.runtime import (
    OnnxExecutor,
    TensorRTConverter,
    export_fused_onnx,
    graph_breakdown,
    quantize_bundle,
    quantize_onnx,
    select_engine,
)
from modelfusion.serving import ServeSettings, create_app

__all__ = [
    "ConversionResult",
    "OnnxExecutor",
    "ServeSettings",
    "TensorRTConverter",
    "convert_model",
    "create_app",
    "export_fused_onnx",
    "graph_breakdown",
    "quantize_bundle",
    "quantize_onnx",
    "select_engine",
]
