"""Built-in students for distillation, sized by a width: a tabular MLP and a small image CNN.

Both are allow-listed architectures (:data:`~modelfusion.members.architectures.SAFE_FACTORIES`), so
a distilled student saves as ``weights.safetensors`` + its import path and loads from a bundle
without trust. :func:`build_student` makes one for data of a given shape and number of classes.

Examples
--------
>>> student = build_student("mlp", sample_shape=(64,), n_classes=10, width=128)
>>> student = build_student("cnn", sample_shape=(1, 28, 28), n_classes=10, width=16)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from modelfusion.errors import ParameterError

#: Built-in student names and the import path of their factory.
STUDENTS = {
    "mlp": "modelfusion.training.students:MLPStudent",
    "cnn": "modelfusion.training.students:CNNStudent",
}


class MLPStudent(nn.Module):
    """``depth`` hidden layers of ``width`` units (ReLU) from ``in_features`` to ``n_classes`` logits.

    Examples
    --------
    >>> MLPStudent(in_features=64, n_classes=10, width=128)(torch.zeros(2, 64)).shape
    torch.Size([2, 10])
    """

    def __init__(self, in_features: int, n_classes: int, width: int = 128, depth: int = 2):
        super().__init__()
        _positive(in_features=in_features, n_classes=n_classes, width=width, depth=depth)
        layers: list[nn.Module] = [nn.Flatten()]
        for i in range(depth):
            layers += [nn.Linear(in_features if i == 0 else width, width), nn.ReLU()]
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNNStudent(nn.Module):
    """Two conv blocks (``width`` and ``2 * width`` channels), global average pooling, a linear head.

    Examples
    --------
    >>> CNNStudent(in_channels=1, n_classes=10, width=16)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(self, in_channels: int, n_classes: int, width: int = 16):
        super().__init__()
        _positive(in_channels=in_channels, n_classes=n_classes, width=width)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_student(
    name: str, *, sample_shape: Sequence[int], n_classes: int, **kwargs: Any
) -> tuple[nn.Module, str, dict]:
    """A built-in student for samples of ``sample_shape``: ``(module, architecture, architecture_kwargs)``.

    ``"mlp"`` flattens any sample; ``"cnn"`` takes images ``[channels, height, width]``.
    """
    if name not in STUDENTS:
        raise ParameterError(
            f"student {name!r} is not a built-in one ({', '.join(STUDENTS)}); pass an nn.Module"
        )
    shape = tuple(int(s) for s in sample_shape)
    if name == "mlp":
        size = 1
        for s in shape:
            size *= s
        options = {"in_features": size, "n_classes": n_classes, **kwargs}
        return MLPStudent(**options), STUDENTS[name], options
    if len(shape) != 3:
        raise ParameterError(
            f"the 'cnn' student takes images [channels, height, width], got samples shaped {list(shape)}"
        )
    options = {"in_channels": shape[0], "n_classes": n_classes, **kwargs}
    return CNNStudent(**options), STUDENTS[name], options


def _positive(**values: int) -> None:
    for key, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ParameterError(f"{key} must be a positive int, got {value!r}")
