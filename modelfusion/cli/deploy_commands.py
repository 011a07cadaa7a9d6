"""``modelfusion export`` and ``quantize``: the fused bundle as one ONNX graph, int8/fp16, TensorRT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from modelfusion.cli.console import TRUST_HELP, console, handle_errors, log, warn
from modelfusion.columns import MISSING, format_value
from modelfusion.errors import ParameterError

FORMATS = ("onnx", "tensorrt")


def recover(bundle: Path) -> None:
    """Put right what a killed command left in and beside ``bundle`` before this one reads it."""
    from modelfusion.recovery import bundle_lock, recover_bundle

    with bundle_lock(bundle):
        for action in recover_bundle(bundle):
            warn(action)


@handle_errors
def export(
    bundle: Path = typer.Argument(..., help="A fused bundle folder (from `modelfusion run`)."),
    format: str = typer.Option("onnx", "--format", "-f", help="onnx (one graph) or tensorrt (an engine)."),
    output: Path = typer.Option(
        None, "--output", "-o", help="Where to write (default: BUNDLE/fused.onnx, recorded in the manifest)."
    ),
    opset: int = typer.Option(None, "--opset", help="ONNX opset (default 17, or the members' highest)."),
    data: str = typer.Option(
        None, "--data", "-d", help="Rows of this data give the input shape when the members do not record it."
    ),
    precision: str = typer.Option("fp16", "--precision", help="TensorRT only: fp16, fp32 or int8."),
    trust: bool = typer.Option(False, "--trust", help=TRUST_HELP),
) -> None:
    """Write the whole ensemble (members + fusion rule) as ONE ONNX graph with a dynamic batch axis."""
    if format not in FORMATS:
        raise ParameterError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if format == "tensorrt":
        from modelfusion.runtime.tensorrt import TensorRTConverter

        target = output or bundle / "fused.engine"
        TensorRTConverter(model_path=bundle, output_path=target, precision=precision, trust=trust).convert()
        console.print(
            f"wrote {target} ({format_value('file_size', target.stat().st_size)}, TensorRT {precision})"
        )
        return
    from modelfusion.bundle import record_bundle_graph
    from modelfusion.fused import FusedModel
    from modelfusion.runtime.onnx_export import build_fused_onnx

    recover(bundle)
    model = FusedModel.load(bundle, trust=trust)
    example = None
    if data is not None:
        from modelfusion.data import load_dataset

        example = load_dataset(data, base_dir=Path.cwd()).X[:8]
    log(f"exporting {len(model.members)} members and the {type(model.strategy).__name__} rule to ONNX")
    proto = build_fused_onnx(model, opset=opset, example_input=example)
    payload = proto.SerializeToString()
    if output is None:
        target = record_bundle_graph(bundle, payload, proto)
    else:
        from modelfusion.files import atomic_path

        target = output
        with atomic_path(target) as tmp:
            Path(tmp).write_bytes(payload)
    props = {p.key: p.value for p in proto.metadata_props}
    table = Table(title=f"{bundle.name} as one ONNX graph", box=box.SIMPLE_HEAD, show_header=False)
    table.add_column("property", style="bold")
    table.add_column("value")
    table.add_row("size", format_value("file_size", len(payload)))
    table.add_row("opset", str(next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))))
    table.add_row("input", escape(f"input [batch, {props['modelfusion.input_shape'].strip('[]')}]"))
    table.add_row("output", escape("scores [batch, outputs]"))
    table.add_row("members", ", ".join(model.names))
    table.add_row("rule", type(model.strategy).__name__)
    console.print(table)
    console.print(f"wrote {target}", soft_wrap=True, highlight=False)


@handle_errors
def quantize(
    bundle: Path = typer.Argument(..., help="A fused bundle folder."),
    mode: str = typer.Option(..., "--mode", "-m", help="dynamic (no data needed) or static (calibrated)."),
    precision: str = typer.Option("int8", "--precision", "-p", help="int8 or fp16."),
    data: str = typer.Option(
        ..., "--data", "-d", help="Labelled data: calibration (static) and accuracy before/after."
    ),
    split: str = typer.Option(
        "validation", "--split", help="Part of the run's split to use: validation, test, train, or all."
    ),
    label: str = typer.Option(None, "--label", help="Label column/key in the data."),
    seed: int = typer.Option(None, "--seed", help="Override the split seed recorded in the bundle."),
    trust: bool = typer.Option(False, "--trust", help=TRUST_HELP),
) -> None:
    """Quantize the fused graph (int8 or fp16) into the bundle and measure the accuracy it costs."""
    from modelfusion.bundle import read_manifest
    from modelfusion.cli.bundle_commands import _load_data
    from modelfusion.runtime.quantize import check_request, quantize_bundle

    check_request(mode, precision, has_calibration=True)
    recover(bundle)
    manifest, _ = read_manifest(bundle)
    ds = _load_data(data, label, None if split == "all" else split, seed, manifest.get("metadata") or {})
    log(f"quantizing {bundle} ({mode}, {precision}) and measuring on {len(ds)} samples")
    record = quantize_bundle(bundle, mode=mode, precision=precision, data=ds, trust=trust)
    console.print(
        quantization_table(record, f"{bundle.name}: {precision} ({mode}) on {split} ({len(ds)} samples)")
    )
    console.print(member_bytes_table(bundle / "fused.onnx", bundle / record["file"], _label(record)))
    ratio = record["size_bytes_fp32"] / max(record["size_bytes"], 1)
    change = record.get("delta_pp")
    console.print(
        f"{record['file']}: {ratio:.2f}x smaller"
        + ("" if change is None else f", accuracy {change:+.2f} pp")
        + "; recorded in the manifest",
        soft_wrap=True,
        highlight=False,
    )


def quantization_table(record: dict[str, Any], title: str) -> Table:
    """fp32 vs quantized: file size, accuracy and NLL (RMSE for regression)."""
    table = Table(title=title, box=box.SIMPLE_HEAD)
    regression = "rmse_fp32" in record
    for col in ("graph", "file", "size", *(("RMSE",) if regression else ("accuracy", "NLL"))):
        table.add_column(col, justify="left" if col in ("graph", "file") else "right")
    for tag, file, size, suffix in (
        ("fp32", "fused.onnx", record["size_bytes_fp32"], "fp32"),
        (_label(record), record["file"], record["size_bytes"], "quantized"),
    ):
        metrics = (
            [format_value("rmse", record.get(f"rmse_{suffix}"))]
            if regression
            else [
                format_value("accuracy", record.get(f"accuracy_{suffix}")),
                format_value("nll", record.get(f"nll_{suffix}")),
            ]
        )
        table.add_row(tag, file, format_value("file_size", size), *metrics)
    return table


def member_bytes_table(fp32: Path, quantized: Path, label: str) -> Table:
    """Each member's bytes in the fp32 graph and in the quantized one: which members the cast shrank."""
    from modelfusion.runtime.profile import graph_breakdown

    after = {r["member"]: r["bytes"] for r in graph_breakdown(quantized)}
    table = Table(title="where the bytes go", box=box.SIMPLE_HEAD)
    for col in ("member", "fp32", label, "smaller"):
        table.add_column(col, justify="left" if col == "member" else "right")
    for row in graph_breakdown(fp32):
        now = after.get(row["member"], 0)
        table.add_row(
            escape(row["member"]),
            format_value("file_size", row["bytes"]),
            format_value("file_size", now),
            MISSING if not now else format_value("size_ratio", row["bytes"] / now),
        )
    return table


def _label(record: dict[str, Any]) -> str:
    """'int8 dynamic', 'int8 static' or 'fp16' (a cast has no mode)."""
    return record["precision"] if record["precision"] == "fp16" else f"{record['precision']} {record['mode']}"


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command()(export)
    app.command()(quantize)
