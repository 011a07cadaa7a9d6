"""Make a torch student smaller: magnitude pruning (zeros in place) and structured channel pruning (Torch-Pruning).

Two different promises, reported as such. :func:`prune_magnitude` zeroes the smallest weights
(global or per layer) and makes it permanent: the tensors keep their shapes, so the file shrinks
only when stored sparse and **latency does not change** on dense kernels. :func:`prune_channels`
removes whole channels and neurons through Torch-Pruning's dependency graph (DepGraph): the layers
really get narrower, so the model is smaller and faster; fine-tune it afterwards (for instance by
distilling from the ensemble again, :class:`~modelfusion.distill.Distiller`).

Examples
--------
>>> report = prune_channels(student, X_train[:2], ratio=0.5)   # 50% of the channels removed
>>> report.parameters_after / report.parameters_before
0.27
>>> Distiller(fused, student, max_epochs=5).fit((X_train, y_train))  # recover the accuracy
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from modelfusion.dependencies import require
from modelfusion.errors import ParameterError

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class PruneReport:
    """What pruning changed: parameters, zero weights, bytes dense and sparse, and what it does not change.

    ``sparse_bytes`` is the size of the pruned layers' weights stored as (value, int32 index) pairs
    of their non-zeros; ``dense_bytes`` their size as float32 tensors.
    """

    method: str
    ratio: float
    parameters_before: int
    parameters_after: int
    zero_fraction: float
    dense_bytes: int
    sparse_bytes: int
    note: str


def prune_magnitude(
    module: nn.Module, amount: float, *, scope: Literal["global", "layer"] = "global"
) -> PruneReport:
    """Zero the ``amount`` fraction of smallest-magnitude weights of every Linear/Conv layer, permanently.

    ``scope="global"`` ranks all those weights together (layers lose different fractions);
    ``"layer"`` prunes each layer by ``amount``. Biases are kept. The module is changed in place.
    """
    _check_ratio(amount, "amount")
    if scope not in ("global", "layer"):
        raise ParameterError(f"scope={scope!r} is not one of global, layer")
    layers = [(m, "weight") for m in module.modules() if isinstance(m, PRUNABLE)]
    if not layers:
        raise ParameterError(f"{type(module).__name__} has no Linear or Conv layer to prune")
    before = _count(module)
    if scope == "global":
        prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=amount)
    else:
        for layer, name in layers:
            prune.l1_unstructured(layer, name, amount=amount)
    for layer, name in layers:
        prune.remove(layer, name)  # permanent: the zeros live in .weight, no mask or hook remains
    weights = [layer.weight.detach() for layer, _ in layers]
    total = sum(w.numel() for w in weights)
    nonzero = sum(int(torch.count_nonzero(w)) for w in weights)
    return PruneReport(
        method=f"magnitude ({scope})",
        ratio=amount,
        parameters_before=before,
        parameters_after=_count(module),
        zero_fraction=1.0 - nonzero / total,
        dense_bytes=4 * total,
        sparse_bytes=8 * nonzero,
        note="weights zeroed in place: same shapes, so latency on dense kernels does not change; "
        "the file shrinks only when stored sparse",
    )


def prune_channels(
    module: nn.Module,
    example_input: Any,
    ratio: float,
    *,
    ignored: list[nn.Module] | None = None,
    global_pruning: bool = False,
) -> PruneReport:
    """Remove ``ratio`` of the channels (neurons) of every prunable layer, physically, with Torch-Pruning.

    ``example_input`` is a batch the module takes (its dependency graph is traced on it). The
    output layer is never pruned (default ``ignored``: the last Linear or Conv, so the number of
    classes stays). The module is changed in place; fine-tune it afterwards.
    """
    _check_ratio(ratio, "ratio")
    tp = require(
        "torch_pruning", purpose="structured channel pruning", extra="prune", package="torch-pruning"
    )
    x = (
        example_input
        if isinstance(example_input, torch.Tensor)
        else torch.as_tensor(np.asarray(example_input))
    )
    layers = [m for m in module.modules() if isinstance(m, PRUNABLE)]
    if not layers:
        raise ParameterError(f"{type(module).__name__} has no Linear or Conv layer to prune")
    with torch.no_grad():
        width = module.eval()(x).shape[1:]
    before = _count(module)
    pruner = tp.pruner.MetaPruner(
        module,
        x,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        global_pruning=global_pruning,
        ignored_layers=ignored if ignored is not None else [layers[-1]],
    )
    pruner.step()
    with torch.no_grad():
        after_width = module(x).shape[1:]
    if after_width != width:  # pragma: no cover - the output layer is ignored
        raise ParameterError(
            f"pruning changed the output from {list(width)} to {list(after_width)}; pass ignored="
        )
    dense = 4 * sum(m.weight.numel() for m in module.modules() if isinstance(m, PRUNABLE))
    return PruneReport(
        method="channels (Torch-Pruning)",
        ratio=ratio,
        parameters_before=before,
        parameters_after=_count(module),
        zero_fraction=0.0,
        dense_bytes=dense,
        sparse_bytes=dense,
        note="channels removed: the layers are narrower, so the model is smaller and faster; fine-tune it",
    )


def _check_ratio(value: float, name: str) -> None:
    if not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise ParameterError(f"{name} must be a fraction strictly between 0 and 1, got {value!r}")


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
