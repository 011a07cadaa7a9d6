"""FusedModule: the torch form of a fused model (``FusedModel.to_torch()``), one ``nn.Module``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from modelfusion.members.base import Member
from modelfusion.outputs import torch_to_proba


class FusedModule(nn.Module):
    """Torch form of a fused model: preprocess, run members, convert to probabilities, apply the rule.

    ``preprocess`` holds one module per member (default identity); ``columns`` one column
    order per member (None keeps the member's order).

    Examples
    --------
    >>> module = fused.to_torch()
    >>> module(torch.randn(4, 64)).shape
    torch.Size([4, 10])
    """

    def __init__(
        self,
        members: Sequence[Member],
        rule: nn.Module,
        preprocess: Sequence[nn.Module] | None = None,
        columns: Sequence[Sequence[int] | None] | None = None,
    ):
        super().__init__()
        self.members = nn.ModuleList(members)  # type: ignore[arg-type]
        self.preprocess = nn.ModuleList(preprocess or [nn.Identity() for _ in members])
        self.columns = list(columns or [None] * len(members))
        self.kinds = [m.output_kind for m in members]
        self.task = members[0].task
        self.rule = rule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rule(self.member_scores(x))

    def member_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's probabilities (values for regression), columns aligned: [members, batch, outputs]."""
        scores = []
        for member, prep, kind, cols in zip(self.members, self.preprocess, self.kinds, self.columns):
            out = member(prep(x))
            out = out if self.task == "regression" else torch_to_proba(out, kind, self.task)
            scores.append(out if cols is None else out[:, list(cols)])
        return torch.stack(scores, dim=0)
