"""Distillation variants side by side (issue 14): the table ``modelfusion distill`` reports.

For two tasks, one row per variant: the best member, the fused ensemble, a student trained on
labels only, the distilled student, the distilled student with 50% of its channels pruned and
fine-tuned by distillation, and that student's int8 graph. Columns: test accuracy, NLL, ECE,
latency per sample at batch 1 and 256 (each on its fastest engine, named), parameters, and size.

Tasks: the digits demo's seven members (``modelfusion demo``), and a harder synthetic task
(6 classes, 40 features, overlapping clusters) whose five scikit-learn members are trained here.
Students are distilled on the training rows plus augmented copies the teacher scores once
(shifts and noise for digits, Gaussian noise for the synthetic task); the labels-only student
trains on the same rows, epochs and seed.

``python benchmarks/distillation.py``; a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modelfusion import FusedModel, load_member, score_members
from modelfusion.compress import prune_channels
from modelfusion.distill import Distiller
from modelfusion.predictions import class_indices
from modelfusion.rows import VariantRow
from modelfusion.runtime.quantize import quantize_onnx
from modelfusion.strategies import search_strategies
from modelfusion.training import Trainer
from modelfusion.training.students import build_student
from modelfusion.training.variants import (
    fastest_engine,
    mark_pareto,
    n_parameters,
    onnx_runner,
    softmax,
    torch_engines,
    variant_row,
)

SEED = 0
EPOCHS = 30
COPIES = 4
WIDTH = 256


def digits_task(folder: Path) -> dict[str, Any]:
    from modelfusion.config import parse_config
    from modelfusion.data import load_dataset, split_dataset
    from modelfusion.examples.digits import SPLIT, build_digits_members, digits_config
    from modelfusion.plan import plan_run
    from modelfusion.stages import load_members

    entries = build_digits_members(folder / "models")  # loaded as `modelfusion run` loads them
    members = load_members(plan_run(parse_config(digits_config(entries), base_dir=folder)))
    parts = split_dataset(load_dataset("builtin:digits"), **SPLIT)
    data = {
        k: (np.asarray(parts[k].X, np.float32), np.asarray(parts[k].y))
        for k in ("train", "validation", "test")
    }

    def augment(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        images = X.reshape(-1, 8, 8).copy()
        for i, (dx, dy) in enumerate(rng.integers(-1, 2, (len(images), 2))):
            images[i] = np.roll(np.roll(images[i], dx, 0), dy, 1)
        return np.clip(images.reshape(len(X), 64) + rng.normal(0, 0.1, X.shape), 0, 1).astype(np.float32)

    return {"name": "digits (7 demo members)", "members": members, "data": data, "augment": augment}


def synthetic_task() -> dict[str, Any]:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier

    X, y = make_classification(
        n_samples=9000,
        n_features=40,
        n_informative=14,
        n_redundant=10,
        n_classes=6,
        n_clusters_per_class=3,
        class_sep=0.9,
        flip_y=0.02,
        random_state=SEED,
    )
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    order = np.random.default_rng(SEED).permutation(len(X))
    tr, va, te = order[:5000], order[5000:7000], order[7000:]
    estimators = {
        "logreg": LogisticRegression(max_iter=500),
        "forest": RandomForestClassifier(n_estimators=150, random_state=SEED, n_jobs=1),
        "boosting": HistGradientBoostingClassifier(max_iter=150, random_state=SEED),
        "knn": KNeighborsClassifier(n_neighbors=15),
        "mlp": MLPClassifier((64,), max_iter=300, random_state=SEED),
    }
    members = [load_member(est.fit(X[tr], y[tr]), name=name) for name, est in estimators.items()]

    def augment(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return (X + rng.normal(0, 0.15, X.shape)).astype(np.float32)

    data = {"train": (X[tr], y[tr]), "validation": (X[va], y[va]), "test": (X[te], y[te])}
    return {"name": "synthetic (6 classes, 5 members)", "members": members, "data": data, "augment": augment}


# -- measuring: the same helpers `modelfusion distill` measures its table with ----------------------


def student_row(
    name: str, module: nn.Module, X: np.ndarray, y_enc: np.ndarray, folder: Path, tag: str
) -> VariantRow:
    """A torch student's row: its accuracy (eager), latency on its fastest engine, parameters, ONNX size."""
    engines, path = torch_engines(module, X[:2], folder, tag)
    proba = softmax(engines["torch"](X))
    return variant_row(
        name, proba, y_enc, fastest_engine(engines, X), n_parameters(module), path.stat().st_size
    )


# -- one task -----------------------------------------------------------------------------------


