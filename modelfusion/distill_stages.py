"""The stages ``modelfusion distill`` adds to the run: plan, prepare the transfer set, train, measure.

After the fusion stages have built the fused model (the teacher), distillation:

1. :func:`plan_distill` (before anything runs): the ``distill:`` section, its data, student,
   augmentation and the torchrun launch, every problem at once;
2. :func:`prepare`: the student's training rows (``distill.data``, else the train part of the
   split) plus augmented copies, the teacher's probabilities on them from the prediction store,
   written as a job folder under ``output_dir/.distill/`` (kept until the run is published, so a
   killed command resumes from its checkpoints);
3. :func:`train`: the job's variants (labels only, distilled, pruned) on the training engine,
   in this process or in ``--nproc`` torchrun processes (:mod:`modelfusion.training.worker`);
4. :func:`write_student`: the distilled student as its own bundle (``student/``, with its int8
   graph), and one :class:`~modelfusion.rows.VariantRow` per model, Pareto front marked.

Examples
--------
>>> dplan = plan_distill(plan, Launch(nproc=2))
>>> folder = prepare(plan, dplan, model, scored)
>>> train(dplan, folder)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelfusion.config import DistillConfig
from modelfusion.data.dataset import Dataset
from modelfusion.data.datasets import plan_source
from modelfusion.errors import ConfigError, ParameterError, TrainingError
from modelfusion.fused import FusedModel
from modelfusion.importpath import importable_from
from modelfusion.members.base import Member
from modelfusion.plan import DataStep, RunPlan, _problem
from modelfusion.rows import DeploymentRow, VariantRow
from modelfusion.training.augment import Augment, build_augment
from modelfusion.training.variants import as_float32

#: The hidden folder of ``output_dir`` that holds the job and its checkpoints until the run is published.
WORK_FOLDER = ".distill"


@dataclass(frozen=True)
class Launch:
    """How the training runs: ``nproc`` processes per node under torchrun, on ``nnodes`` machines."""

    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None

    @property
    def distributed(self) -> bool:
        return self.nproc > 1 or self.nnodes > 1

    def command(self, folder: Path) -> list[str]:
        """The torchrun command line that trains the job in ``folder``."""
        rendezvous = (
            ["--rdzv-backend", "c10d", "--rdzv-endpoint", self.rdzv_endpoint]
            if self.rdzv_endpoint
            else ["--standalone"]
        )
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(self.nproc),
            "--nnodes",
            str(self.nnodes),
            "--node-rank",
            str(self.node_rank),
            *rendezvous,
            "-m",
            "modelfusion.training.worker",
            str(folder),
        ]


@dataclass
class DistillPlan:
    """The ``distill:`` section resolved: its data source, augmentation, launch and work folder."""

    config: DistillConfig
    data: DataStep | None
    augment: Augment | None
    launch: Launch
    workdir: Path

    def describe(self) -> list[str]:
        """The distillation part of ``distill --dry-run``."""
        c, launch = self.config, self.launch
        data = self.data.source.text if self.data is not None else "the train part of data.split"
        copies = c.augment.copies if c.augment is not None else 0
        lines = [
            f"  distill: student {c.student} {c.student_kwargs or ''}".rstrip()
            + f", T={c.temperature:g}, alpha={c.alpha:g}, {c.teacher_mode} teacher, {c.epochs} epochs",
            f"    training rows: {data}" + (f" + {copies} augmented copies" if copies else ""),
            "    variants: "
            + ", ".join(
                ["labels only"] * c.labels_only
                + ["distilled"]
                + ([f"{c.prune:.0%} channels pruned + distilled"] if c.prune else [])
                + ([f"int8 ({c.quantize})"] if c.quantize else [])
            ),
            *(
                [f"    hints: {c.hint_layers} (weight {c.hint_weight:g}; teacher activations computed once)"]
                if c.hint_layers
                else []
            ),
            f"    processes: {launch.nproc} x {launch.nnodes} node(s)"
            + (" (torchrun)" if launch.distributed else " (this process)"),
            f"    checkpoints: {self.workdir} (removed once the run is published)",
        ]
        return lines


def plan_distill(plan: RunPlan, launch: Launch | None = None, *, force: bool = False) -> DistillPlan:
    """Check the ``distill:`` section (defaults when absent) and the launch; one ConfigError for all."""
    config = plan.config
    d = config.distill or DistillConfig()
    launch = launch or Launch()
    problems: list[str] = []
    data = _plan_data(plan, d, problems)
    _check_student(d, config.base_dir, problems)
    augment = _plan_augment(d, config.base_dir, problems)
    if d.hint_layers is not None:
        torch_members = [m.name for m in plan.members if m.framework == "torch"]
        if not torch_members:
            problems.append(
                "distill.hint_layers: feature distillation reads a torch member's activations; "
                f"the members are {', '.join(m.name for m in plan.members)} (none is torch)"
            )
    if d.tensorboard:
        with _problem(problems, "distill.tensorboard"):
            from modelfusion.training.tensorboard import check_tensorboard

            check_tensorboard()
    if d.prune is not None:
        with _problem(problems, "distill.prune"):
            from modelfusion.dependencies import require

            require(
                "torch_pruning", purpose="structured channel pruning", extra="prune", package="torch-pruning"
            )
    if config.task not in (None, "classification"):
        problems.append(f"distill: distillation needs a classifier's probabilities; task is {config.task}")
    problems += _check_launch(launch, force)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(
            f"{config.config_file or 'config'} has {len(problems)} problem(s):\n{lines}", problems
        )
    return DistillPlan(d, data, augment, launch, plan.output_dir / WORK_FOLDER)


def _plan_data(plan: RunPlan, d: DistillConfig, problems: list[str]) -> DataStep | None:
    config = plan.config
    if d.data is not None:
        with _problem(problems, "distill.data"):
            s = d.data
            found = plan_source(
                s.source, format=s.format, label=s.label, base_dir=config.base_dir, options=s.options
            )
            return DataStep("distill.data", s, found)
        return None
    split = config.data.split
    if config.data.source is None:
        problems.append(
            "distill.data: the data section gives separate validation and test sets, so there is no train "
            "part to distil on; give distill.data (the student's training data)"
        )
    elif split.validation + split.test >= 1.0 - 1e-9:
        problems.append(
            f"distill.data: data.split leaves no train part (validation {split.validation:g} + test "
            f"{split.test:g} = 1); give distill.data or smaller fractions"
        )
    return None


def _check_student(d: DistillConfig, base_dir: Path, problems: list[str]) -> None:
    from modelfusion.training.students import STUDENTS

    name = d.student
    if name in STUDENTS:
        return
    with _problem(problems, "distill.student"):
        if ":" in name:
            from modelfusion.members.torch import import_factory

            with importable_from(base_dir):
                import_factory(name)
            return
        if not _named_architecture(name):
            raise ParameterError(
                f"{name!r} is not a built-in student ({', '.join(STUDENTS)}), a torchvision or timm model "
                "name, or an import path 'package.module:factory'"
            )


def _named_architecture(name: str) -> bool:
    try:
        import torchvision

        if name in torchvision.models.list_models():
            return True
    except ImportError:
        pass
    try:
        import timm

        return bool(timm.is_model(name))
    except ImportError:
        return False


def _plan_augment(d: DistillConfig, base_dir: Path, problems: list[str]) -> Augment | None:
    a = d.augment
    if a is None or not a.copies:
        return None
    if a.function is not None:
        with _problem(problems, "distill.augment.function"), importable_from(base_dir):
            from modelfusion.members.torch import import_factory

            return import_factory(a.function)
        return None
    return build_augment(noise=a.noise, shift=a.shift, image_shape=a.image_shape, clip=a.clip)


def _check_launch(launch: Launch, force: bool) -> list[str]:
    problems = []
    cpus = os.cpu_count() or 1
    if launch.nproc < 1 or launch.nnodes < 1:
        problems.append(f"--nproc and --nnodes must be >= 1, got {launch.nproc} and {launch.nnodes}")
    elif launch.nproc > cpus and not force:
        problems.append(
            f"--nproc: {launch.nproc} processes on a machine with {cpus} CPUs would fight for them; "
            "pass --force to start them anyway"
        )
    if not 0 <= launch.node_rank < max(launch.nnodes, 1):
        problems.append(f"--node-rank must be in [0, {launch.nnodes}), got {launch.node_rank}")
    if launch.nnodes > 1 and not launch.rdzv_endpoint:
        problems.append("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (the machine of node 0)")
    return problems


# -- prepare and train ----------------------------------------------------------------------------


def load_distill_data(plan: RunPlan, dplan: DistillPlan) -> Dataset:
    """The student's training data: ``distill.data``, else the train part of the split."""
    from modelfusion import stages

    if dplan.data is not None:
        return stages.load_section(plan, dplan.data.config)
    return stages.load_train_data(plan)


