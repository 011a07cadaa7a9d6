"""Errors of the runtime layer (export, execution providers, quantization, TensorRT), defined in :mod:`modelfusion.errors`."""

from __future__ import annotations

from modelfusion.errors import (
    ExecutionProviderError,
    ExportError,
    ExportWarning,
    QuantizationError,
    TensorRTUnavailableError,
)

__all__ = [
    "ExecutionProviderError",
    "ExportError",
    "ExportWarning",
    "QuantizationError",
    "TensorRTUnavailableError",
]
