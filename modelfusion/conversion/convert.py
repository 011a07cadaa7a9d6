"""``convert_model``: one model file to ONNX or PyTorch, written only if it computes what the source does.

Examples
--------
>>> result = convert_model("models/cnn.pt2", to="onnx")
>>> result.output, result.max_abs_diff <= 1e-4
(PosixPath('models/cnn.onnx'), True)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelfusion.conversion.parity import batched_diff, check_parity, onnx_outputs
from modelfusion.conversion.samples import parse_input_shape, sample_rows
from modelfusion.errors import InputError, ModelFusionError, ParameterError
from modelfusion.runtime.member_onnx import first_line

#: What ``to=`` accepts, and the file each target is written as.
TARGETS = {"onnx": ".onnx", "torch": ".pt2"}
_FRAMEWORK_OF_TARGET = {"onnx": "onnx", "torch": "torch"}


@dataclass(frozen=True)
class ConversionResult:
    """What :func:`convert_model` wrote and how close it is to the source model.

    Attributes
    ----------
    output : the file written (``.onnx`` or ``.pt2``)
    format : ``"onnx"`` or ``"torch"``
    max_abs_diff : the largest absolute difference between the converted model's outputs
        and the source model's own, over every sample (and a batch of one)
    samples : how many input rows were compared
    seconds : wall-clock time of the whole conversion
    source_framework : the framework the source was loaded as (``"keras"``, ``"torch"``, ...)
    tolerance : the largest difference that was accepted

    Examples
    --------
    >>> convert_model("logreg.skops", to="onnx").max_abs_diff
    5.96e-08
    """

    output: Path
    format: str
    max_abs_diff: float
    samples: int
    seconds: float
    source_framework: str
    tolerance: float


def convert_model(
    source: Any,
    to: str = "onnx",
    output: str | Path | None = None,
    *,
    input_shape: str | tuple[int, ...] | list[int] | None = None,
    check: Any = None,
    tolerance: float = 1e-4,
    opset: int | None = None,
    trust: bool = False,
    **member_options: Any,
) -> ConversionResult:
    """Convert a model to ONNX (``to="onnx"``) or to a PyTorch ``torch.export`` program (``to="torch"``).

    The model is loaded as :func:`~modelfusion.load_member` loads it (safely: no pickle, no
    TorchScript unless ``trust``), converted, and run side by side with the result on sample
    rows: ONNX graphs in a real ONNX Runtime session, PyTorch programs reloaded from the file
    written. The file is written (atomically) only when the largest absolute difference is
    at most ``tolerance``.

    Parameters
    ----------
    source : a model file or folder (``.keras``, ``.pt2``, TorchScript, a state dict with
        ``architecture=``, ``.skops``, ``.onnx``), or a model object or member
    to : ``"onnx"`` (from Keras, PyTorch, scikit-learn) or ``"torch"`` (from ONNX, through
        onnx2torch; other sources go through their ONNX graph first)
    output : the file to write; default: the source's path with ``.onnx`` or ``.pt2``. Its
        folder must exist.
    input_shape : the shape of one input batch, batch first (``"1,3,32,32"`` or a tuple); 16
        random rows of that shape (seeded) are compared. Default: the shape the model records.
    check : data to compare on instead: an array or anything :func:`~modelfusion.data.load_dataset`
        reads (``"builtin:digits"``, ``rows.npy``, ``table.csv``); at most 1024 rows.
    tolerance : the largest absolute difference accepted (default 1e-4)
    opset : the ONNX opset (default 17, or the ONNX source's own)
    trust : allow formats that run code from the file (pickles, TorchScript, Keras Lambda layers)
    **member_options : passed to :func:`~modelfusion.load_member` (``architecture=``,
        ``architecture_kwargs=``, ``framework=``, ...)

    Returns
    -------
    ConversionResult

    Raises
    ------
    ParameterError
        ``to`` is not onnx/torch, the source is already in that format, ``tolerance`` is not a
        positive number, ``input_shape`` is malformed, or the output's folder does not exist.
    MemberFileNotFoundError, MemberLoadError
        the model file is missing or of a format no adapter reads (the message lists them).
    InputError
        the input shape is unknown and neither ``input_shape`` nor ``check`` is given, or the
        model fails on the sample rows.
    ExportError
        the model cannot be converted, or its outputs differ by more than ``tolerance`` (the
        difference is in the message; nothing is written).

    Examples
    --------
    >>> convert_model("digits.keras", to="onnx", check="builtin:digits").output
    PosixPath('digits.onnx')
    >>> convert_model("cnn.onnx", to="torch", output="cnn.pt2", input_shape="1,1,8,8")
    """
    from modelfusion.members import load_member

    started = time.perf_counter()
    target_format = _check_target(to)
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise ParameterError(f"--tolerance must be a number >= 0, got {tolerance!r}")
    shape = parse_input_shape(input_shape)
    if output is not None:  # a wrong --output fails before a slow load, not after it
        output_path(source, target_format, output)
    member = load_member(source, trust=trust, **member_options)
    target = output_path(source, target_format, output)
    if member.framework == _FRAMEWORK_OF_TARGET[target_format]:
        other = "torch" if target_format == "onnx" else "onnx"
        raise ParameterError(
            f"'{_describe(source)}' is already a {member.framework} model; convert it with --to {other} (to={other!r})"
        )
    where = f"'{_describe(source)}'"
    rows = sample_rows(member, input_shape=shape, check=check, where=where)
    reference = _reference(member, rows, where)
    from modelfusion.conversion.to_onnx import DEFAULT_OPSET, member_onnx_model

    proto = member_onnx_model(member, rows, int(opset or member.onnx_opset() or DEFAULT_OPSET))
    if target_format == "onnx":
        diff = batched_diff(reference, lambda x: onnx_outputs(proto, x), rows, what=f"'{target}'")
        check_parity(diff, tolerance=tolerance, what=f"'{target}'", samples=len(rows))
        from modelfusion.files import write_bytes_atomic

        write_bytes_atomic(target, proto.SerializeToString())
    else:
        diff = _write_torch(proto, rows, reference, target, tolerance)
    return ConversionResult(
        output=target,
        format=target_format,
        max_abs_diff=diff,
        samples=len(rows),
        seconds=time.perf_counter() - started,
        source_framework=member.framework,
        tolerance=float(tolerance),
    )


def output_path(source: Any, to: str, output: str | Path | None) -> Path:
    """Where the conversion of ``source`` to ``to`` is written: ``output``, or the source's path with the
    target's suffix. ParameterError for a wrong suffix, a missing folder, or no path to derive one from.

    Examples
    --------
    >>> output_path("models/cnn.pt2", "onnx", None)
    PosixPath('models/cnn.onnx')
    """
    suffix = TARGETS[_check_target(to)]
    if output is None:
        if not isinstance(source, (str, Path)):
            raise ParameterError(
                f"converting a {type(source).__name__} object needs output= (a {suffix} file)"
            )
        path = Path(source).expanduser()
        target = path.parent / f"{path.name if path.is_dir() else path.stem}{suffix}"
    else:
        target = Path(output).expanduser()
    if target.suffix.lower() != suffix:
        raise ParameterError(
            f"--output '{target}' must end in {suffix}: {to} conversions are written as {suffix} files"
            + (" (torch.export programs, which load without running code)" if to == "torch" else "")
        )
    if not target.parent.is_dir():
        raise ParameterError(
            f"--output '{target}': the folder '{target.parent.resolve()}' does not exist; create it first"
        )
    return target


def _check_target(to: str) -> str:
    key = str(to).strip().lower()
    if key not in TARGETS:
        raise ParameterError(f"--to must be one of {', '.join(TARGETS)}, got {to!r}")
    return key


def _reference(member: Any, rows: np.ndarray, where: str) -> np.ndarray:
    """The source model's own outputs on ``rows``; InputError when it does not take them."""
    try:
        return np.asarray(member.predict(rows))
    except ModelFusionError:
        raise
    except Exception as exc:
        raise InputError(
            f"{where} fails on sample rows shaped {list(rows.shape)} ({type(exc).__name__}: "
            f"{first_line(exc)}); give --input-shape "
            "(batch first) or --check DATA with rows it takes"
        ) from exc


def _write_torch(
    proto: Any, rows: np.ndarray, reference: np.ndarray, target: Path, tolerance: float
) -> float:
    """Convert ``proto`` to a ``.pt2`` program at ``target``, checked after reloading it safely."""
    import torch

    from modelfusion.conversion.to_torch import export_program, onnx_to_torch
    from modelfusion.files import atomic_path
    from modelfusion.members import load_member

    program = export_program(onnx_to_torch(proto, rows), rows)
    with atomic_path(target, suffix=".pt2") as tmp:
        torch.export.save(program, tmp)
        reloaded = load_member(tmp, name=target.stem, trust=False)  # what a user loads: no trust needed
        diff = batched_diff(reference, reloaded.predict, rows, what=f"'{target}'")
        check_parity(diff, tolerance=tolerance, what=f"'{target}'", samples=len(rows))
    return diff


def _describe(source: Any) -> str:
    return str(source) if isinstance(source, (str, Path)) else type(source).__name__
