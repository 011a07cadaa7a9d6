"""``modelfusion evaluate`` and ``predict`` on a saved fused bundle."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import typer

from modelfusion.cli.console import EXPECT_HELP, TRUST_HELP, console, handle_errors, log, warn
from modelfusion.cli.tables import metrics_table
from modelfusion.errors import DataError, ParameterError

TEXT_HELP = "The text column of a table, for text members (default: what the run used on its own data)."


def _load_data(
    source: str,
    label: str | None,
    split: str | None,
    seed: int | None,
    metadata: dict,
    text_column: str | None = None,
):
    """The data to score; with ``split``, that part of the split the run used (from the bundle).

    ``split="all"`` (or None) scores every row.
    """
    from modelfusion.data import load_dataset, split_dataset

    options = _recorded_options(source, metadata)
    if text_column is not None:
        options["text_column"] = text_column
    ds = load_dataset(source, label=label, base_dir=Path.cwd(), **options)
    if not split or split == "all":
        return ds
    used = (metadata.get("data") or {}).get("split") or {}
    fractions = {"validation": used.get("validation", 0.25), "test": used.get("test", 0.25)}
    seed = used.get("seed", 0) if seed is None else seed
    parts = split_dataset(ds, **fractions, seed=seed, stratify=used.get("stratify", True))
    if split not in parts:
        raise ParameterError(f"--split must be one of {', '.join(parts)}, got {split!r}")
    return parts[split]


def _recorded_options(source: str, metadata: dict) -> dict:
    """The run's data options (``text_column``, ...) when ``source`` is the data the run used."""
    return dict((metadata.get("data") or {}).get("options") or {}) if _is_run_data(source, metadata) else {}


def _is_run_data(source: str, metadata: dict) -> bool:
    """Whether ``source`` (as given on the command line) is the data the run split and fitted on."""
    from modelfusion.data.datasets import source_id

    return (metadata.get("data") or {}).get("source_id") == source_id(source, Path.cwd())


def _default_split(data: str, split: str | None, metadata: dict) -> str:
    """``--split`` when given; else ``test`` for the run's own data (never in-sample), else ``all`` with a warning."""
    if split is not None:
        return split
    if _is_run_data(data, metadata):
        log("scoring the run's test split (the rows it never fitted on); pass --split all for every row")
        return "test"
    warn(
        f"--data {data} is not the data the run was fitted on, so all of it is scored; if it includes the "
        "validation rows the fusion was fitted on, the numbers are in-sample"
    )
    return "all"


def _inputs(model, ds, source: str):
    """The dataset's inputs checked against the bundle's record: columns reordered by name, or a clear error."""
    from modelfusion.inputs import align_inputs

    return align_inputs(
        ds.X, model.metadata.get("inputs"), feature_names=getattr(ds, "feature_names", None), source=source
    )


