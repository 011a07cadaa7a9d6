"""Exceptions raised by modelfusion.

Every error subclasses both :class:`ModelFusionError` (catch everything of ours) and the
built-in type a caller would expect (``ValueError``, ``FileNotFoundError``, ...), so
``except ValueError`` keeps working. Messages name the member, file or field at fault.
"""

from __future__ import annotations


class ModelFusionError(Exception):
    """Base class of every error modelfusion raises on purpose."""


class MemberLoadError(ModelFusionError, ValueError):
    """A model file or object could not be turned into a member."""


class UnsafeFormatError(MemberLoadError):
    """Loading would execute untrusted code (pickle); pass ``trust=True`` to allow it."""


class MemberFileNotFoundError(ModelFusionError, FileNotFoundError):
    """A member's file does not exist."""


class PredictionError(ModelFusionError, ValueError):
    """Member outputs are inconsistent: shapes, classes, NaN/inf."""


class StrategyError(ModelFusionError, ValueError):
    """A strategy got parameters or predictions it cannot work with."""


class BundleError(ModelFusionError, ValueError):
    """A saved fused bundle is incomplete, corrupt or fails its checksums."""


class ConfigError(ModelFusionError, ValueError):
    """A configuration file is invalid; ``problems`` lists every issue with its YAML path."""

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = list(problems or [])
        super().__init__(message)


class ModelFusionWarning(UserWarning):
    """Something the user should know that does not stop the work (the CLI prints it as a warning line)."""


class UnseenClassWarning(ModelFusionWarning):
    """A strategy is fitted on labels that lack some of the members' classes."""
