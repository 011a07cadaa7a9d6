"""``modelfusion train`` end to end: the built-in digit-instruction task and a manifest, every
candidate in metrics.json and the report, the best model reloadable; config errors before training."""

from __future__ import annotations

import json

import numpy as np
import torch
import yaml
from typer.testing import CliRunner

from modelfusion.cli.app import _register, app
from modelfusion.multimodal import MultimodalFusion, MultimodalGraph
from modelfusion.multimodal.saving import GRAPHS

_register()
runner = CliRunner()

IMAGE = {
    "type": "module",
    "architecture": "modelfusion.examples.digit_instructions:digit_cnn",
    "input_shape": [1, 8, 8],
}


def invoke(*args):
    return runner.invoke(app, ["--quiet", *map(str, args)], catch_exceptions=False)


def write_config(folder, **changes):
    config = {
        "name": "instructions",
        "seed": 0,
        "output_dir": "out",
        "data": {"source": "builtin:digit_instructions", "per_image": 1},
        "model": {
            "encoders": {"image": IMAGE, "text": {"type": "words", "vocabulary": "auto", "width": 16}},
            "fusion": ["concat", "gated", "late"],
            "dim": 32,
            "head": {"hidden": [32]},
        },
        "training": {"epochs": 2, "batch_size": 128},
    }
    for key, value in changes.items():
        config[key] = value
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_train_compares_every_operator_and_each_modality_and_saves_the_best(tmp_path):
    result = invoke("train", write_config(tmp_path))
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert [r["model"] for r in metrics["rows"]] == ["image only", "text only", "concat", "gated", "late"]
    assert all(
        0 <= r["accuracy"] <= 1 and r["parameters"] > 0 and r["latency_ms"] > 0 for r in metrics["rows"]
    )
    assert metrics["best"] in ("concat", "gated")
    report = (tmp_path / "out" / "report.html").read_text()
    assert "image only" in report and "data:image/png;base64" in report
    assert "gated" in result.output and "accuracy" in result.output  # the CLI table
    model = MultimodalFusion.load(tmp_path / "out" / "model")
    batch = {"image": torch.rand(3, 1, 8, 8), "text": ["add two", "minus one", "add nine"]}
    with torch.no_grad():
        eager = model(batch).numpy()
    graph = MultimodalGraph(tmp_path / "out" / "model" / GRAPHS["fp32"], model)
    assert np.abs(graph.logits(batch) - eager).max() <= 1e-4
    best = next(r for r in metrics["rows"] if r["model"] == metrics["best"])
    assert best["modalities"] == ["image", "text"]


def test_train_reads_a_manifest(tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    (tmp_path / "img").mkdir()
    lines = ["photo,caption,label"]
    for i in range(40):
        Image.fromarray((digits.images[i] * 15).astype(np.uint8)).save(tmp_path / "img" / f"{i}.png")
        lines.append(f"img/{i}.png,digit {digits.target[i]},{digits.target[i] % 2}")
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n")
    config = write_config(
        tmp_path,
        data={"source": "pairs.csv", "columns": {"image": "photo", "text": "caption"}, "test": 0.25},
        export=False,
    )
    result = invoke("train", config)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["data"] == {"source": "pairs.csv", "train": 30, "test": 10}
    assert metrics["classes"] == ["0", "1"] and not (tmp_path / "out" / "model").exists()


def test_config_errors_are_named_before_any_training(tmp_path):
    bad = write_config(tmp_path, training={"epochs": 0, "lr": 1e-3, "bacth_size": 8})
    result = invoke("train", bad)
    assert result.exit_code == 2
    assert "training.epochs" in result.output and "did you mean 'batch_size'" in result.output
    model = {
        "encoders": {"image": IMAGE, "audio": {"type": "words", "vocabulary": ["a"]}},
        "fusion": "concat",
    }
    result = invoke("train", write_config(tmp_path, model=model))
    assert result.exit_code == 2 and "['audio']" in result.output and "does not have" in result.output
    result = invoke(
        "train", write_config(tmp_path, model={**model, "encoders": {"image": IMAGE}, "fusion": "glue"})
    )
    assert result.exit_code == 2 and "unknown fusion ['glue']" in result.output
    result = invoke(
        "train", write_config(tmp_path, model={**model, "encoders": {"image": IMAGE}, "late_strategy": "avg"})
    )
    assert result.exit_code == 2 and "model.late_strategy: unknown strategy 'avg'" in result.output
    assert not (tmp_path / "out").exists()  # nothing written


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path):
    result = invoke("train", write_config(tmp_path), "--dry-run")
    assert result.exit_code == 0
    assert "image only, text only, concat, gated, late" in result.output and not (tmp_path / "out").exists()
