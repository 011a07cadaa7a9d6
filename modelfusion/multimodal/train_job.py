"""``modelfusion train``: plan everything from the config, then train and compare every candidate.

:func:`plan_training` loads the data, resolves the encoder specs (a word encoder's
``vocabulary: auto`` from the training texts) and builds every candidate model once, untrained,
so a config error surfaces before any training. :func:`run_training` then trains each fusion
operator and each single-modality model with the shared Trainer and returns one
:class:`ModelRow` per candidate; ``metrics.json``, the report and the CLI table read those rows.

Examples
--------
>>> plan = plan_training(load_train_config("train.yaml"))
>>> result = run_training(plan)
>>> result.best.model, result.best.accuracy
('film', 0.981)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from modelfusion.errors import ConfigError, DataError, ModelFusionError
from modelfusion.multimodal.data import ModalityDataset
from modelfusion.multimodal.train_config import TrainConfig
from modelfusion.multimodal.train_rows import Candidate, ModelRow, modality_view

BUILTIN = "builtin:digit_instructions"
#: The fusion name of late fusion (a head per modality, fused by a prediction-level strategy).
LATE = "late"


@dataclass
class TrainPlan:
    """Everything ``run_training`` needs, checked."""

    config: TrainConfig
    train: ModalityDataset
    test: ModalityDataset
    classes: list[Any]
    encoders: dict[str, dict[str, Any]]
    candidates: list[Candidate]
    output_dir: Path

    def describe(self) -> list[str]:
        """The plan in a few lines (``--dry-run``)."""
        c = self.config
        return [
            f"data: {c.data.source}: {len(self.train)} training rows, {len(self.test)} held out, "
            f"{len(self.classes)} classes, modalities {list(self.encoders)}",
            f"train: {', '.join(x.name for x in self.candidates)} ({c.training.epochs} epochs, lr {c.training.lr})",
            f"writes: {self.output_dir}/metrics.json, report.html, report.md"
            + (", model/ (safetensors + ONNX)" if c.export else ""),
        ]


@dataclass
class TrainResult:
    rows: list[ModelRow]
    best: ModelRow
    files: dict[str, Path] = field(default_factory=dict)


def plan_training(config: TrainConfig) -> TrainPlan:
    """Load the data and build every candidate once; raises ConfigError naming the config path."""
    train, test, classes = _load_data(config)
    absent = [m for m in config.model.encoders if m not in train.inputs]
    if absent:
        raise ConfigError(
            f"model.encoders names {absent}, which the data does not have (it has {list(train.inputs)})",
            [f"model.encoders.{m}: not in the data" for m in absent],
        )
    encoders = {m: _resolve_spec(m, spec, train) for m, spec in config.model.encoders.items()}
    candidates = [Candidate(f, f, tuple(encoders)) for f in config.model.fusion]
    if config.model.single_modality and len(encoders) > 1:
        candidates = [Candidate(f"{m} only", "concat", (m,)) for m in encoders] + candidates
    plan = TrainPlan(config, train, test, classes, encoders, candidates, config.resolve(config.output_dir))
    for candidate in candidates:
        build_model(plan, candidate)  # a bad spec fails now, not after the first model trained
    return plan


def build_model(plan: TrainPlan, candidate: Candidate) -> nn.Module:
    """The untrained model of ``candidate``, seeded from the config."""
    from modelfusion.multimodal.fusion import MultimodalFusion

    m = plan.config.model
    if candidate.fusion == LATE:
        return _late_model(plan, candidate)
    spec = {
        "encoders": {name: plan.encoders[name] for name in candidate.modalities},
        "fusion": candidate.fusion,
        "dim": m.dim,
        "fusion_options": m.fusion_options.get(candidate.fusion, {}),
        "head": m.head,
        "num_classes": len(plan.classes),
        "missing_embeddings": plan.config.data.missing == "embed",
    }
    torch.manual_seed(plan.config.seed)
    try:
        return MultimodalFusion.from_spec(spec)
    except ModelFusionError as exc:
        raise ConfigError(f"model ({candidate.name}): {exc}", [f"model: {exc}"]) from exc


def _late_model(plan: TrainPlan, candidate: Candidate) -> nn.Module:
    from modelfusion.multimodal.late import LateFusion
    from modelfusion.multimodal.specs import build_encoder

    torch.manual_seed(plan.config.seed)
    try:
        encoders = {
            name: build_encoder(plan.encoders[name], owner=f"model.encoders.{name}")
            for name in candidate.modalities
        }
        return LateFusion(encoders, len(plan.classes), strategy=plan.config.model.late_strategy)
    except ModelFusionError as exc:
        raise ConfigError(f"model ({candidate.name}): {exc}", [f"model: {exc}"]) from exc


def run_training(
    plan: TrainPlan, *, log: Callable[[str], None] = lambda _: None, progress: bool | None = None
) -> TrainResult:
    """Train every candidate, score it on the held-out rows, write metrics.json, the report and the
    best model."""
    from modelfusion.multimodal.train_outputs import write_outputs

    rows, best_model, best = [], None, None
    for candidate in plan.candidates:
        log(f"training {candidate.name}")
        row, model = train_candidate(plan, candidate, progress=progress)
        rows.append(row)
        log(f"{candidate.name}: accuracy {row.accuracy:.2%}, NLL {row.nll:.4f}")
        fused = len(candidate.modalities) > 1 or len(plan.encoders) == 1
        if fused and candidate.fusion != LATE and (best is None or row.accuracy > best.accuracy):
            best, best_model = row, model
    assert best is not None and best_model is not None
    files = write_outputs(plan, rows, best, best_model)
    return TrainResult(rows, best, files)


def train_candidate(
    plan: TrainPlan, candidate: Candidate, *, progress: bool | None = None
) -> tuple[ModelRow, Any]:
    """One candidate trained with the shared Trainer and scored on the held-out rows."""
    from modelfusion.multimodal.late import late_fusion_loss
    from modelfusion.training import EarlyStopping, Trainer

    t = plan.config.training
    late = candidate.fusion == LATE
    model = build_model(plan, candidate)
    train, val = modality_view(plan.train, candidate), modality_view(plan.test, candidate)
    held = None
    if t.patience is not None or late:  # early stopping, or the late strategy, need rows of their own
        rows = np.random.default_rng(plan.config.seed).permutation(len(train))
        cut = max(1, len(rows) // 10)
        train, held = train.subset(rows[cut:]), train.subset(rows[:cut])
        val = held if t.patience is not None else val
    start = time.perf_counter()
    trainer = Trainer(
        model,
        late_fusion_loss if late else nn.functional.cross_entropy,
        optimizer=t.optimizer,
        lr=t.lr,
        weight_decay=t.weight_decay,
        batch_size=t.batch_size,
        max_epochs=t.epochs,
        scheduler=t.scheduler,
        early_stopping=EarlyStopping(patience=t.patience) if t.patience else None,
        seed=plan.config.seed,
        device="cpu",
        progress=progress,
    ).fit(train, val)
    if late:
        cast(Any, model).fit_strategy(held)
    seconds = time.perf_counter() - start
    accuracy, nll, latency = _score(model, modality_view(plan.test, candidate), t.batch_size)
    row = ModelRow(
        model=candidate.name,
        fusion=candidate.fusion if len(candidate.modalities) > 1 else None,
        modalities=candidate.modalities,
        accuracy=accuracy,
        nll=nll,
        latency_ms=latency,
        parameters=sum(p.numel() for p in model.parameters()),
        train_seconds=seconds,
        epochs=len(trainer.history_),
    )
    return row, model


def _score(model: nn.Module, data: ModalityDataset, batch_size: int) -> tuple[float, float, float]:
    """Accuracy, NLL and eager latency (ms per batch of ``batch_size``, the median over batches) on ``data``."""
    from torch.utils.data import DataLoader

    model.eval()
    logits, labels, times = [], [], []
    with torch.no_grad():
        for inputs, y in DataLoader(data, batch_size=batch_size):
            start = time.perf_counter()
            out = _log_probabilities(model, inputs)
            times.append((time.perf_counter() - start) * 1000 * batch_size / len(y))
            logits.append(out)
            labels.append(y)
    z, y = torch.cat(logits), torch.cat(labels)
    accuracy = float((z.argmax(1) == y).float().mean())
    nll = float(nn.functional.nll_loss(z, y))
    return accuracy, nll, float(np.median(times))


def _log_probabilities(model: nn.Module, inputs: Any) -> torch.Tensor:
    from modelfusion.multimodal.late import LateFusion

    if isinstance(model, LateFusion):  # the heads' probabilities through the fitted strategy
        return torch.from_numpy(model.predict_proba(inputs)).float().clamp_min(1e-12).log()
    return model(inputs).log_softmax(dim=1)


def _resolve_spec(modality: str, spec: dict[str, Any], train: ModalityDataset) -> dict[str, Any]:
    spec = dict(spec)
    if spec.get("type") == "words" and spec.get("vocabulary") == "auto":
        import re

        texts = train.inputs[modality]
        if not isinstance(texts, list):
            raise ConfigError(
                f"model.encoders.{modality}: vocabulary: auto needs texts, the data has "
                f"{type(texts).__name__}",
                [f"model.encoders.{modality}.vocabulary: the modality is not text"],
            )
        spec["vocabulary"] = sorted({w for t in texts for w in re.findall(r"[a-z0-9']+", str(t).lower())})
    return spec


def _load_data(config: TrainConfig) -> tuple[ModalityDataset, ModalityDataset, list[Any]]:
    d = config.data
    if d.source.startswith("builtin:"):
        if d.source != BUILTIN:
            raise ConfigError(
                f"data.source: {d.source!r} is not a built-in multimodal task (use {BUILTIN} or a manifest)",
                [f"data.source: unknown builtin {d.source!r}"],
            )
        from modelfusion.examples.digit_instructions import digit_instructions, split_by_image

        task = digit_instructions(per_image=d.per_image, seed=config.seed)
        train, test = split_by_image(task, per_image=d.per_image, test_fraction=d.test, seed=config.seed)
        return train, test, list(range(10))
    from sklearn.model_selection import train_test_split

    from modelfusion.multimodal.manifest_dataset import MultimodalDataset

    path = config.resolve(d.source)
    if not path.is_file():
        raise ConfigError(f"data.source: {str(path)!r} does not exist", [f"data.source: {path} not found"])
    if not d.columns:
        raise ConfigError(
            "data.columns: name each modality's column(s)", ["data.columns: required for a manifest"]
        )
    data = MultimodalDataset(
        path,
        columns=d.columns,
        label=d.label,
        kinds=d.kinds,
        image_size=d.image_size,
        channels=d.channels,
        missing=d.missing,
        bad_images=d.bad_images,
    )
    rows = np.arange(len(data))
    labels = data.labels.numpy()
    stratify = labels if np.bincount(labels).min() >= 2 else None
    try:
        train, test = train_test_split(rows, test_size=d.test, random_state=config.seed, stratify=stratify)
    except ValueError as exc:
        raise DataError(f"data.test={d.test}: cannot split {len(rows)} rows ({exc})") from None
    return data.subset(train), data.subset(test), list(data.classes_)


__all__ = [
    "BUILTIN",
    "LATE",
    "TrainPlan",
    "TrainResult",
    "build_model",
    "plan_training",
    "run_training",
]
