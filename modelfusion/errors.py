"""Every exception and warning modelfusion raises on purpose, in one place.

Each error subclasses both :class:`ModelFusionError` (catch everything of ours) and the
built-in type a caller would expect (``ValueError``, ``FileNotFoundError``, ...), so
``except ValueError`` keeps working. Messages name the member, file or field at fault.
The CLI turns a ``ModelFusionError`` (or an ``OSError``) into one red line and exit code 2;
anything else is a bug of ours and keeps its traceback.

Examples
--------
>>> try:
...     load_member("missing.onnx")
... except ModelFusionError as exc:
...     print(exc)
model file '.../missing.onnx' does not exist.
"""

from __future__ import annotations


class ModelFusionError(Exception):
    """Base class of every error modelfusion raises on purpose."""


# -- arguments and inputs ---------------------------------------------------------------------


class ParameterError(ModelFusionError, ValueError):
    """An argument or option has a value outside the ones it accepts (``k=0``, an unknown engine)."""


class ArgumentTypeError(ModelFusionError, TypeError):
    """An argument is of a type the function does not take."""


class InputError(ModelFusionError, ValueError):
    """Data does not fit what a member, model or metric expects: shape, width, labels, dtype."""


class UnknownNameError(ModelFusionError, KeyError):
    """A member, strategy or output was asked for by a name that does not exist."""

    def __str__(self) -> str:  # KeyError quotes its message; ours is a sentence
        return str(self.args[0]) if self.args else ""


class MissingDependencyError(ModelFusionError, ImportError):
    """An optional dependency is not installed; the message says which extra to install."""


# -- members ------------------------------------------------------------------------------------


class MemberLoadError(ModelFusionError, ValueError):
    """A model file or object could not be turned into a member."""


class UnsafeFormatError(MemberLoadError):
    """Loading would execute untrusted code (pickle); pass ``trust=True`` to allow it."""


class MemberFileNotFoundError(ModelFusionError, FileNotFoundError):
    """A member's file does not exist."""


class MemberSaveError(ModelFusionError, ValueError):
    """A member cannot be written to a bundle in a form that loads again."""


class PredictionError(ModelFusionError, ValueError):
    """Member outputs are inconsistent: shapes, classes, NaN/inf."""


# -- data ---------------------------------------------------------------------------------------


class DataError(ModelFusionError, ValueError):
    """A dataset is malformed, ambiguous or in a format that cannot be read."""


class DataFileNotFoundError(ModelFusionError, FileNotFoundError):
    """A data file or folder does not exist."""


# -- fusion, configuration and bundles ----------------------------------------------------------


class StrategyError(ModelFusionError, ValueError):
    """A strategy got parameters or predictions it cannot work with."""


class BundleError(ModelFusionError, ValueError):
    """A saved fused bundle is incomplete, corrupt or fails its checksums."""


class ConfigError(ModelFusionError, ValueError):
    """A configuration file is invalid; ``problems`` lists every issue with its YAML path."""

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = list(problems or [])
        super().__init__(message)


# -- feature-level fusion -----------------------------------------------------------------------


class FeatureWidthError(ModelFusionError, ValueError):
    """An encoder's features do not have the width the fusion model expects."""


class NumClassesError(ModelFusionError, AttributeError, ValueError):
    """A MultimodalFusion model was asked for its classifier without knowing its number of classes.

    An AttributeError too, so ``hasattr(model, "classifier")`` stays False instead of raising.
    """


# -- training ------------------------------------------------------------------------------------


class TrainingError(ModelFusionError, RuntimeError):
    """Training cannot go on: a NaN or infinite loss, or a model that cannot train on the data."""


class CheckpointError(ModelFusionError, ValueError):
    """A checkpoint is unreadable, or was written by a run with a different configuration."""


# -- runtime: export, execution providers, quantization, TensorRT -------------------------------


class ExportError(ModelFusionError, ValueError):
    """A fused model (or one of its members) cannot be written as one ONNX graph."""


class ExecutionProviderError(ModelFusionError, ValueError):
    """An ONNX Runtime execution provider was asked for but is not available here."""


class QuantizationError(ModelFusionError, ValueError):
    """A quantization request cannot be carried out (mode, precision or calibration data)."""


class TensorRTUnavailableError(ModelFusionError, ImportError):
    """TensorRT or a CUDA GPU is missing, so no TensorRT engine can be built here."""


# -- warnings -----------------------------------------------------------------------------------


class ModelFusionWarning(UserWarning):
    """Something the user should know that does not stop the work (the CLI prints it as a warning line)."""


class UnseenClassWarning(ModelFusionWarning):
    """A strategy is fitted on labels that lack some of the members' classes."""


class ExportWarning(UserWarning):
    """Export changed something on the way (e.g. converted a member's ONNX opset)."""
