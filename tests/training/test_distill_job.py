"""The distillation job (``modelfusion.training.worker``), its augmentations and the variant table's Pareto front."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from modelfusion.errors import ParameterError
from modelfusion.rows import VariantRow
from modelfusion.training.augment import build_augment, compose, gaussian_noise, pixel_shift
from modelfusion.training.variants import mark_pareto
from modelfusion.training.worker import load_students, read_job, run_job, write_job


@pytest.fixture(scope="module")
def job_arrays() -> dict[str, np.ndarray]:
    """513 training rows (8 batches of 64 and one of 1: a process with no row of its own in the last
    batch) and 127 validation digits, a logistic regression's probabilities as soft targets."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    teacher = LogisticRegression(max_iter=300).fit(X[640:], y[640:])
    soft = teacher.predict_proba(X[:640]).astype(np.float32)
    return {
        "X": X[:513],
        "y": y[:513],
        "soft": soft[:513],
        "X_val": X[513:640],
        "y_val": y[513:640],
        "soft_val": soft[513:640],
        "classes": np.asarray([str(c) for c in range(10)]),
    }


def _job(**changes) -> dict:
    job = {
        "student": "mlp",
        "student_kwargs": {"width": 32},
        "sample_shape": [64],
        "n_classes": 10,
        "temperature": 4.0,
        "alpha": 0.9,
        "seed": 0,
        "labels_only": True,
        "prune": None,
        "prune_epochs": 1,
        "patience": None,
        # SGD: Adam turns float-order noise between 1 and 2 processes into 1e-5 differences
        "trainer": {
            "lr": 0.05,
            "batch_size": 64,
            "max_epochs": 2,
            "optimizer": "sgd",
            "seed": 0,
            "device": "cpu",
        },
    }
    job.update(changes)
    return job


def test_a_job_trains_each_variant_once_and_reloads_them(tmp_path, job_arrays):
    write_job(tmp_path, _job(), job_arrays)
    job, arrays = read_job(tmp_path)
    assert job["student"] == "mlp" and np.array_equal(arrays["soft"], job_arrays["soft"])
    assert run_job(tmp_path, progress=False) == ["labels_only", "distilled"]
    assert run_job(tmp_path, progress=False) == []  # done: nothing trained again
    students = load_students(tmp_path)
    assert set(students) == {"labels_only", "distilled"}
    with torch.no_grad():
        logits = students["distilled"](torch.from_numpy(job_arrays["X_val"]))
    assert logits.shape == (127, 10)
    first = {name: next(iter(module.parameters())) for name, module in students.items()}
    assert not torch.equal(first["distilled"], first["labels_only"])  # different losses, different weights


def test_two_gloo_processes_train_the_students_of_one_process(tmp_path, job_arrays):
    """``distill --nproc 2``: the job under torchrun gives the in-process weights (same global batch, seed)."""
    from ..conftest import torchrun

    single, double = tmp_path / "single", tmp_path / "double"
    write_job(single, _job(), job_arrays)
    shutil.copytree(single, double)
    run_job(single, progress=False)
    script = tmp_path / "worker.py"
    script.write_text("import sys\nfrom modelfusion.training.worker import main\nsys.exit(main())\n")
    done = torchrun(script, double)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    one, two = load_students(single), load_students(double)
    for variant in ("labels_only", "distilled"):
        for name, value in one[variant].state_dict().items():
            torch.testing.assert_close(two[variant].state_dict()[name], value, atol=1e-5, rtol=0)


def test_the_worker_command_names_its_one_argument(capsys):
    from modelfusion.training.worker import main

    assert main([]) == 2
    assert "JOB_FOLDER" in capsys.readouterr().err


def test_augmentations_are_seeded_and_keep_shape_and_range():
    X = np.random.default_rng(0).random((20, 64), dtype=np.float32)
    augment = compose(pixel_shift(1, image_shape=(8, 8)), gaussian_noise(0.2, clip=(0.0, 1.0)))
    a, b = augment(X, np.random.default_rng(3)), augment(X, np.random.default_rng(3))
    assert a.shape == X.shape and a.dtype == np.float32 and np.array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 1 and not np.allclose(a, X)
    shifted = pixel_shift(2, image_shape=(8, 8))(X, np.random.default_rng(0))
    assert np.allclose(np.sort(shifted, axis=1), np.sort(X, axis=1))  # a roll moves pixels, changes none
    assert build_augment() is None


def test_a_shift_of_flat_rows_without_an_image_shape_says_what_to_give():
    with pytest.raises(ParameterError, match="image_shape"):
        pixel_shift(1)(np.zeros((4, 64), np.float32), np.random.default_rng(0))
    with pytest.raises(ParameterError, match="noise"):
        gaussian_noise(-1.0)


def _row(name: str, accuracy: float, ms: float) -> VariantRow:
    return VariantRow(name, {"accuracy": accuracy}, ms, ms, "onnx", 1, 1, "student")


def test_the_pareto_front_holds_the_rows_no_other_row_beats_on_both_axes():
    rows = mark_pareto(
        [
            _row("big", 0.98, 1.0),
            _row("small", 0.95, 0.01),
            _row("worse", 0.94, 0.05),
            _row("tie", 0.95, 0.01),
        ]
    )
    front = {r.name for r in rows if r.pareto}
    assert front == {"big", "small", "tie"}


@pytest.mark.parametrize("n_rows", [640, 641, 899])
def test_batch_shares_cover_every_row_once_and_weigh_the_processes_to_the_batch_mean(n_rows):
    from modelfusion.training.sharding import BatchShares, share_rows, share_weight

    whole = list(BatchShares(n_rows, 64, seed=3))
    for epoch in (1, 2):
        parts = []
        for rank in range(2):
            sampler = BatchShares(n_rows, 64, world=2, rank=rank, seed=3)
            sampler.set_epoch(epoch)
            parts.append(list(sampler))
        assert len(parts[0]) == len(parts[1]) == -(-n_rows // 64)  # the same number of steps
        single = BatchShares(n_rows, 64, seed=3)
        single.set_epoch(epoch)
        for step, (batch, a, b) in enumerate(zip(single, *parts, strict=True), start=1):
            real = [share_rows(n_rows, 64, step=step, world=2, rank=r) for r in range(2)]
            assert sorted(a[: real[0]] + b[: real[1]]) == sorted(batch)  # each row of the batch once
            weights = [share_weight(n_rows, 64, step=step, world=2, rank=r) for r in range(2)]
            assert sum(weights) == pytest.approx(2.0)  # DDP divides by 2: the batch's mean loss
    assert sorted(i for batch in whole for i in batch) == list(range(n_rows))
