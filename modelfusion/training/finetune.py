"""Fine-tune a whole all-torch ensemble jointly: every member's weights, trained through the fused output.

The tutorial's "deep model ensemble" loop, on the one training engine: the members and the
strategy's rule form one module (:meth:`~modelfusion.fused.FusedModel.to_torch`), trained on the
log-loss of the *fused* probabilities (the squared error of the fused values for regression), so
the members learn to complement each other rather than each fitting alone.

Examples
--------
>>> fused = FusedModel([cnn, mlp], Mean().fit(val_preds))
>>> trainer = finetune_ensemble(fused, (X_train, y_train), (X_val, y_val), max_epochs=3, lr=1e-4)
>>> trainer.history_[-1]["val_loss"]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from modelfusion.errors import ParameterError
from modelfusion.fused import FusedModel
from modelfusion.outputs import EPS
from modelfusion.predictions import class_indices
from modelfusion.training.trainer import Trainer


def finetune_ensemble(fused: FusedModel, train: Any, val: Any = None, **trainer_options: Any) -> Trainer:
    """Train every member of ``fused`` jointly on the loss of the fused output; returns the fitted Trainer.

    ``train`` and ``val`` are ``(X, y)`` with raw labels (mapped to the fused model's classes);
    ``trainer_options`` go to :class:`Trainer` (``lr``, ``max_epochs``, ``checkpoint_dir``...). The
    members are updated in place; the strategy's learned weights stay as they were.

    Raises :class:`ParameterError` when a member is not a torch module, or the strategy has no
    tensor form.
    """
    not_torch = [m.name for m in fused.members if not isinstance(m, nn.Module)]
    if not_torch:
        raise ParameterError(
            f"finetune_ensemble trains torch members only; {', '.join(not_torch)} "
            f"{'is' if len(not_torch) == 1 else 'are'} not (fine-tune them alone, or distil the ensemble instead)"
        )
    module = fused.to_torch()
    loss = _regression_loss if fused.task == "regression" else _fused_nll
    trainer = Trainer(module, loss, **trainer_options)
    return trainer.fit(_encoded(fused, train), None if val is None else _encoded(fused, val))


def _encoded(fused: FusedModel, data: Any) -> tuple[np.ndarray, np.ndarray]:
    X, y = data
    if fused.task == "regression":
        return np.asarray(X), np.asarray(y, dtype=np.float32).reshape(len(y), -1)
    if fused.classes is None:
        return np.asarray(X), np.asarray(y).astype(np.int64)
    return np.asarray(X), class_indices(y, fused.classes, whose="the fused model's")


def _fused_nll(proba: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Log-loss of fused probabilities (the module outputs probabilities, not logits)."""
    return nn.functional.nll_loss(torch.log(proba.clamp_min(EPS)), y)


def _regression_loss(values: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(values, y)