@handle_errors
def evaluate(
    bundle: Path = typer.Argument(..., help="A fused bundle folder (from `modelfusion run`)."),
    data: str = typer.Option(..., "--data", "-d", help="builtin:NAME, a file or folder with labels."),
    label: str = typer.Option(None, "--label", help="Label column/key in the data."),
    split: str = typer.Option(
        None,
        "--split",
        help="Part of the run's split: train, validation, test or all (default: test for the run's own data).",
    ),
    seed: int = typer.Option(None, "--seed", help="Override the split seed recorded in the bundle."),
    text_column: str = typer.Option(None, "--text-column", help=TEXT_HELP),
    trust: bool = typer.Option(False, "--trust", help=TRUST_HELP),
    expect_sha256: str = typer.Option(None, "--expect-sha256", help=EXPECT_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print metrics as JSON."),
) -> None:
    """Score a saved fused model on labelled data: accuracy, NLL, ECE, ... (regression: RMSE, MAE, R²)."""
    from modelfusion.evaluation import evaluate as evaluate_scores
    from modelfusion.fused import FusedModel
    from modelfusion.predictions import PredictionSet

    model = FusedModel.load(bundle, trust=trust, expected_digest=expect_sha256)
    ds = _load_data(
        data, label, _default_split(data, split, model.metadata), seed, model.metadata, text_column
    )
    if ds.y is None:
        raise DataError(f"--data {data}: no labels found; evaluate needs labelled data (see --label)")
    log(f"evaluating {bundle} on {len(ds)} samples")
    scores = model.predict_scores(_inputs(model, ds, f"--data {data}"))
    encoder = PredictionSet(
        scores[None],
        names=["fused"],
        classes=model.classes,
        task=model.task,
        kind="values" if model.task == "regression" else "proba",
    )
    metrics = evaluate_scores(encoder.encode_labels(ds.y), scores, model.task)
    if as_json:
        console.print_json(json.dumps(metrics))
    else:
        console.print(metrics_table(metrics, f"{bundle.name} on {data} ({len(ds)} samples)"))


@handle_errors
def predict(
    bundle: Path = typer.Argument(..., help="A fused bundle folder."),
    input: str = typer.Argument(
        ..., help="Inputs: builtin:NAME, .npy/.npz/.csv/.parquet file or image folder."
    ),
    output: Path = typer.Option(
        None, "--output", "-o", help="Write predictions (CSV) here instead of printing."
    ),
    proba: bool = typer.Option(False, "--proba", help="Also write the fused probabilities."),
    id_column: str = typer.Option(
        None, "--id", help="A column of a CSV/Parquet input to copy into the output."
    ),
    text_column: str = typer.Option(None, "--text-column", help=TEXT_HELP),
    trust: bool = typer.Option(False, "--trust", help=TRUST_HELP),
    expect_sha256: str = typer.Option(None, "--expect-sha256", help=EXPECT_HELP),
) -> None:
    """Predict with a saved fused model; writes a CSV (atomically) or prints the first rows."""
    from modelfusion.data import load_dataset
    from modelfusion.files import atomic_path
    from modelfusion.fused import FusedModel

    if output is not None and output.is_dir():
        raise ParameterError(
            f"--output {output} is a folder; give a file path such as {output / 'predictions.csv'}"
        )
    model = FusedModel.load(bundle, trust=trust, expected_digest=expect_sha256)
    options = _recorded_options(input, model.metadata)
    if text_column is not None:
        options["text_column"] = text_column
    if id_column is not None:
        if Path(input).suffix.lower() not in (".csv", ".tsv", ".parquet"):
            raise ParameterError(f"--id {id_column} needs a CSV, TSV or Parquet input; {input} is not one")
        options["keep_columns"] = [id_column]
    ds = load_dataset(input, base_dir=Path.cwd(), labelled=False, **options)  # predicting needs no labels
    scores = model.predict_scores(_inputs(model, ds, input))
    if model.task == "regression":
        labels = scores
    elif model.task == "multilabel":
        labels = (scores >= 0.5).astype(int)
    else:
        idx = scores.argmax(axis=1)
        labels = (idx if model.classes is None else np.asarray(model.classes)[idx])[:, None]
    n_cols = labels.shape[1]
    header = ["prediction"] if n_cols == 1 else [f"prediction_{i}" for i in range(n_cols)]
    columns = [np.asarray(labels).astype(str)]
    if proba and model.task != "regression":
        names = model.classes if model.classes is not None else range(scores.shape[1])
        header += [f"p_{c}" for c in names]
        columns.append(np.char.mod("%.6g", scores))
    if id_column is not None:
        header.insert(0, id_column)
        columns.insert(0, np.asarray(ds.meta[f"column:{id_column}"]).astype(str)[:, None])
    table = np.concatenate(columns, axis=1)
    if output is None:
        for row in [header, *table[:20].tolist()]:
            console.print(",".join(row), highlight=False)
        if len(table) > 20:
            console.print(f"... {len(table) - 20} more rows (use --output to save all)")
        return
    with atomic_path(output) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)  # quotes class names that contain commas
        writer.writerow(header)
        writer.writerows(table.tolist())
    console.print(f"wrote {len(table)} predictions to {output}")


@handle_errors
def info(
    bundle: Path = typer.Argument(..., help="A fused bundle folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """What a bundle holds (members, classes, strategy, inputs, versions, graphs) and whether its files verify.

    Reads the manifest and checks every checksum; loads no member, so nothing in the bundle runs.
    """
    from rich.markup import escape
    from rich.table import Table

    from modelfusion.bundle import bundle_summary

    s = bundle_summary(bundle)
    if as_json:
        console.print_json(json.dumps(s, default=str))
        return
    inputs = s["inputs"] or {}
    names = inputs.get("feature_names") or []
    lines = [
        f"{bundle}  (bundle format {s['format_version']}, created {s['created']})",
        f"manifest sha256 {s['sha256']}; files: {s['verification']}",
        f"task {s['task']}, {len(s['classes'] or [])} classes; strategy {s['strategy']} (chosen: {s['chosen'] or '-'})",
    ]
    if inputs:
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        lines.append(
            f"inputs: [n, {', '.join(map(str, inputs.get('shape') or []))}]"
            + (f" ({shown})" if names else "")
        )
    for line in lines:
        console.print(escape(line), highlight=False)
    table = Table(title="members")
    for col in ("name", "framework", "output", "classes", "file", "bytes"):
        table.add_column(col)
    for m in s["members"]:
        table.add_row(
            *(
                escape(str(v))
                for v in (m["name"], m["framework"], m["output_kind"], m["n_classes"], m["file"])
            ),
            f"{m['bytes']:,}",
        )
    console.print(table)
    if s["graphs"]:
        console.print(
            escape("graphs: " + ", ".join(f"{g} ({state})" for g, state in s["graphs"].items())),
            highlight=False,
        )
    console.print(
        escape("versions: " + ", ".join(f"{k} {v}" for k, v in s["versions"].items())), highlight=False
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command()(evaluate)
    app.command()(predict)
    app.command()(info)
