"""Small networks the member tests rebuild by import path (``tests.members.architectures:make_mlp``)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def make_mlp(n_inputs: int = 64, n_hidden: int = 32, n_classes: int = 10, seed: int = 0) -> nn.Module:
    """A seeded two-layer perceptron for the 8x8 digits."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_inputs, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_classes))


class TokenBag(nn.Module):
    """Mean of token embeddings, then a linear head: takes int64 token ids [samples, length]."""

    def __init__(self, vocab_size: int = 20, dim: int = 8, n_classes: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(vocab_size, dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(ids).mean(dim=1))


def shift_by_one(x: np.ndarray) -> np.ndarray:
    """A user function inside a scikit-learn pipeline: skops does not trust it by default."""
    return x + 1.0
