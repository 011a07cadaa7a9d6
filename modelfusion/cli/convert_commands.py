"""``modelfusion convert``: one model to ONNX or PyTorch, written only if it computes what the source does."""

from __future__ import annotations

from pathlib import Path

import typer

from modelfusion.cli.console import console, handle_errors, log


@handle_errors
def convert(
    model: Path = typer.Argument(
        ..., help="The model file: .keras, .pt2 / TorchScript / state dict, .skops, or .onnx."
    ),
    to: str = typer.Option(
        ..., "--to", "-t", help="onnx (from Keras, PyTorch, scikit-learn) or torch (from ONNX)."
    ),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="Where to write (default: MODEL with .onnx or .pt2); its folder must exist.",
    ),
    input_shape: str = typer.Option(
        None,
        "--input-shape",
        help="Shape of one input batch, batch first: 1,3,32,32 (default: the model's own).",
    ),
    check: str = typer.Option(
        None, "--check", help="Compare on the rows of this data (builtin:digits, rows.npy, table.csv)."
    ),
    opset: int = typer.Option(None, "--opset", help="ONNX opset (default 17, or the ONNX model's own)."),
    tolerance: float = typer.Option(
        1e-4, "--tolerance", help="Largest absolute difference from the source model's outputs accepted."
    ),
    architecture: str = typer.Option(
        None,
        "--architecture",
        help="For a PyTorch state dict: resnet18, or an import path package.module:factory.",
    ),
    trust: bool = typer.Option(
        False,
        "--trust",
        help="Allow formats that run code from the file: pickles, TorchScript, Keras Lambda layers.",
    ),
) -> None:
    """Convert a model to ONNX or PyTorch, check it against the source on sample rows, and write it."""
    from modelfusion.columns import format_value
    from modelfusion.conversion import convert_model

    log(f"converting {model} to {to}")
    options = {} if architecture is None else {"architecture": architecture}
    result = convert_model(
        model,
        to=to,
        output=output,
        input_shape=input_shape,
        check=check,
        tolerance=tolerance,
        opset=opset,
        trust=trust,
        **options,
    )
    console.print(
        f"{model} ({result.source_framework}) -> {result.output} ({result.format}): max abs difference "
        f"{result.max_abs_diff:.2e} over {result.samples} samples (tolerance {result.tolerance:g}); wrote "
        f"{format_value('file_size', result.output.stat().st_size)} in {result.seconds:.1f} s",
        soft_wrap=True,
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command()(convert)
