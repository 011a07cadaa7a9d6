"""Model conversion: a Keras, PyTorch or scikit-learn model to ONNX, an ONNX graph to PyTorch, parity-checked.

Examples
--------
>>> from modelfusion.conversion import convert_model
>>> convert_model("models/logreg.skops", to="onnx").max_abs_diff <= 1e-4
True
>>> convert_model("models/cnn.onnx", to="torch", output="models/cnn.pt2")
"""

from modelfusion.conversion.convert import TARGETS, ConversionResult, convert_model, output_path
from modelfusion.conversion.parity import batched_diff, check_parity, max_abs_diff, onnx_outputs
from modelfusion.conversion.samples import parse_input_shape, sample_rows
from modelfusion.conversion.to_onnx import DEFAULT_OPSET, member_onnx_model

__all__ = [
    "DEFAULT_OPSET",
    "TARGETS",
    "ConversionResult",
    "batched_diff",
    "check_parity",
    "convert_model",
    "max_abs_diff",
    "member_onnx_model",
    "onnx_outputs",
    "output_path",
    "parse_input_shape",
    "sample_rows",
]
