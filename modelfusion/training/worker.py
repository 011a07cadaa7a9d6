"""The training half of ``modelfusion distill``: one job folder in, one trained student per variant out.

The command scores the teacher, then writes a job folder: ``job.json`` (the students to train and
how) and ``transfer.npz`` (inputs, label indices and the teacher's probabilities, for training and
validation). :func:`run_job` trains each variant on the one training engine
(:class:`~modelfusion.training.Trainer`) and writes ``<variant>.safetensors``:

- ``labels_only``: the student on cross-entropy with the labels (same rows, epochs and seed);
- ``distilled``: the student on the teacher's soft targets (:func:`~modelfusion.distill.train_student`);
- ``pruned``: the distilled student with a fraction of its channels removed
  (:func:`~modelfusion.compress.prune_channels`), fine-tuned by distillation.

The same function runs in this process, or in every process of ``torchrun`` (``python -m
modelfusion.training.worker FOLDER``): each trains on its share of every batch (DDP), rank 0
writes checkpoints and results. A variant whose file exists is done; one with a checkpoint in
``FOLDER/<variant>/`` resumes from it, so a killed command continues where it stopped.

Examples
--------
>>> write_job(folder, job, transfer)
>>> run_job(folder)
>>> students = load_students(folder)       # {"distilled": module, "pruned": module, ...}
"""

from __future__ import annotations

import copy
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modelfusion.errors import ParameterError
from modelfusion.files import write_bytes_atomic, write_text_atomic

JOB, TRANSFER = "job.json", "transfer.npz"
#: The variants a job trains, in order (each needs the ones before it that it builds on).
VARIANTS = ("labels_only", "distilled", "pruned")


def write_job(folder: Path, job: Mapping[str, Any], transfer: Mapping[str, np.ndarray]) -> None:
    """Write ``job.json`` and ``transfer.npz`` (``X``, ``y``, ``soft``, ``X_val``, ``y_val``, ``soft_val``)."""
    import io

    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    arrays: dict[str, Any] = dict(transfer)
    np.savez(buffer, **arrays)
    write_bytes_atomic(folder / TRANSFER, buffer.getvalue())
    write_text_atomic(folder / JOB, json.dumps(dict(job), indent=2, sort_keys=True) + "\n")


