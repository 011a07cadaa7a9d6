"""CLIP-style contrastive alignment of two encoders, and retrieval metrics (R@1, R@5).

:class:`ContrastiveAlignment` projects both modalities into one space of width ``dim`` and scores
every pair of a batch (cosine similarity times a learned temperature); :func:`contrastive_loss` is
the symmetric cross-entropy that pulls each row's true pair to the diagonal. The encoders it
aligns are the same modules a :class:`~modelfusion.multimodal.MultimodalFusion` fine-tunes
afterwards, so alignment is an optional first objective of the same model.

Examples
--------
>>> align = ContrastiveAlignment({"image": image_encoder, "text": text_encoder}, dim=256)
>>> Trainer(align, contrastive_loss, max_epochs=10).fit(ModalityDataset(pairs, np.arange(n)))
>>> retrieval_recall(align.embed("text", captions), align.embed("image", images))
{'R@1': 0.41, 'R@5': 0.77}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from modelfusion.errors import ParameterError


class ContrastiveAlignment(nn.Module):
    """Two encoders projected into one space; ``forward`` gives the [batch, batch] similarity logits
    (rows: the first modality, columns: the second).

    Parameters
    ----------
    encoders : exactly two ``{modality: encoder}`` with probed widths.
    dim : the joint width (a linear projection per modality); None keeps the encoders' own
        outputs (their widths must agree, as CLIP towers' do).
    temperature : the initial softmax temperature (CLIP: 0.07); learned unless ``learn_temperature=False``.

    Examples
    --------
    >>> ContrastiveAlignment({"image": ImageEncoder("resnet18"), "text": text}, dim=128)(batch).shape
    torch.Size([32, 32])
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        *,
        dim: int | None = 256,
        temperature: float = 0.07,
        learn_temperature: bool = True,
    ):
        super().__init__()
        if len(encoders) != 2:
            raise ParameterError(f"contrastive alignment pairs two modalities, got {list(encoders)}")
        widths = {name: getattr(e, "width", None) for name, e in encoders.items()}
        if not all(isinstance(w, int) for w in widths.values()):
            raise ParameterError(f"encoders need probed widths (wrap them in an Encoder), got {widths}")
        if dim is None and len(set(widths.values())) != 1:
            raise ParameterError(f"dim=None needs encoders of one width, got {widths}; pass dim=")
        if not temperature > 0:
            raise ParameterError(f"temperature must be > 0, got {temperature!r}")
        self.encoders = nn.ModuleDict(dict(encoders))
        self.projections = nn.ModuleDict(
            {n: nn.Identity() if dim is None else nn.Linear(int(w), dim) for n, w in widths.items()}  # type: ignore[arg-type]
        )
        scale = torch.tensor(math.log(1.0 / temperature))
        if learn_temperature:
            self.log_scale = nn.Parameter(scale)
        else:
            self.register_buffer("log_scale", scale)
        self.modalities = list(encoders)

    def embed(self, modality: str, batch: Any) -> torch.Tensor:
        """Unit-length embeddings [batch, dim] of one modality's raw batch."""
        if modality not in self.encoders:
            raise ParameterError(f"modality {modality!r} is not one of {self.modalities}")
        features = self.projections[modality](self.encoders[modality](batch))
        return nn.functional.normalize(features, dim=-1)

    def forward(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        first, second = (self.embed(m, inputs[m]) for m in self.modalities)
        return first @ second.T * self.log_scale.clamp(max=math.log(100.0)).exp()


def contrastive_loss(logits: torch.Tensor, *_: Any) -> torch.Tensor:
    """The symmetric cross-entropy of CLIP: row i's true pair is column i (and column i's is row i).

    Extra arguments (a dataset's labels) are ignored, so it is a Trainer loss as it is.
    """
    targets = torch.arange(len(logits), device=logits.device)
    return (nn.functional.cross_entropy(logits, targets) + nn.functional.cross_entropy(logits.T, targets)) / 2


def retrieval_recall(
    queries: torch.Tensor, gallery: torch.Tensor, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """``{"R@k": share of queries whose match is among the k most similar gallery items}``; query
    i's match is gallery item i (both unit-length embeddings, e.g. from :meth:`ContrastiveAlignment.embed`).

    Examples
    --------
    >>> retrieval_recall(torch.eye(3), torch.eye(3))
    {'R@1': 1.0, 'R@5': 1.0}
    """
    if queries.shape != gallery.shape:
        raise ParameterError(
            f"queries {list(queries.shape)} and gallery {list(gallery.shape)} must pair up row by row"
        )
    return recall_at_k(queries @ gallery.T, ks)


def recall_at_k(similarity: Any, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``{"R@k": ...}`` from a similarity matrix [queries, gallery] whose diagonal holds the true
    pairs (any score: cosine, CSLS from :meth:`CCAMatcher.similarity`, ...). A tie with the true
    item counts against it: a constant matrix scores R@1 = 0, not 1.

    Examples
    --------
    >>> recall_at_k(np.array([[0.9, 0.1], [0.8, 0.2]]), ks=(1,))
    {'R@1': 0.5}
    """
    if hasattr(similarity, "detach"):  # a torch tensor (bfloat16 too)
        similarity = similarity.detach().float().cpu().numpy()
    similarity = np.asarray(similarity, dtype=np.float64)
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ParameterError(
            f"similarity must be square [queries, gallery], got shape {list(similarity.shape)}"
        )
    if not np.isfinite(similarity).all():
        raise ParameterError("similarity has NaN or infinite values")
    if not ks or any(int(k) < 1 for k in ks):
        raise ParameterError(f"ks must be ranks >= 1, got {list(ks)}")
    true = np.diag(similarity)[:, None]
    others = ~np.eye(len(similarity), dtype=bool)
    # the gallery items at or above the true one
    rank = ((similarity > true) | ((similarity == true) & others)).sum(axis=1)
    return {f"R@{k}": float((rank < k).mean()) for k in ks}


__all__ = ["ContrastiveAlignment", "contrastive_loss", "recall_at_k", "retrieval_recall"]
