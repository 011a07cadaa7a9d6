"""Online distillation for all-torch teachers: each training batch augmented afresh, the teacher's
soft targets computed on it in the same step.

The prediction store scores a teacher once, on fixed rows (and fixed augmented copies). When the
teacher is a fused model of torch members, :class:`OnlineTeacherStudent` can instead draw a new
augmentation of every batch, every epoch, and run the teacher on it (no gradients), as DeiT and
MEAL V2 do. The augmentation's random numbers come from torch's generator, which the training
engine seeds and checkpoints, so a resumed run draws what the uninterrupted one drew.

Examples
--------
>>> model = OnlineTeacherStudent(student, fused.to_torch(), augment=shift_and_noise)
>>> logits = model(batch); model.teacher_proba_.shape      # the fused probabilities on the same rows
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

#: ``augment(X, rng) -> X'`` on a numpy batch (the signature of :mod:`modelfusion.training.augment`).
Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]


class OnlineTeacherStudent(nn.Module):
    """The student being trained, with a frozen torch teacher beside it (not among its parameters).

    In training mode ``forward`` augments the batch (when ``augment`` is given), keeps the teacher's
    probabilities on it in ``teacher_proba_`` ([batch, C], or [teachers, batch, C] with
    ``per_teacher=True``) and returns the student's logits on the same rows. In eval mode it is the
    student alone.
    """

    def __init__(
        self, student: nn.Module, teacher: Any, *, augment: Augment | None = None, per_teacher: bool = False
    ):
        super().__init__()
        self.student = student
        object.__setattr__(self, "_teacher", teacher.eval())  # not a submodule: not trained, not checkpointed
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.augment, self.per_teacher = augment, per_teacher
        self.teacher_proba_: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.student(x)
        if self.augment is not None:
            x = self._augmented(x)
        teacher: Any = self._teacher.to(x.device)
        with torch.no_grad():
            self.teacher_proba_ = (teacher.member_scores(x) if self.per_teacher else teacher(x)).float()
        return self.student(x)

    def _augmented(self, x: torch.Tensor) -> torch.Tensor:
        seed = int(torch.randint(0, 2**62, (1,)))  # from torch's generator: seeded and checkpointed
        rows = x.detach().cpu().numpy()
        out = np.asarray(self.augment(rows, np.random.default_rng(seed)), dtype=rows.dtype)  # type: ignore[misc]
        if out.shape != rows.shape:
            from modelfusion.errors import ParameterError

            raise ParameterError(
                f"augment returned shape {list(out.shape)} for a batch of {list(rows.shape)}"
            )
        return torch.from_numpy(out).to(x.device)


__all__ = ["OnlineTeacherStudent"]
