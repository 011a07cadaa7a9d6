"""``modelfusion distill`` end to end on digits: the student bundle, the variant table, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from modelfusion.cli.app import _register, app

_register()
runner = CliRunner()

pytest.importorskip("torch_pruning")


def invoke(*args: str):
    return runner.invoke(app, ["--quiet", *map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def knn_member_file(tmp_path_factory) -> Path:
    """A 3-nearest-neighbours classifier on digits (pixels / 16): a second, different member."""
    import skops.io
    from sklearn.datasets import load_digits
    from sklearn.neighbors import KNeighborsClassifier

    X, y = load_digits(return_X_y=True)
    path = tmp_path_factory.mktemp("knn") / "knn.skops"
    skops.io.dump(KNeighborsClassifier(3).fit(X[::2] / 16.0, y[::2]), path)
    return path


@pytest.fixture(scope="module")
def torch_member_file(tmp_path_factory) -> Path:
    """A small torch MLP on digits (pixels / 16), saved as safetensors with a built-in architecture."""
    import torch
    from safetensors.torch import save_file
    from sklearn.datasets import load_digits

    from modelfusion.training import Trainer
    from modelfusion.training.students import MLPStudent

    X, y = load_digits(return_X_y=True)
    torch.manual_seed(0)
    net = MLPStudent(64, 10, width=64)
    Trainer(net, torch.nn.functional.cross_entropy, max_epochs=5, seed=0, progress=False).fit(
        ((X / 16.0).astype(np.float32), y)
    )
    path = tmp_path_factory.mktemp("torch") / "mlp.safetensors"
    save_file(net.state_dict(), path)
    return path


def _torch_entry(path: Path) -> dict:
    kwargs = {"in_features": 64, "n_classes": 10, "width": 64}
    options = {"architecture": "modelfusion.training.students:MLPStudent", "architecture_kwargs": kwargs}
    return {
        "name": "torchmlp",
        "path": str(path),
        "framework": "torch",
        "options": {**options, "output_kind": "logits"},
    }


def distill_config(folder: Path, members: list[Path], **distill) -> Path:
    """A run config on builtin digits with a small, fast ``distill:`` section (overridable)."""
    section = {
        "student": "mlp",
        "student_kwargs": {"width": 32},
        "epochs": 8,
        "batch_size": 32,
        "prune": 0.5,
        "prune_epochs": 2,
        **distill,
    }
    raw = {
        "data": {"source": "builtin:digits", "split": {"validation": 0.25, "test": 0.25}},
        "members": [p if isinstance(p, dict) else {"path": str(p)} for p in members],
        "output_dir": "out",
        "cache_dir": None,
        "fusion": {"strategies": ["mean", "weighted"]},
        "distill": section,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fusion.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, digits_member_file, knn_member_file) -> Path:
    folder = tmp_path_factory.mktemp("distill")
    result = invoke("distill", distill_config(folder, [digits_member_file, knn_member_file]))
    assert result.exit_code == 0, result.output
    return folder / "out"


def test_distill_publishes_a_student_bundle_that_loads_and_predicts(distilled):
    from sklearn.datasets import load_digits

    from modelfusion.fused import FusedModel

    student = FusedModel.load(distilled / "student")
    assert [m.name for m in student.members] == ["student"]
    X, y = load_digits(return_X_y=True)
    proba = student.predict_proba((X / 16.0).astype(np.float32))
    assert proba.shape == (len(X), 10) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert (proba.argmax(axis=1) == y).mean() > 0.8
    assert (distilled / "student" / "fused.onnx").is_file() and (
        distilled / "student" / "fused.int8.onnx"
    ).is_file()
    assert not (distilled / ".distill").exists()  # published: nothing left to resume


def test_distill_reports_one_row_per_variant_with_the_pareto_front(distilled):
    metrics = json.loads((distilled / "metrics.json").read_text())
    rows = {row["kind"]: row for row in metrics["distillation"]}
    assert set(rows) == {"member", "ensemble", "labels_only", "distilled", "pruned", "int8"}
    for row in rows.values():
        assert 0 <= row["accuracy"] <= 1 and row["latency_b256_ms"] > 0 and row["latency_b1_ms"] > 0
    assert any(row["pareto"] for row in rows.values())
    fastest = min(rows.values(), key=lambda r: r["latency_b256_ms"])
    most_accurate = max(rows.values(), key=lambda r: r["accuracy"])
    assert fastest["pareto"] and most_accurate["pareto"]
    assert rows["pruned"]["n_parameters"] < rows["distilled"]["n_parameters"]
    assert metrics["student_deployment"]
    html = (distilled / "report.html").read_text()
    assert "Distillation" in html and "distillation" in (distilled / "report.md").read_text().lower()
    assert any(p.name.startswith("distillation") for p in (distilled / "figures").iterdir())


def test_distill_dry_run_prints_the_plan_and_writes_nothing(tmp_path, digits_member_file):
    path = distill_config(tmp_path, [digits_member_file])
    result = invoke("distill", path, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "student mlp" in result.output and "50% channels pruned" in result.output
    assert not (tmp_path / "out").exists()


def test_more_processes_than_cpus_needs_force(tmp_path, digits_member_file):
    path = distill_config(tmp_path, [digits_member_file])
    result = invoke("distill", path, "--nproc", "999", "--dry-run")
    assert result.exit_code == 2 and "--nproc" in result.output and "--force" in result.output
    assert invoke("distill", path, "--nproc", "999", "--force", "--dry-run").exit_code == 0


@pytest.mark.parametrize("ratio", [0, 1, 1.5, -0.2])
def test_a_prune_ratio_outside_0_1_exits_2_naming_the_field(tmp_path, digits_member_file, ratio):
    result = invoke("distill", distill_config(tmp_path, [digits_member_file], prune=ratio), "--dry-run")
    assert result.exit_code == 2 and "distill.prune" in result.output and "Traceback" not in result.output


def test_an_unknown_student_exits_2_before_any_work(tmp_path, digits_member_file):
    result = invoke("distill", distill_config(tmp_path, [digits_member_file], student="no_such_net"))
    assert result.exit_code == 2 and "distill.student" in result.output and "no_such_net" in result.output
    assert not (tmp_path / "out").exists()


def test_separate_validation_and_test_sets_need_distill_data(tmp_path, digits_member_file):
    path = distill_config(tmp_path, [digits_member_file])
    raw = yaml.safe_load(path.read_text())
    raw["data"] = {"validation": {"source": "builtin:digits"}, "test": {"source": "builtin:digits"}}
    path.write_text(yaml.safe_dump(raw))
    result = invoke("distill", path, "--dry-run")
    assert result.exit_code == 2 and "distill.data" in result.output


def test_ctrl_c_during_training_keeps_the_checkpoints_and_the_same_command_resumes(
    tmp_path, digits_member_file, monkeypatch
):
    from modelfusion.training import trainer

    path = distill_config(tmp_path, [digits_member_file], prune=None, labels_only=False, epochs=3)
    original, calls = trainer._Run.train_epoch, {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second epoch of the distilled student
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trainer._Run, "train_epoch", interrupted)
    result = invoke("distill", path)
    assert result.exit_code == 130
    assert "run the same command again" in result.output and "distilled 1 epoch(s)" in result.output
    assert not (tmp_path / "out" / "student").exists()
    kept = list((tmp_path / "out" / ".distill").glob("*/distilled/log.csv"))
    assert len(kept) == 1

    monkeypatch.setattr(trainer._Run, "train_epoch", original)
    epochs = []
    monkeypatch.setattr(
        trainer._Run,
        "train_epoch",
        lambda self, *a, **k: epochs.append(1) or original(self, *a, **k),
    )
    result = invoke("distill", path)
    assert result.exit_code == 0, result.output
    assert len(epochs) == 2  # epochs 2 and 3 only: epoch 1 came from the checkpoint
    assert (tmp_path / "out" / "student" / "manifest.json").is_file()
    log = (tmp_path / "out" / "metrics.json").read_text()
    assert "distilled" in log


def test_hint_layers_distil_a_torch_members_activations_into_the_student(
    tmp_path, digits_member_file, torch_member_file
):
    members = [digits_member_file, _torch_entry(torch_member_file)]
    hints = {"net.2": "torchmlp:net.2"}  # the student's first hidden layer onto the torch member's
    path = distill_config(tmp_path, members, hint_layers=hints, prune=None)
    dry = invoke("distill", path, "--dry-run")
    assert dry.exit_code == 0 and "hints: {'net.2': 'torchmlp:net.2'}" in dry.output
    result = invoke("distill", path)
    assert result.exit_code == 0, result.output
    rows = {r["kind"]: r for r in json.loads((tmp_path / "out" / "metrics.json").read_text())["distillation"]}
    assert rows["distilled"]["accuracy"] > 0.8


def test_bad_hint_layers_exit_2_naming_the_field(tmp_path, digits_member_file, torch_member_file):
    no_torch = distill_config(tmp_path / "a", [digits_member_file], hint_layers={"net.2": "net.2"})
    result = invoke("distill", no_torch, "--dry-run")
    assert (
        result.exit_code == 2 and "distill.hint_layers" in result.output and "none is torch" in result.output
    )
    members = [digits_member_file, _torch_entry(torch_member_file)]
    wrong = distill_config(tmp_path / "b", members, hint_layers={"net.9": "torchmlp:net.2"})
    result = invoke("distill", wrong)
    assert result.exit_code == 2 and "distill.hint_layers" in result.output and "'net.9'" in result.output
    assert not (tmp_path / "b" / "out" / "student").exists()


def test_tensorboard_curves_of_each_student_go_under_the_output_folder(tmp_path, digits_member_file):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = distill_config(tmp_path, [digits_member_file], tensorboard=True, prune=None, epochs=2)
    result = invoke("distill", path)
    assert result.exit_code == 0, result.output
    for student in ("labels_only", "distilled"):
        events = EventAccumulator(str(tmp_path / "out" / "tensorboard" / student))
        events.Reload()
        assert [e.step for e in events.Scalars("train_loss")] == [1, 2]


def test_nproc_2_trains_under_torchrun_and_publishes_the_one_process_student(
    tmp_path, digits_member_file, monkeypatch
):
    """``--nproc 2`` launches torchrun (2 gloo processes) and publishes the 1-process student, on a
    train split of 899 rows (uneven shares). SGD: Adam divides by the root of near-zero second
    moments, which turns float-order differences into lr-sized ones on dead units."""
    import os

    from safetensors.torch import load_file

    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 CPUs")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    weights = {}
    for nproc in (1, 2):
        folder = tmp_path / f"n{nproc}"
        settings = dict(prune=None, labels_only=False, epochs=2, batch_size=64, optimizer="sgd", lr=0.05)
        result = invoke(
            "distill", distill_config(folder, [digits_member_file], **settings), "--nproc", str(nproc)
        )
        assert result.exit_code == 0, result.output
        (member_file,) = (folder / "out" / "student").glob("members/*/*.safetensors")
        weights[nproc] = load_file(str(member_file))
    assert weights[1].keys() == weights[2].keys()
    for name, value in weights[1].items():
        assert np.allclose(weights[2][name].numpy(), value.numpy(), atol=1e-5, rtol=0), name
