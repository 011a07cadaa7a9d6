"""``modelfusion evaluate`` and ``predict`` on a saved fused bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer

from modelfusion.cli.app import app, console, handle_errors, log
from modelfusion.cli.tables import metrics_table


def _load_data(source: str, label: str | None, split: str | None, seed: int):
    from modelfusion.data import load_dataset, split_dataset

    ds = load_dataset(source, label=label, base_dir=Path.cwd())
    if split:
        return split_dataset(ds, validation=0.25, test=0.25, seed=seed)[split]
    return ds


@app.command()
@handle_errors
def evaluate(
    bundle: Path = typer.Argument(..., help="A fused bundle folder (from `modelfusion run`)."),
    data: str = typer.Option(..., "--data", "-d", help="builtin:NAME, a file or folder with labels."),
    label: str = typer.Option(None, "--label", help="Label column/key in the data."),
    split: str = typer.Option(
        None, "--split", help="Evaluate on one part of a split: train, validation or test."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of that split (use the run's seed)."),
    as_json: bool = typer.Option(False, "--json", help="Print metrics as JSON."),
) -> None:
    """Score a saved fused model on labelled data: accuracy, NLL, ECE, ... (regression: RMSE, MAE, R²)."""
    from modelfusion.evaluation import evaluate as evaluate_scores
    from modelfusion.fused import FusedModel
    from modelfusion.predictions import PredictionSet

    model = FusedModel.load(bundle)
    ds = _load_data(data, label, split, seed)
    if ds.y is None:
        raise ValueError(f"--data {data}: no labels found; evaluate needs labelled data (see --label)")
    log(f"evaluating {bundle} on {len(ds)} samples")
    scores = model.predict_scores(ds.X)
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


@app.command()
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
) -> None:
    """Predict with a saved fused model; writes a CSV (atomically) or prints the first rows."""
    from modelfusion.data import load_dataset
    from modelfusion.fused import FusedModel
    from modelfusion.predictions import atomic_path

    model = FusedModel.load(bundle)
    ds = load_dataset(input, base_dir=Path.cwd())
    scores = model.predict_scores(ds.X)
    if model.task == "regression":
        labels = scores[:, 0] if scores.shape[1] == 1 else scores
    elif model.task == "multilabel":
        labels = (scores >= 0.5).astype(int)
    else:
        idx = scores.argmax(axis=1)
        labels = idx if model.classes is None else np.asarray(model.classes)[idx]
    header = ["prediction"]
    rows = [[str(v) if np.ndim(v) == 0 else " ".join(map(str, v))] for v in labels]
    if proba and model.task != "regression":
        names = [str(c) for c in (model.classes if model.classes is not None else range(scores.shape[1]))]
        header += [f"p_{c}" for c in names]
        rows = [r + [f"{p:.6g}" for p in s] for r, s in zip(rows, scores)]
    text = "\n".join([",".join(header), *(",".join(r) for r in rows)]) + "\n"
    if output is None:
        for line in text.splitlines()[:21]:
            console.print(line, highlight=False)
        if len(rows) > 20:
            console.print(f"... {len(rows) - 20} more rows (use --output to save all)")
    else:
        with atomic_path(output) as tmp:
            Path(tmp).write_text(text)
        console.print(f"wrote {len(rows)} predictions to {output}")
