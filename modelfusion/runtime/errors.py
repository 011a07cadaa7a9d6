"""Errors of the runtime layer: export, execution providers, quantization, TensorRT.

Each one is a :class:`~modelfusion.errors.ModelFusionError` and the built-in type a caller
would expect, so the CLI turns it into one red line and exit code 2.
"""

from __future__ import annotations

from modelfusion.errors import ModelFusionError


class ExportError(ModelFusionError, ValueError):
    """A fused model (or one of its members) cannot be written as one ONNX graph."""


class ExecutionProviderError(ModelFusionError, ValueError):
    """An ONNX Runtime execution provider was asked for but is not available here."""


class QuantizationError(ModelFusionError, ValueError):
    """A quantization request cannot be carried out (mode, precision or calibration data)."""


class TensorRTUnavailableError(ModelFusionError, ImportError):
    """TensorRT or a CUDA GPU is missing, so no TensorRT engine can be built here."""


class ExportWarning(UserWarning):
    """Export changed something on the way (e.g. converted a member's ONNX opset)."""