def run(task: dict[str, Any], folder: Path) -> list[VariantRow]:
    members, data = task["members"], task["data"]
    (X_tr, y_tr), (X_va, y_va), (X_te, y_te) = data["train"], data["validation"], data["test"]
    val = score_members(members, X_va, y=y_va, progress=False)
    result = search_strategies(val, y_va, metric="nll", cv=5, random_state=SEED, progress=False)
    fused = FusedModel(members, result.fit_best(val, y_va))
    test = score_members(members, X_te, y=y_te, progress=False)
    y_enc = test.encode_labels(y_te)
    rows = []
    best = max(range(len(members)), key=lambda i: float((test.proba[i].argmax(1) == y_enc).mean()))
    m = members[best]
    rows.append(
        variant_row(
            f"best member ({m.name})",
            test.proba[best],
            y_enc,
            fastest_engine({m.framework: m.predict}, X_te),
            m.n_parameters,
            m.file_size,
        )
    )
    fused_path = fused.export_onnx(folder / "fused.onnx", example_input=X_te[:8])
    engines = {"onnx": onnx_runner(fused_path), "members": lambda r: fused.predict_proba(r, engine="members")}
    rows.append(
        variant_row(
            f"fused ({type(fused.strategy).__name__})",
            fused.predict_proba(X_te),
            y_enc,
            fastest_engine(engines, X_te),
            None,
            fused_path.stat().st_size,
        )
    )
    n_classes, shape = test.n_outputs, X_tr.shape[1:]
    options = dict(
        lr=3e-3,
        batch_size=128,
        max_epochs=EPOCHS,
        seed=SEED,
        device="cpu",
        progress=False,
        scheduler="cosine",
    )
    distiller = Distiller(
        fused,
        "mlp",
        student_kwargs={"width": WIDTH},
        temperature=4.0,
        alpha=0.9,
        augment=task["augment"],
        augment_copies=COPIES,
        **options,
    )
    X_aug, y_aug = distiller.transfer_set(X_tr, y_tr)
    labels_only, _, _ = build_student("mlp", sample_shape=shape, n_classes=n_classes, width=WIDTH)
    torch.manual_seed(SEED)
    Trainer(labels_only, nn.functional.cross_entropy, **options).fit(
        (X_aug, class_indices(y_aug, fused.classes))
    )
    rows.append(student_row("student, labels only", labels_only, X_te, y_enc, folder, "labels"))
    distiller.fit((X_tr, y_tr))
    student = distiller.student_member_.module
    rows.append(student_row("student, distilled", student, X_te, y_enc, folder, "distilled"))
    pruned = copy.deepcopy(student)
    prune_channels(pruned, torch.from_numpy(X_te[:2]), ratio=0.5)
    Distiller(
        fused,
        pruned,
        temperature=4.0,
        alpha=0.9,
        augment=task["augment"],
        augment_copies=COPIES,
        **{**options, "max_epochs": max(EPOCHS // 3, 1), "lr": 1e-3},
    ).fit((X_tr, y_tr))
    rows.append(
        student_row("student, 50% channels pruned + distilled", pruned, X_te, y_enc, folder, "pruned")
    )
    int8 = quantize_onnx(folder / "distilled.onnx", folder / "distilled.int8.onnx", mode="dynamic")
    run8 = {"onnx int8": onnx_runner(int8)}
    rows.append(
        variant_row(
            "student, distilled, int8",
            softmax(run8["onnx int8"](X_te)),
            y_enc,
            fastest_engine(run8, X_te),
            n_parameters(student),
            Path(int8).stat().st_size,
        )
    )
    return mark_pareto(rows)


def show(name: str, rows: list[VariantRow]) -> None:
    print(f"\n== {name}")
    print(
        f"{'variant':44} {'acc':>7} {'NLL':>7} {'ECE':>7} {'ms@1':>8} {'ms@256':>8} {'engine':>10} {'params':>8} {'size':>9}"
    )
    for r in rows:
        m = r.metrics
        params = "-" if r.n_parameters is None else f"{r.n_parameters:,}"
        size = "-" if r.file_size is None else f"{r.file_size / 1024:.1f} KB"
        print(
            f"{r.name + (' *' if r.pareto else ''):44} {100 * m['accuracy']:6.2f}% {m['nll']:7.4f} {m['ece']:7.4f} "
            f"{r.latency_b1_ms:8.4f} {r.latency_b256_ms:8.4f} {r.engine:>10} {params:>8} {size:>9}"
        )
    print("(* on the accuracy-latency Pareto front at batch 256)")
    by = {r.name.split(" (")[0]: r for r in rows}
    fused = next(r for r in rows if r.name.startswith("fused"))
    d, labels = by["student, distilled"], by["student, labels only"]
    pruned = by["student, 50% channels pruned + distilled"]
    acc = {
        key: r.metrics["accuracy"]
        for key, r in (("fused", fused), ("d", d), ("labels", labels), ("p", pruned))
    }
    print(f"distilled / fused accuracy: {acc['d'] / acc['fused']:.3f} (target >= 0.98)")
    print(
        f"fused / distilled latency at batch 256: {fused.latency_b256_ms / d.latency_b256_ms:.1f}x (target >= 5x)"
    )
    print(f"distilled - labels-only accuracy: {100 * (acc['d'] - acc['labels']):+.2f} pp (target > 0)")
    print(
        f"pruned: {100 * (acc['p'] - acc['d']):+.2f} pp (target >= -1), "
        f"{d.latency_b256_ms / pruned.latency_b256_ms:.2f}x faster at batch 256 (target >= 1.5x)"
    )


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for task in (digits_task(Path(tmp)), synthetic_task()):
            folder = Path(tmp) / task["name"].split()[0]
            folder.mkdir(exist_ok=True)
            start = time.perf_counter()
            rows = run(task, folder)
            show(f"{task['name']} ({time.perf_counter() - start:.0f} s)", rows)


if __name__ == "__main__":
    main()
