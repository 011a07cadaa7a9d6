"""The table ``modelfusion distill`` reports: one row per model, from the best member to the int8 student.

Rows: the best member, the fused ensemble, the student trained on labels only, the distilled
student, the pruned + distilled student, the distilled student's int8 graph. Each row has test
accuracy, NLL and ECE, latency per sample at batch 1 and 256 on its fastest engine (measured with
:mod:`modelfusion.training.variants`, as ``benchmarks/distillation.py`` does), parameters and size
on disk; the rows on the accuracy-vs-latency Pareto front are marked.

Examples
--------
>>> rows = variant_rows(plan, model, members, scored, students, stage / "student", folder)
>>> [(r.name, r.pareto) for r in rows]
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from modelfusion.fused import FusedModel
from modelfusion.members.base import Member
from modelfusion.plan import RunPlan
from modelfusion.rows import VariantRow
from modelfusion.training.variants import (
    Runner,
    as_float32,
    fastest_engine,
    mark_pareto,
    n_parameters,
    onnx_runner,
    softmax,
    torch_engines,
    variant_row,
)

#: Row labels of the students, by variant.
STUDENT_LABELS = {
    "labels_only": "labels only",
    "distilled": "distilled",
    "pruned": "{prune:.0%} pruned",
}


def variant_rows(
    plan: RunPlan,
    model: FusedModel,
    members: list[Member],
    scored: Any,
    students: Mapping[str, nn.Module],
    student_dir: Path,
    folder: Path,
    ensemble_graph: Path | None = None,
) -> list[VariantRow]:
    """Measure every model of the table on the test split (ONNX graphs written into ``folder``;
    ``ensemble_graph``: the bundle's fused graph when the run exported one, measured as it is)."""
    X, y = as_float32(scored.test.X), scored.y_test
    rows = [best_member_row(members, scored), ensemble_row(model, X, y, folder, ensemble_graph)]
    prune = (plan.config.distill.prune if plan.config.distill else None) or 0.0
    for variant, module in students.items():
        engines, path = torch_engines(module, X[:2], folder, variant)
        rows.append(
            variant_row(
                STUDENT_LABELS[variant].format(prune=prune),
                softmax(engines["torch"](X)),
                y,
                fastest_engine(engines, X),
                n_parameters(module),
                path.stat().st_size,
                kind=variant,
            )
        )
    int8 = student_dir / "fused.int8.onnx"
    if int8.exists():
        run = onnx_runner(int8)
        timing = fastest_engine({"onnx": run}, X)
        params = n_parameters(students["distilled"])
        # dynamic int8 scales each call's activations: score in the batches the deployment table uses
        step = plan.config.batch_size
        proba = np.concatenate([run(X[i : i + step]) for i in range(0, len(X), step)])
        rows.append(variant_row("distilled int8", proba, y, timing, params, int8.stat().st_size, kind="int8"))
    return mark_pareto(rows)


def best_member_row(members: list[Member], scored: Any) -> VariantRow:
    """The member with the best test accuracy, on its own engine."""
    preds, y = scored.test_preds, scored.y_test
    accuracy = [float((preds.proba[i].argmax(1) == y).mean()) for i in range(preds.n_members)]
    best = int(np.argmax(accuracy))
    member = next(m for m in members if m.name == preds.names[best])
    timing = fastest_engine({member.framework: member.predict}, np.asarray(scored.test.X))
    return variant_row(
        f"member {member.name}",
        preds.proba[best],
        y,
        timing,
        member.n_parameters,
        member.file_size,
        kind="member",
    )


def ensemble_row(
    model: FusedModel, X: np.ndarray, y: np.ndarray, folder: Path, graph: Path | None = None
) -> VariantRow:
    """The fused ensemble on the faster of its members one by one and its one ONNX graph (``graph``
    when given and written, else exported into ``folder`` when the ensemble has one)."""
    engines: dict[str, Runner] = {"members": lambda rows: model.predict_proba(rows, engine="members")}
    size = sum(m.file_size or 0 for m in model.members) or None
    path = graph if graph is not None and graph.exists() else None
    if path is None:
        try:
            path = model.export_onnx(folder / "fused.onnx", example_input=X[:8])
        except Exception:  # no ONNX form, or a converter failing, must not fail the table: members alone
            path = None
    if path is not None:
        engines["onnx"] = onnx_runner(path)
        size = path.stat().st_size
    params = [m.n_parameters for m in model.members]
    return variant_row(
        f"ensemble ({len(model.members)})",
        engines["members"](X),
        y,
        fastest_engine(engines, X),
        None if any(p is None for p in params) else sum(p for p in params if p is not None),
        size,
        kind="ensemble",
    )
