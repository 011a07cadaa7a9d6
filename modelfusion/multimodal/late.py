"""Late fusion: a classifier head per modality, their probabilities fused by any prediction-level
strategy (mean, weighted, greedy, stacking...), the baseline feature-level fusion is measured against.

The heads train together (:func:`late_fusion_loss`: the mean of their cross-entropies); the
strategy is then fitted on validation rows, exactly as for an ensemble of separate models, with
each modality a member.

Examples
--------
>>> late = LateFusion(encoders={"image": image, "text": text}, num_classes=10)
>>> Trainer(late, late_fusion_loss, max_epochs=20).fit(train)
>>> late.fit_strategy(val, strategy="weighted").predict_proba(test_batch).shape
(64, 10)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from modelfusion.errors import FeatureWidthError, ParameterError


class LateFusion(nn.Module):
    """One encoder and one linear head per modality; ``forward`` gives logits [batch, modalities, classes].

    Parameters
    ----------
    encoders : ``{modality: encoder}`` with probed widths.
    num_classes : classes of every head.
    strategy : the default of :meth:`fit_strategy`: a strategy name (``"mean"``, ``"weighted"``,
        ``"greedy"``, ``"stacking"``...) or a Strategy instance.

    Attributes
    ----------
    strategy_ : the fitted prediction-level strategy (after :meth:`fit_strategy`).

    Examples
    --------
    >>> LateFusion(encoders={"image": image, "text": text}, num_classes=3)(batch).shape
    torch.Size([8, 2, 3])
    """

    def __init__(self, encoders: Mapping[str, nn.Module], num_classes: int, *, strategy: Any = "mean"):
        super().__init__()
        widths = {name: getattr(e, "width", None) for name, e in encoders.items()}
        unknown = [n for n, w in widths.items() if not isinstance(w, int)]
        if unknown:
            raise FeatureWidthError(f"encoders {unknown} have no probed width: wrap them in an Encoder")
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ParameterError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.encoders = nn.ModuleDict(dict(encoders))
        self.heads = nn.ModuleDict({n: nn.Linear(int(w), num_classes) for n, w in widths.items()})  # type: ignore[arg-type]
        self.num_classes, self.strategy = num_classes, strategy

    def forward(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        missing = [n for n in self.encoders if n not in inputs]
        if missing:
            raise FeatureWidthError(
                f"the model has heads for {list(self.encoders)}; the batch has no {missing}"
            )
        return torch.stack([self.heads[n](self.encoders[n](inputs[n])) for n in self.encoders], dim=1)

    def member_probabilities(self, data: Any, *, batch_size: int = 256) -> np.ndarray:
        """Each head's probabilities [modalities, rows, classes] on a ModalityDataset or a raw batch."""
        from torch.utils.data import DataLoader, Dataset

        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                if isinstance(data, Dataset):
                    parts = [self(inputs) for inputs, _ in DataLoader(data, batch_size=batch_size)]
                    logits = torch.cat(parts)
                else:
                    logits = self(data)
        finally:
            self.train(was)
        return logits.softmax(dim=-1).permute(1, 0, 2).numpy()

    def fit_strategy(self, val: Any, *, strategy: Any = None) -> LateFusion:
        """Fit the prediction-level strategy on validation rows (a ModalityDataset); returns self."""
        from modelfusion.predictions import PredictionSet
        from modelfusion.strategies import Strategy, get_strategy

        rule = strategy if strategy is not None else self.strategy
        rule = rule if isinstance(rule, Strategy) else get_strategy(str(rule))
        preds = PredictionSet(self.member_probabilities(val), names=list(self.encoders), kind="proba")
        self.strategy_ = rule.fit(preds, val.labels.numpy())
        return self

    def predict_proba(self, data: Any) -> np.ndarray:
        """Fused probabilities [rows, classes] (after :meth:`fit_strategy`)."""
        if not hasattr(self, "strategy_"):
            raise ParameterError("LateFusion.predict_proba needs fit_strategy(val) first")
        from modelfusion.predictions import PredictionSet

        probs = self.member_probabilities(data)
        return self.strategy_.combine(PredictionSet(probs, names=list(self.encoders), kind="proba"))


def late_fusion_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The mean over heads of their cross-entropy (logits [batch, heads, classes])."""
    heads = logits.shape[1]
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.repeat_interleave(heads))


__all__ = ["LateFusion", "late_fusion_loss"]