def read_job(folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The job and its arrays, as :func:`write_job` wrote them (no pickle)."""
    job = json.loads((folder / JOB).read_text(encoding="utf-8"))
    with np.load(folder / TRANSFER, allow_pickle=False) as data:
        return job, {k: data[k] for k in data.files}


def build_job_student(job: Mapping[str, Any]) -> tuple[nn.Module, str, dict[str, Any]]:
    """The untrained student of a job (seeded), its architecture import path or name, and its kwargs."""
    from modelfusion.members.torch import build_architecture
    from modelfusion.training.students import STUDENTS, build_student

    name, kwargs = job["student"], dict(job["student_kwargs"])
    with torch.random.fork_rng():  # the same initial weights in every process, the caller's RNG untouched
        torch.manual_seed(job["seed"])
        if name in STUDENTS:
            shape, n_classes = tuple(job["sample_shape"]), job["n_classes"]
            return build_student(name, sample_shape=shape, n_classes=n_classes, **kwargs)
        return build_architecture(name, kwargs), name, kwargs


def run_job(folder: Path, *, progress: bool | None = None) -> list[str]:
    """Train every variant of the job in ``folder`` not trained yet; returns the variants trained now."""
    from modelfusion.distill import train_student
    from modelfusion.training.trainer import EarlyStopping, Trainer, _world

    job, data = read_job(folder)
    rank = _world()[1]
    options = dict(job["trainer"], progress=progress)
    if job.get("patience"):
        options["early_stopping"] = EarlyStopping(patience=job["patience"])
    train = (data["X"], data["y"], data["soft"])
    val = (data["X_val"], data["y_val"], data["soft_val"]) if len(data["X_val"]) else None
    weights = data.get("weights")
    hints = _hints(job, data)
    done = []
    for variant in _wanted(job):
        result = folder / f"{variant}.safetensors"
        if result.exists():
            continue
        checkpoints: dict[str, Any] = {"checkpoint_dir": folder / variant}
        if job.get("tensorboard_dir"):
            checkpoints["tensorboard_dir"] = Path(job["tensorboard_dir"]) / variant
        if variant == "labels_only":
            student = build_job_student(job)[0]
            Trainer(student, _cross_entropy, **options, **checkpoints).fit(
                train[:2], None if val is None else val[:2]
            )
        else:
            if variant == "distilled":
                student = build_job_student(job)[0]
                epochs, lr = options["max_epochs"], options["lr"]
            else:
                student = pruned_student(job, _load(folder, "distilled", build_job_student(job)[0]), data)
                epochs, lr = job["prune_epochs"], options["lr"] / 3
            train_student(
                student,
                train,
                val,
                temperature=job["temperature"],
                alpha=job["alpha"],
                weights=weights,
                hints=hints,
                **{**options, "max_epochs": epochs, "lr": lr},
                **checkpoints,
            )
        if rank == 0:
            _save(student, result)
        _barrier()
        done.append(variant)
    return done


def _hints(job: Mapping[str, Any], data: Mapping[str, np.ndarray]) -> Any:
    """The job's feature-distillation hints (student layers, teacher activations), or None."""
    from modelfusion.distill import Hints

    layers = list(job.get("hint_layers") or [])
    if not layers:
        return None
    return Hints(layers, [data[f"hint_{i}"] for i in range(len(layers))], job.get("hint_weight", 1.0))


def pruned_student(job: Mapping[str, Any], distilled: nn.Module, data: Mapping[str, np.ndarray]) -> nn.Module:
    """The distilled student with ``job["prune"]`` of its channels removed (deterministic: every
    process, and the command afterwards, prunes the same channels)."""
    from modelfusion.compress import prune_channels

    pruned = copy.deepcopy(distilled)
    prune_channels(pruned, torch.from_numpy(np.ascontiguousarray(data["X"][:2])), ratio=job["prune"])
    return pruned


def load_students(folder: Path) -> dict[str, nn.Module]:
    """Every trained variant of the job, rebuilt and loaded from its safetensors file (eval mode)."""
    job, data = read_job(folder)
    out: dict[str, nn.Module] = {}
    for variant in _wanted(job):
        base = build_job_student(job)[0]
        if variant == "pruned":
            base = pruned_student(job, out["distilled"], data)
        out[variant] = _load(folder, variant, base).eval()
    return out


def _wanted(job: Mapping[str, Any]) -> list[str]:
    wanted = {"labels_only": job["labels_only"], "distilled": True, "pruned": job.get("prune") is not None}
    return [v for v in VARIANTS if wanted[v]]


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, labels)


def _save(module: nn.Module, path: Path) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    write_bytes_atomic(path, save(tensors))


def _load(folder: Path, variant: str, module: nn.Module) -> nn.Module:
    from safetensors.torch import load_file

    path = folder / f"{variant}.safetensors"
    if not path.exists():
        raise ParameterError(f"{path} is missing: the {variant} student was not trained")
    module.load_state_dict(load_file(str(path)))
    return module


def _barrier() -> None:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def main(argv: list[str] | None = None) -> int:
    """``python -m modelfusion.training.worker FOLDER`` under torchrun (gloo on CPU, nccl on GPU)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m modelfusion.training.worker JOB_FOLDER", file=sys.stderr)
        return 2
    dist = torch.distributed
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    try:
        run_job(Path(args[0]), progress=False if int(os.environ.get("RANK", "0")) else None)
        if distributed:  # leave together: a rank tearing gloo down while rank 0 still writes aborts rank 0
            dist.barrier()
    finally:
        if distributed:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