def prepare(
    plan: RunPlan, dplan: DistillPlan, model: FusedModel, val: Dataset, members: list[Member] | None = None
) -> Path:
    """Score the teacher on the transfer set and write the job folder (kept when it is the same job).

    ``members`` (default: the model's) are where ``hint_layers`` find their torch member: every
    member of the run, so a hint can name one the chosen strategy left out.
    """
    from modelfusion.distill import Distiller, check_student_width
    from modelfusion.files import write_text_atomic
    from modelfusion.predictions import class_indices
    from modelfusion.training.worker import JOB, build_job_student, write_job

    d, seed = dplan.config, plan.config.seed
    train_data = load_distill_data(plan, dplan)
    copies = d.augment.copies if d.augment is not None and dplan.augment is not None else 0
    teacher = Distiller(
        model,
        d.student,
        temperature=d.temperature,
        alpha=d.alpha,
        teacher_mode=d.teacher_mode,
        augment=dplan.augment,
        augment_copies=copies,
        cache_dir=None if plan.cache_dir is None else str(plan.cache_dir),
        seed=seed,
    )
    X, y = teacher.transfer_set(as_float32(train_data.X), np.asarray(train_data.y))
    soft, classes, weights = teacher.soft_targets(X)
    soft_val, _, _ = teacher.soft_targets(as_float32(val.X))
    arrays = {
        "X": X,
        "y": class_indices(y, classes, whose="the teacher's"),
        "soft": soft,
        "X_val": as_float32(val.X),
        "y_val": class_indices(val.y, classes, whose="the teacher's"),
        "soft_val": soft_val,
        "classes": np.asarray([str(c) for c in classes]),
        **({} if weights is None else {"weights": np.asarray(weights, dtype=np.float32)}),
    }
    job = _job(plan, d, X, len(classes))
    student = build_job_student(job)[0]
    check_student_width(student, X[:2], len(classes))
    arrays.update(_hint_features(d, student, members or model.members, X))
    digest = _digest(job, arrays)
    if d.tensorboard:  # where the curves go is not part of the job: the same checkpoints resume
        job["tensorboard_dir"] = str(plan.output_dir / "tensorboard")
    folder = dplan.workdir / digest
    if (folder / JOB).exists():  # the same job: keep its checkpoints, take the new logging setting
        write_text_atomic(folder / JOB, json.dumps(job, indent=2, sort_keys=True) + "\n")
        return folder
    if dplan.workdir.exists():  # another job's checkpoints: a different config or teacher
        shutil.rmtree(dplan.workdir)
    write_job(folder, job, arrays)
    return folder


