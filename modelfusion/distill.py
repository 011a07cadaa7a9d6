"""Distil a whole heterogeneous ensemble into one small torch student: :class:`Distiller`, :class:`DistillWrapper`.

The teacher is a :class:`~modelfusion.fused.FusedModel`, a list of members (torch, scikit-learn,
ONNX, Hugging Face, Keras: any mix) or a :class:`~modelfusion.predictions.PredictionSet` scored
beforehand. Its soft targets on the training data come from the prediction store: every member
runs once (cached with ``cache_dir=``), never per epoch. The student trains on the one training
engine (:class:`~modelfusion.training.Trainer`: checkpoints, resume, early stopping, DDP).

The loss is Hinton et al.'s: ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student,
labels)``, the teacher's probabilities softened to ``p^(1/T)`` (its logits divided by ``T``).
``teacher_mode="mean"`` distils from the fused output (MEAL V2's choice, ``alpha=1``: no hard
labels); ``"per_teacher"`` averages one KL term per member, weighted.

Examples
--------
>>> distiller = Distiller(fused, student_net, temperature=4.0, alpha=0.9, max_epochs=30, lr=3e-3)
>>> distiller.fit((X_train, y_train), (X_val, y_val))
>>> student = distiller.student_member_           # a TorchMember: save it, fuse it, export it
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from modelfusion.errors import ModelFusionError, ParameterError, PredictionError
from modelfusion.fused import FusedModel
from modelfusion.members.base import Member
from modelfusion.members.torch import TorchMember, build_architecture
from modelfusion.outputs import EPS
from modelfusion.predictions import PredictionSet, class_indices, score_members
from modelfusion.training.hints import HintStudent, resolve_hint_layers, teacher_features
from modelfusion.training.online import OnlineTeacherStudent
from modelfusion.training.students import STUDENTS, build_student
from modelfusion.training.trainer import Trainer

TEACHER_MODES = ("mean", "per_teacher")


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_proba: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    temperature: float,
    alpha: float,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)``.

    ``teacher_proba`` is [batch, classes] (one teacher) or [teachers, batch, classes] (one KL
    term per teacher, averaged with ``weights``). Teacher probabilities are softened as
    ``softmax(log p / T)``; with ``alpha=1`` the labels are not used.
    """
    log_q = nn.functional.log_softmax(student_logits / temperature, dim=-1)
    teachers = teacher_proba if teacher_proba.dim() == 3 else teacher_proba[None]
    soft = nn.functional.softmax(torch.log(teachers.clamp_min(EPS)) / temperature, dim=-1)
    kl = (soft * (torch.log(soft.clamp_min(EPS)) - log_q[None])).sum(dim=-1).mean(dim=-1)  # [teachers]
    w = torch.full_like(kl, 1.0 / len(kl)) if weights is None else weights / weights.sum()
    loss = alpha * temperature**2 * (w * kl).sum()
    if alpha < 1.0:
        if labels is None:
            raise ParameterError("alpha < 1 mixes in the hard-label loss: the batch needs labels")
        loss = loss + (1.0 - alpha) * nn.functional.cross_entropy(student_logits, labels)
    return loss


