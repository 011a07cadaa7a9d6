"""Feature (hint) distillation: a student's intermediate layers trained to match a torch teacher's.

FitNets-style hints (Romero et al., 2015): for each pair ``student layer -> teacher layer``, the
student's activation goes through a small learned connector (identity when the shapes agree; a
1x1 convolution and pooling for feature maps; a linear map otherwise) and is pulled towards the
teacher's activation by a mean-squared error, added to the distillation loss with ``hint_weight``.

The teacher's activations are computed once, on the whole transfer set, like its soft targets
(:func:`teacher_features`): the teacher never runs per epoch. :class:`HintStudent` wraps the
student for training; the student itself (without connectors) is what is saved.

Examples
--------
>>> pairs = resolve_hint_layers({"net.1": "cnn:fc1"}, student, fused.members)
>>> features = teacher_features(pairs, X_train)
>>> model = HintStudent(student, [p.student_layer for p in pairs], [f.shape[1:] for f in features], X_train[:2])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from modelfusion.errors import ParameterError

#: Rows per teacher forward when its activations are collected.
FEATURE_BATCH = 256


@dataclass(frozen=True)
class HintPair:
    """One hint: the student's layer, the torch teacher member and its layer it should match."""

    student_layer: str
    teacher: Any
    teacher_layer: str


def resolve_hint_layers(
    hint_layers: Sequence[str] | Mapping[str, str], student: nn.Module, members: Sequence[Any]
) -> list[HintPair]:
    """Check ``hint_layers`` against the student's and the torch teachers' named modules.

    A list names layers both sides have; a mapping is ``{student_layer: teacher_layer}``, the
    teacher layer written ``member:layer`` when the teacher has several torch members.
    """
    from modelfusion.members.torch import TorchMember

    torch_members = [m for m in members if isinstance(m, TorchMember)]
    if not torch_members:
        names = ", ".join(m.name for m in members) or "none"
        raise ParameterError(
            f"hint_layers need a torch teacher member to read activations from; the teacher's members are {names}"
        )
    pairs = hint_layers.items() if isinstance(hint_layers, Mapping) else [(n, n) for n in hint_layers]
    if not pairs:
        raise ParameterError("hint_layers is empty: name at least one layer, or leave it None")
    resolved = []
    for student_layer, spec in pairs:
        _submodule(student, student_layer, "the student")
        member, layer = _teacher_layer(spec, torch_members)
        _submodule(member.module, layer, f"teacher member {member.name!r}")
        resolved.append(HintPair(student_layer, member, layer))
    return resolved


def _teacher_layer(spec: str, members: list[Any]) -> tuple[Any, str]:
    by_name = {m.name: m for m in members}
    if ":" in spec and spec.split(":", 1)[0] in by_name:
        name, layer = spec.split(":", 1)
        return by_name[name], layer
    if len(members) > 1:
        raise ParameterError(
            f"hint layer {spec!r}: the teacher has several torch members ({', '.join(by_name)}); "
            "write it as 'member:layer'"
        )
    return members[0], spec


def _submodule(module: nn.Module, name: str, whose: str) -> nn.Module:
    try:
        return module.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in module.named_modules() if n]
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise ParameterError(f"{whose} has no layer {name!r}; its layers: {shown}") from None


def teacher_features(pairs: Sequence[HintPair], X: np.ndarray) -> list[np.ndarray]:
    """Each pair's teacher activation on every row of ``X`` (float32), in batches, in eval mode."""
    return [_activations(pair, X) for pair in pairs]


def _activations(pair: HintPair, X: np.ndarray) -> np.ndarray:
    chunks: list[np.ndarray] = []

    def keep(_module: nn.Module, _inputs: Any, output: Any) -> None:
        chunks.append(_tensor_of(output).detach().float().cpu().numpy())

    handle = pair.teacher.module.get_submodule(pair.teacher_layer).register_forward_hook(keep)
    try:
        for start in range(0, len(X), FEATURE_BATCH):
            pair.teacher.predict(X[start : start + FEATURE_BATCH])
    finally:
        handle.remove()
    return np.concatenate(chunks).astype(np.float32, copy=False)


class HintStudent(nn.Module):
    """The student plus one connector per hint; ``forward`` returns the student's logits and keeps
    the connected activations of the last training forward in ``hints_``.

    Examples
    --------
    >>> model = HintStudent(student, ["net.1"], [(128,)], X[:2])
    >>> logits = model(torch.from_numpy(X[:8])); [h.shape for h in model.hints_]
    [torch.Size([8, 128])]
    """

    def __init__(
        self,
        student: nn.Module,
        layers: Sequence[str],
        teacher_shapes: Sequence[Sequence[int]],
        example: np.ndarray,
        *,
        seed: int = 0,
    ):
        super().__init__()
        self.student, self.layers = student, list(layers)
        self._captured: dict[str, torch.Tensor] = {}
        self._handles = [
            _submodule(student, name, "the student").register_forward_hook(self._keep(name))
            for name in self.layers
        ]
        with torch.no_grad():
            was = student.training
            student.eval()
            student(torch.from_numpy(np.ascontiguousarray(example)))
            student.train(was)
        shapes = [tuple(self._captured[n].shape[1:]) for n in self.layers]
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.connectors = nn.ModuleList(
                connector(s, tuple(t)) for s, t in zip(shapes, teacher_shapes, strict=True)
            )
        self.hints_: list[torch.Tensor] = []

    def _keep(self, name: str):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            self._captured[name] = _tensor_of(output)

        return hook

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.student(x)
        if self.training:
            self.hints_ = [c(self._captured[n]) for n, c in zip(self.layers, self.connectors, strict=True)]
        self._captured = {}
        return logits

    def release(self) -> nn.Module:
        """Remove the hooks from the student and return it, as it was before (now trained)."""
        for handle in self._handles:
            handle.remove()
        self._handles, self._captured, self.hints_ = [], {}, []
        return self.student

    def hint_loss(self, teacher: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mean over the hints of the MSE between connected student and teacher activations."""
        losses = [
            nn.functional.mse_loss(h.float(), t.reshape(h.shape).float())
            for h, t in zip(self.hints_, teacher, strict=True)
        ]
        return torch.stack(losses).mean()


def connector(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> nn.Module:
    """Identity for equal shapes; 1x1 conv (+ pooling to the teacher's size) between feature maps;
    otherwise flatten and a linear map onto the teacher's flattened activation."""
    if student_shape == teacher_shape:
        return nn.Identity()
    if len(student_shape) == 3 and len(teacher_shape) == 3:
        steps: list[nn.Module] = []
        if student_shape[0] != teacher_shape[0]:
            steps.append(nn.Conv2d(student_shape[0], teacher_shape[0], kernel_size=1, bias=False))
        if student_shape[1:] != teacher_shape[1:]:
            steps.append(nn.AdaptiveAvgPool2d(teacher_shape[1:]))
        return nn.Sequential(*steps)
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(student_shape), math.prod(teacher_shape)))


def _tensor_of(output: Any) -> torch.Tensor:
    """A layer's output tensor (the first one when it returns a tuple or a model output)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise ParameterError(f"a hint layer must return a tensor, got {type(output).__name__}")


__all__ = ["HintPair", "HintStudent", "connector", "resolve_hint_layers", "teacher_features"]