def _hint_features(
    d: DistillConfig, student: Any, members: list[Member], X: np.ndarray
) -> dict[str, np.ndarray]:
    """``hint_<i>``: the torch teachers' activations on the transfer set, one array per hint layer."""
    if d.hint_layers is None:
        return {}
    from modelfusion.training.hints import resolve_hint_layers, teacher_features

    try:
        pairs = resolve_hint_layers(d.hint_layers, student, members)
    except ParameterError as exc:
        raise ConfigError(f"distill.hint_layers: {exc}", [f"distill.hint_layers: {exc}"]) from exc
    return {f"hint_{i}": f for i, f in enumerate(teacher_features(pairs, X))}


def _job(plan: RunPlan, d: DistillConfig, X: np.ndarray, n_classes: int) -> dict[str, Any]:
    return {
        "student": d.student,
        "student_kwargs": d.student_kwargs,
        "sample_shape": list(X.shape[1:]),
        "n_classes": n_classes,
        "temperature": d.temperature,
        "alpha": d.alpha,
        "seed": plan.config.seed,
        "labels_only": d.labels_only,
        "hint_layers": list(d.hint_layers or {}),
        "hint_weight": d.hint_weight,
        "prune": d.prune,
        "prune_epochs": d.prune_epochs,
        "patience": d.patience,
        "trainer": {
            "lr": d.lr,
            "optimizer": d.optimizer,
            "batch_size": d.batch_size,
            "max_epochs": d.epochs,
            "scheduler": d.scheduler,
            "seed": plan.config.seed,
            "device": "auto",
        },
    }