def train_student(
    student: nn.Module,
    train: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    val: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    *,
    temperature: float,
    alpha: float,
    weights: np.ndarray | None = None,
    hints: Hints | None = None,
    online: Online | None = None,
    **trainer_options: Any,
) -> Trainer:
    """Train ``student`` on ``(inputs, label indices, teacher probabilities)`` with :func:`distillation_loss`.

    The teacher's probabilities are [rows, C] or, one KL term per teacher, [teachers, rows, C]
    (averaged with ``weights``). With ``hints``, the student's named layers are also pulled
    towards the teacher's activations on the same rows (:mod:`modelfusion.training.hints`; the
    validation loss is the distillation loss alone). With ``online`` (an all-torch teacher), the
    training soft targets are not given (``train[2]`` is None): every batch is augmented afresh
    and the teacher runs on it (:mod:`modelfusion.training.online`); validation still uses
    ``val``'s stored targets. This is :meth:`Distiller.fit` once the soft targets are scored;
    ``modelfusion distill`` calls it in each torchrun process. Returns the fitted Trainer.
    """
    w = None if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    model: nn.Module = student
    if online is not None:
        if hints is not None:
            raise ParameterError(
                "hint_layers need the teacher's activations on fixed rows: not with online augmentation"
            )
        model = OnlineTeacherStudent(
            student, online.teacher, augment=online.augment, per_teacher=weights is not None
        )
    if hints is not None:
        model = HintStudent(
            student,
            hints.student_layers,
            [f.shape[1:] for f in hints.features],
            np.asarray(train[0][:2]),
            seed=trainer_options.get("seed", 0),
        )

    def loss(logits: torch.Tensor, labels: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        features: tuple[torch.Tensor, ...] = ()
        if isinstance(model, OnlineTeacherStudent) and model.training:
            assert model.teacher_proba_ is not None
            teacher = model.teacher_proba_  # already [teachers, batch, C] per teacher
        else:
            soft, features = rest[0], rest[1:]
            # [batch, teachers, C] -> [teachers, batch, C]
            teacher = soft.transpose(0, 1) if soft.dim() == 3 else soft
        value = distillation_loss(logits, teacher, labels, temperature=temperature, alpha=alpha, weights=w)
        if features and hints is not None and isinstance(model, HintStudent) and model.training:
            value = value + hints.weight * model.hint_loss(features)
        return value

    def rows_first(data: tuple[np.ndarray, np.ndarray, np.ndarray | None]) -> tuple[np.ndarray, ...]:
        return (data[0], data[1]) if data[2] is None else (data[0], data[1], _rows_first(data[2]))

    extra = tuple(hints.features) if hints is not None else ()
    try:
        return Trainer(model, loss, **trainer_options).fit(
            (*rows_first(train), *extra), None if val is None else rows_first(val)
        )
    finally:
        if isinstance(model, HintStudent):
            model.release()


@dataclass(frozen=True)
class Online:
    """Online distillation for :func:`train_student`: an all-torch teacher (``FusedModel.to_torch()``)
    run on every training batch, after ``augment`` (a new draw per batch and epoch; None: none)."""

    teacher: nn.Module
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None


@dataclass(frozen=True)
class Hints:
    """Feature distillation for :func:`train_student`: the student's layers, the teacher's
    activations on the training rows (one array per layer, rows first) and the weight of their loss."""

    student_layers: list[str]
    features: list[np.ndarray]
    weight: float = 1.0


class Distiller:
    """Train ``student`` to reproduce ``teacher``'s probabilities (soft targets from the prediction store).

    Parameters
    ----------
    teacher : a FusedModel (its fused probabilities), a list of members, or a PredictionSet of
        the teacher's outputs on the training inputs (same rows, same order).
    student : an ``nn.Module`` returning logits [batch, classes]; a built-in student, ``"mlp"`` or
        ``"cnn"`` (:mod:`modelfusion.training.students`, sized from the data and the teacher's
        classes, ``student_kwargs={"width": 128}``); or an architecture name (``"resnet18"``,
        ``"package.module:factory"``) built with ``student_kwargs``.
    temperature : softening of both distributions (``T``; the KL term is scaled by ``T^2``).
    alpha : weight of the soft loss; ``1 - alpha`` goes to cross-entropy on the labels.
    teacher_mode : ``"mean"`` (the fused output) or ``"per_teacher"`` (one KL term per member).
    teacher_weights : ``{member: weight}`` for ``"per_teacher"`` (default: the strategy's member
        weights for a FusedModel that has them, else uniform).
    augment : ``augment(X, rng) -> X'`` a label-preserving augmentation (shifts, noise, crops) of a
        batch of inputs; with ``augment_copies=k`` the training set becomes the inputs plus ``k``
        augmented copies, all scored by the teacher once, before training. Soft targets on rows
        the teacher was not fitted on carry what distillation transfers: on the inputs a
        scikit-learn teacher was trained on, its probabilities are close to one-hot.
    augment_copies : how many augmented copies of the training inputs (0: none).
    cache_dir : the prediction store's folder, so a second run does not score the teacher again.
    hint_layers : feature distillation from torch teacher members: a list of layer names both the
        student and the teacher have, or ``{student_layer: teacher_layer}`` (``"member:layer"``
        when the teacher has several torch members). The teacher's activations are computed once
        on the transfer set; a learned connector maps the student's onto them (MSE).
    hint_weight : weight of the hint loss beside the distillation loss.
    augment_online : for a FusedModel of torch members: augment every training batch afresh (each
        epoch a new draw of ``augment``; None: no augmentation) and run the teacher on it, instead
        of scoring fixed rows once through the store (:mod:`modelfusion.training.online`).
    **trainer_options : :class:`~modelfusion.training.Trainer` settings (``lr``, ``max_epochs``,
        ``scheduler``, ``early_stopping``, ``checkpoint_dir``, ``seed``...).

    Attributes
    ----------
    trainer_ : the fitted Trainer (``history_``, ``best_epoch_``...).
    student_member_ : the trained student as a :class:`~modelfusion.members.TorchMember` with the
        teacher's classes: save it in a bundle, fuse it, export it.
    classes_ : the class labels the student's output columns stand for.

    Examples
    --------
    >>> d = Distiller([cnn, forest, logreg], nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)),
    ...               teacher_mode="per_teacher", alpha=0.7, max_epochs=20)
    >>> d.fit((X_train, y_train), (X_val, y_val)).student_member_.predict(X_test[:2]).shape
    (2, 10)
    """

    def __init__(
        self,
        teacher: FusedModel | Sequence[Member] | PredictionSet,
        student: nn.Module | str,
        *,
        temperature: float = 4.0,
        alpha: float = 0.9,
        teacher_mode: Literal["mean", "per_teacher"] = "mean",
        teacher_weights: Mapping[str, float] | None = None,
        student_kwargs: Mapping[str, Any] | None = None,
        augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
        augment_copies: int = 0,
        cache_dir: str | None = None,
        name: str = "student",
        hint_layers: Sequence[str] | Mapping[str, str] | None = None,
        hint_weight: float = 1.0,
        augment_online: bool = False,
        **trainer_options: Any,
    ):
        if teacher_mode not in TEACHER_MODES:
            raise ParameterError(f"teacher_mode={teacher_mode!r} is not one of {', '.join(TEACHER_MODES)}")
        if not temperature > 0:
            raise ParameterError(f"temperature must be > 0, got {temperature!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ParameterError(f"alpha must be in [0, 1], got {alpha!r}")
        if augment_copies and augment is None or augment_copies < 0:
            raise ParameterError(
                f"augment_copies={augment_copies!r} needs augment= (a function) and a count >= 0"
            )
        if hint_layers is not None and isinstance(teacher, PredictionSet):
            raise ParameterError(
                "hint_layers read the teacher's activations: give the teacher as members or a FusedModel, "
                "not a PredictionSet"
            )
        if not hint_weight > 0:
            raise ParameterError(f"hint_weight must be > 0, got {hint_weight!r}")
        if augment_online and augment_copies:
            raise ParameterError(
                "augment_online draws a new augmentation of every batch: it replaces augment_copies (give one)"
            )
        self.augment_online = augment_online
        self.hint_layers, self.hint_weight = hint_layers, hint_weight
        self.augment, self.augment_copies = augment, augment_copies
        self.teacher, self.student, self.student_kwargs = teacher, student, dict(student_kwargs or {})
        self.temperature, self.alpha, self.teacher_mode = temperature, alpha, teacher_mode
        self.teacher_weights, self.cache_dir, self.name = teacher_weights, cache_dir, name
        self.trainer_options = trainer_options

    def fit(self, train: tuple[Any, Any], val: tuple[Any, Any] | None = None) -> Distiller:
        """Score the teacher once on ``train`` (and ``val``), then train the student; returns self."""
        X, y = self.transfer_set(*train)
        online = self._online()
        if online is None:
            targets, classes, weights = self.soft_targets(X)
        else:  # the teacher runs on every (augmented) batch: here only its classes and weights
            _, classes, weights = self.soft_targets(np.asarray(X)[:2])
            targets = None
        self.classes_ = classes
        y_enc = class_indices(y, classes, whose="the teacher's")
        student, architecture = self._student_module(tuple(np.asarray(X).shape[1:]), len(classes))
        check_student_width(student, np.asarray(X[:2]), len(classes))
        val_data = None
        if val is not None:
            val_targets, _, _ = self.soft_targets(val[0])
            val_data = (
                np.asarray(val[0]),
                class_indices(val[1], classes, whose="the teacher's"),
                val_targets,
            )
        self.trainer_ = train_student(
            student,
            (np.asarray(X), y_enc, targets),
            val_data,
            temperature=self.temperature,
            alpha=self.alpha,
            weights=weights,
            hints=self._hints(student, np.asarray(X)),
            online=online,
            **self.trainer_options,
        )
        sample = tuple(np.asarray(X).shape[1:])
        self.student_member_ = TorchMember(
            student.eval(),
            name=self.name,
            classes=list(classes),
            output_kind="logits",
            input_shape=sample,
            **architecture,
        )
        return self

    def _online(self) -> Online | None:
        """The all-torch teacher as one module, for ``augment_online=True``."""
        if not self.augment_online:
            return None
        if not isinstance(self.teacher, FusedModel):
            raise ParameterError(
                "augment_online runs the teacher on every batch: give it as a FusedModel of torch members"
            )
        try:
            module = self.teacher.to_torch()
        except ModelFusionError as exc:
            raise ParameterError(
                f"augment_online needs an all-torch teacher ({exc}); without it, augment_copies= scores "
                "augmented copies once through the prediction store"
            ) from exc
        return Online(module, self.augment)

    def _hints(self, student: nn.Module, X: np.ndarray) -> Hints | None:
        """The hint layers checked and the torch teachers' activations on the transfer set (once)."""
        if self.hint_layers is None:
            return None
        teacher = self.teacher
        members = teacher.members if isinstance(teacher, FusedModel) else list(teacher)  # type: ignore[arg-type]
        pairs = resolve_hint_layers(self.hint_layers, student, members)
        return Hints([p.student_layer for p in pairs], teacher_features(pairs, X), self.hint_weight)

    def transfer_set(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """The training inputs plus ``augment_copies`` augmented copies (labels repeated), seeded."""
        X, y = np.asarray(X), np.asarray(y)
        if not self.augment_copies:
            return X, y
        assert self.augment is not None
        rng = np.random.default_rng(self.trainer_options.get("seed", 0))
        copies = [np.asarray(self.augment(X, rng), dtype=X.dtype) for _ in range(self.augment_copies)]
        for i, c in enumerate(copies):
            if c.shape != X.shape:
                raise ParameterError(
                    f"augment returned shape {list(c.shape)} for inputs {list(X.shape)} (copy {i})"
                )
        return np.concatenate([X, *copies]), np.tile(y, self.augment_copies + 1)

    def soft_targets(self, X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The teacher's probabilities on ``X`` ([rows, C], or [teachers, rows, C] per teacher), its
        classes, and the per-teacher weights (None for the fused output)."""
        preds = self._teacher_predictions(X)
        if preds.task != "classification":
            raise ParameterError(
                f"distillation here is for classifiers (soft class probabilities); the teacher does {preds.task}"
            )
        classes = np.asarray(preds.classes if preds.classes is not None else np.arange(preds.n_outputs))
        if self.teacher_mode == "per_teacher":
            return np.asarray(preds.proba, dtype=np.float32), classes, self._weights(preds)
        if isinstance(self.teacher, FusedModel):
            fused = self.teacher.strategy.combine(preds)
        else:
            w = self._weights(preds)
            fused = np.tensordot(w, preds.proba, axes=1)
        return np.asarray(fused, dtype=np.float32), classes, None

    def _teacher_predictions(self, X: Any) -> PredictionSet:
        teacher = self.teacher
        if isinstance(teacher, PredictionSet):
            if teacher.n_samples != len(X):
                raise PredictionError(
                    f"the teacher's PredictionSet holds {teacher.n_samples} rows but the data has {len(X)}; "
                    "score the teacher on these inputs (score_members(members, X))"
                )
            return teacher
        members = teacher.members if isinstance(teacher, FusedModel) else list(teacher)
        try:
            return score_members(members, X, cache_dir=self.cache_dir, progress=False)
        except ModelFusionError as exc:
            raise type(exc)(f"the teacher cannot score the training data: {exc}") from exc

    def _weights(self, preds: PredictionSet) -> np.ndarray:
        given = self.teacher_weights
        if given is None and isinstance(self.teacher, FusedModel):
            learned = self.teacher.strategy.member_weights(preds)
            given = None if learned is None else learned[0]
        if given is None:
            return np.full(preds.n_members, 1.0 / preds.n_members)
        unknown = sorted(set(given) - set(preds.names))
        if unknown:
            raise ParameterError(
                f"teacher_weights name {', '.join(unknown)}, not teachers: {', '.join(preds.names)}"
            )
        w = np.array([float(given.get(n, 0.0)) for n in preds.names])
        if (w < 0).any() or w.sum() <= 0:
            raise ParameterError(f"teacher_weights must be >= 0 with a positive sum, got {dict(given)}")
        return w / w.sum()

    def _student_module(
        self, sample_shape: tuple[int, ...], n_classes: int
    ) -> tuple[nn.Module, dict[str, Any]]:
        """The student module and the architecture options its member saves with (safetensors when known).

        A student built by name starts from weights drawn with the trainer's ``seed`` (the caller's
        random state untouched), so the same settings give the same student.
        """
        if isinstance(self.student, nn.Module):
            return self.student, {}
        with torch.random.fork_rng():
            torch.manual_seed(self.trainer_options.get("seed", 0))
            return self._built_student(sample_shape, n_classes)

    def _built_student(
        self, sample_shape: tuple[int, ...], n_classes: int
    ) -> tuple[nn.Module, dict[str, Any]]:
        if isinstance(self.student, str) and self.student in STUDENTS:
            module, path, kwargs = build_student(
                self.student, sample_shape=sample_shape, n_classes=n_classes, **self.student_kwargs
            )
            return module, {"architecture": path, "architecture_kwargs": kwargs}
        if isinstance(self.student, str):
            module = build_architecture(self.student, self.student_kwargs)
            return module, {"architecture": self.student, "architecture_kwargs": dict(self.student_kwargs)}
        raise ParameterError(
            f"student must be an nn.Module or an architecture name, got {type(self.student).__name__}"
        )


class DistillWrapper(nn.Module):
    """vit-pytorch's call shape for your own loop: ``loss = distiller(images, labels)``.

    ``teacher`` is a torch module returning logits, or a FusedModel of torch members (its fused
    probabilities, via :meth:`~modelfusion.fused.FusedModel.to_torch`); it is frozen and in eval
    mode. ``hard=True`` distils from the teacher's argmax (DeiT's hard distillation).

    Examples
    --------
    >>> distiller = DistillWrapper(student, teacher, temperature=3.0, alpha=0.5)
    >>> loss = distiller(images, labels); loss.backward()
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | FusedModel,
        temperature: float = 3.0,
        alpha: float = 0.5,
        hard: bool = False,
    ):
        super().__init__()
        self.student = student
        if isinstance(teacher, FusedModel):
            self.teacher: nn.Module = teacher.to_torch()
            self.teacher_gives_proba = True
        else:
            self.teacher, self.teacher_gives_proba = teacher, False
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.temperature, self.alpha, self.hard = temperature, alpha, hard

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self.student(inputs)
        with torch.no_grad():
            out = self.teacher(inputs)
            proba = out if self.teacher_gives_proba else nn.functional.softmax(out, dim=-1)
        if self.hard:
            teacher_labels = proba.argmax(dim=-1)
            soft_loss = nn.functional.cross_entropy(logits, teacher_labels)
            return self.alpha * soft_loss + (1 - self.alpha) * nn.functional.cross_entropy(logits, labels)
        return distillation_loss(logits, proba, labels, temperature=self.temperature, alpha=self.alpha)


# -- helpers ------------------------------------------------------------------------------------


def _rows_first(targets: np.ndarray) -> np.ndarray:
    """Per-teacher targets [teachers, rows, C] as [rows, teachers, C], so a batch slices rows."""
    return np.ascontiguousarray(targets.transpose(1, 0, 2)) if targets.ndim == 3 else targets


def check_student_width(student: nn.Module, rows: np.ndarray, n_classes: int) -> None:
    """Raise ParameterError unless ``student`` maps ``rows`` to [rows, n_classes] logits."""
    was = student.training
    student.eval()
    with torch.no_grad():
        x = torch.from_numpy(rows.astype(np.float32) if rows.dtype.kind == "f" else rows)
        out = student(x)
    student.train(was)
    if out.dim() != 2 or out.shape[1] != n_classes:
        raise ParameterError(
            f"the student returns {list(out.shape)} for 2 rows but the teacher has {n_classes} classes: "
            f"its last layer must emit {n_classes} logits"
        )