def _digest(job: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(json.dumps(job, sort_keys=True).encode())
    for key in sorted(arrays):
        h.update(key.encode())
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()[:16]


def train(dplan: DistillPlan, folder: Path, *, progress: bool | None = None) -> None:
    """Train the job's variants here, or in torchrun processes when the launch asks for several."""
    from modelfusion.training.worker import run_job

    if not dplan.launch.distributed:
        run_job(folder, progress=progress)
        return
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(dplan.launch.command(folder), env=env, check=False)
    if done.returncode != 0:
        raise TrainingError(
            f"torchrun exited with code {done.returncode} (its processes' messages are above); the "
            f"checkpoints in {folder} are kept: run the same command again to resume"
        )


# -- measure and write ------------------------------------------------------------------------------


@dataclass
class Distilled:
    """What distillation adds to the run: the variant table, the student's graphs, notes."""

    rows: list[VariantRow] = field(default_factory=list)
    deployment: list[DeploymentRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def write_student(
    plan: RunPlan,
    dplan: DistillPlan,
    folder: Path,
    model: FusedModel,
    members: list[Member],
    scored: Any,
    stage: Path,
) -> Distilled:
    """Save the distilled student as ``stage/student`` (with its int8 graph) and measure every variant."""
    from modelfusion.runtime.deployment import iter_deployment
    from modelfusion.training.worker import load_students

    students = load_students(folder)
    bundle = _student_bundle(
        plan, dplan, folder, students["distilled"], scored, [m.name for m in model.members]
    )
    bundle.save(stage / "student")
    d, val, test = dplan.config, scored.val, scored.test
    deployment = [
        DeploymentRow.from_record(r)
        for r in iter_deployment(
            bundle,
            stage / "student",
            (val.X, val.y),
            (test.X, test.y),
            quantize=d.quantize,
            batch_size=plan.config.batch_size,
        )
    ]
    from modelfusion.distill_table import variant_rows

    bundle_graph = stage / "bundle" / "fused.onnx"  # written by the deploy step when it asks for ONNX
    rows = variant_rows(plan, model, members, scored, students, stage / "student", folder, bundle_graph)
    return Distilled(rows, deployment, _notes(dplan, rows))


def _student_bundle(
    plan: RunPlan, dplan: DistillPlan, folder: Path, module: Any, scored: Any, teachers: list[str]
) -> FusedModel:
    from modelfusion.members.torch import TorchMember
    from modelfusion.predictions import score_members
    from modelfusion.strategies import Mean
    from modelfusion.training.worker import build_job_student, read_job

    job, _ = read_job(folder)
    _, architecture, kwargs = build_job_student(job)
    classes = list(scored.val_preds.classes)
    member = TorchMember(
        module,
        name="student",
        classes=classes,
        output_kind="logits",
        input_shape=tuple(job["sample_shape"]),
        architecture=architecture,
        architecture_kwargs=kwargs,
    )
    preds = score_members([member], as_float32(scored.val.X), progress=False)
    metadata = {
        "config_name": plan.config.name,
        "distilled_from": teachers,
        "distill": dplan.config.model_dump(mode="json"),
    }
    return FusedModel([member], Mean().fit(preds, scored.val.y), metadata=metadata)


def _notes(dplan: DistillPlan, rows: list[VariantRow]) -> list[str]:
    by = {r.kind: r for r in rows}
    notes = []
    fused, student = by.get("ensemble"), by.get("distilled")
    if fused is not None and student is not None and fused.latency_b256_ms and student.latency_b256_ms:
        notes.append(
            f"Distillation: the student keeps {student.metrics['accuracy'] / fused.metrics['accuracy']:.1%} of the "
            f"ensemble's accuracy at {fused.latency_b256_ms / student.latency_b256_ms:.1f}x lower latency "
            "per sample at batch 256 (each on its fastest engine)."
        )
    if "pruned" in by:
        notes.append(
            "Pruning removes channels physically (Torch-Pruning), so the pruned student is smaller and "
            "faster; unstructured (magnitude) pruning would only make weights zero and leave latency as it is."
        )
    return notes


def remove_workdir(dplan: DistillPlan) -> None:
    """Remove the job folder once its students are published (nothing left to resume)."""
    shutil.rmtree(dplan.workdir, ignore_errors=True)


def resume_hint(dplan: DistillPlan) -> str:
    """What an interrupted ``distill`` kept (checkpointed epochs per student) and how to go on."""
    kept = []
    for log in sorted(dplan.workdir.glob("*/*/log.csv")):
        epochs = max(len(log.read_text(encoding="utf-8").splitlines()) - 1, 0)
        kept.append(f"{log.parent.name} {epochs} epoch(s)")
    for done in sorted(dplan.workdir.glob("*/*.safetensors")):
        kept.append(f"{done.stem} done")
    what = f"checkpoints kept in {dplan.workdir} ({', '.join(kept)})" if kept else "no epoch had finished"
    return f"{what}; run the same command again to resume from the last finished epoch"


__all__ = [
    "WORK_FOLDER",
    "DistillPlan",
    "Distilled",
    "Launch",
    "load_distill_data",
    "plan_distill",
    "prepare",
    "remove_workdir",
    "resume_hint",
    "train",
    "write_student",
]
