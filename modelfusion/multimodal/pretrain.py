"""Self-supervised pretraining of a ViT image encoder by masked image modelling (MAE or SimMIM).

The objectives are vit-pytorch's ``MAE`` and ``SimMIM`` (the tutorials' reference), trained by the
shared :class:`~modelfusion.training.Trainer`. They read a ViT through a few attributes
(``to_patch_embedding``, ``pos_embedding`` with a class-token slot, ``transformer``);
:class:`MaskedImageView` presents a vit-pytorch ``ViT`` (either pooling) or a timm
``VisionTransformer`` that way, sharing its parameters, so pretraining trains the ViT itself.
(vit-pytorch 1.26's own ``SimMIM``, and its ``MAE`` with ``pool="cls"``, fail on its ``ViT``'s
two-dimensional position table; the view gives them the shape they index.)

Examples
--------
>>> vit = ViT(image_size=16, patch_size=4, num_classes=10, dim=64, depth=4, heads=4, mlp_dim=128, channels=1)
>>> MaskedImagePretraining(vit, method="mae", max_epochs=50, seed=0).fit(images).history_[-1]["train_loss"]
0.21
>>> encoder = ImageEncoder(vit, image_size=16, in_channels=1)     # the pretrained ViT, its head removed
>>> linear_probe_accuracy(encoder, (train_x, train_y), (test_x, test_y))
0.93
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from modelfusion.errors import ParameterError

#: Masked-image objectives by name, with their default masking ratio.
METHODS = {"mae": 0.75, "simmim": 0.5}


class MaskedImageView(nn.Module):
    """A ViT as vit-pytorch's ``MAE``/``SimMIM`` read it; the parameters are the ViT's own.

    Examples
    --------
    >>> view = MaskedImageView(timm.create_model("vit_tiny_patch16_224", num_classes=0))
    >>> MAE(encoder=view, decoder_dim=128)(images)       # a reconstruction loss; trains the timm ViT
    """

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit
        if type(vit).__module__.startswith("vit_pytorch") and hasattr(vit, "to_patch_embedding"):
            self.to_patch_embedding = vit.to_patch_embedding
            self.transformer = vit.transformer
            self._table, self._has_cls = "pos_embedding", vit.pool == "cls"
        elif hasattr(vit, "patch_embed") and hasattr(vit, "blocks"):
            self.to_patch_embedding, self.transformer = _timm_parts(vit)
            self._table, self._has_cls = "pos_embed", vit.cls_token is not None
        else:
            raise ParameterError(
                f"MAE/SimMIM pretrain a ViT (vit-pytorch ViT or timm VisionTransformer), got {type(vit).__name__}"
            )
        self.pool = "cls"  # the objectives then skip the class-token slot of pos_embedding

    @property
    def pos_embedding(self) -> torch.Tensor:
        """[1, 1 + patches, dim]: the ViT's table, with a zero class-token slot when it has none."""
        table = getattr(self.vit, self._table)
        table = table if table.dim() == 3 else table.unsqueeze(0)
        if not self._has_cls:
            table = torch.cat([table.new_zeros(1, 1, table.shape[-1]), table], dim=1)
        return table


class MaskedImagePretraining:
    """Pretrain ``vit`` in place on unlabelled images with MAE (mask 75%, reconstruct the masked
    patches through a small decoder) or SimMIM (mask 50%, predict them with a linear head).

    Parameters
    ----------
    vit : a vit-pytorch ``ViT`` or a timm ``VisionTransformer`` (see :class:`MaskedImageView`).
    method : ``"mae"`` or ``"simmim"``.
    masking_ratio : the share of patches masked (default 0.75 for MAE, 0.5 for SimMIM).
    decoder_dim, decoder_depth : MAE's decoder.
    **trainer : options of :class:`~modelfusion.training.Trainer` (``max_epochs``, ``lr``,
        ``batch_size``, ``seed``, ``checkpoint_dir``...); the masks are drawn from ``seed``.

    Attributes
    ----------
    objective_ : the trained vit-pytorch ``MAE``/``SimMIM`` module (decoder included).
    history_ : the Trainer's history (``train_loss`` is the reconstruction loss).

    Examples
    --------
    >>> MaskedImagePretraining(vit, method="simmim", max_epochs=20, seed=0).fit(images)
    """

    def __init__(
        self,
        vit: nn.Module,
        *,
        method: str = "mae",
        masking_ratio: float | None = None,
        decoder_dim: int = 64,
        decoder_depth: int = 1,
        **trainer: Any,
    ):
        if method not in METHODS:
            raise ParameterError(f"method={method!r} is not one of {', '.join(METHODS)}")
        ratio = METHODS[method] if masking_ratio is None else masking_ratio
        if not 0 < ratio < 1:
            raise ParameterError(f"masking_ratio must be in (0, 1), got {masking_ratio!r}")
        self.vit, self.method, self.masking_ratio = vit, method, ratio
        self.decoder_dim, self.decoder_depth, self.trainer = decoder_dim, decoder_depth, dict(trainer)

    def fit(self, images: Any) -> MaskedImagePretraining:
        """Train on ``images`` [n, channels, height, width] (array, tensor or a Dataset of them)."""
        from modelfusion.training import Trainer

        objective = self._objective()
        data = images if isinstance(images, torch.utils.data.Dataset) else (_images(images),)
        fitted = Trainer(objective, _reconstruction_loss, **self.trainer).fit(data)
        self.objective_, self.history_ = objective, fitted.history_
        return self

    def _objective(self) -> nn.Module:
        from modelfusion.dependencies import require

        require("vit_pytorch", purpose=f"{self.method.upper()} pretraining", extra="multimodal")
        view = MaskedImageView(self.vit)
        if self.method == "mae":
            from vit_pytorch.mae import MAE

            dim = self.decoder_dim
            return MAE(
                encoder=view,
                decoder_dim=dim,
                masking_ratio=self.masking_ratio,
                decoder_depth=self.decoder_depth,
                decoder_heads=max(1, dim // 32),
                decoder_dim_head=32,
            )
        from vit_pytorch.simmim import SimMIM

        return SimMIM(encoder=view, masking_ratio=self.masking_ratio)


def linear_probe_accuracy(
    encoder: nn.Module,
    train: tuple[Any, Sequence[Any]],
    test: tuple[Any, Sequence[Any]],
    *,
    batch_size: int = 256,
    seed: int = 0,
) -> float:
    """Test accuracy of a logistic regression on the frozen ``encoder``'s features.

    ``train`` and ``test`` are ``(inputs, labels)``; features are standardised on the training rows.

    Examples
    --------
    >>> linear_probe_accuracy(ImageEncoder(vit, image_size=16, in_channels=1), (x_tr, y_tr), (x_te, y_te))
    0.93
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    probe.fit(features(encoder, train[0], batch_size=batch_size), np.asarray(train[1]))
    return float(probe.score(features(encoder, test[0], batch_size=batch_size), np.asarray(test[1])))


def features(encoder: nn.Module, inputs: Any, *, batch_size: int = 256) -> np.ndarray:
    """``encoder``'s output on ``inputs`` in eval mode, batch by batch, as a [n, width] array."""
    x = _images(inputs)
    was = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            out = [encoder(x[i : i + batch_size]).flatten(1) for i in range(0, len(x), batch_size)]
    finally:
        encoder.train(was)
    return torch.cat(out).cpu().numpy()


def _reconstruction_loss(loss: torch.Tensor) -> torch.Tensor:
    """The objectives return their loss as their output."""
    return loss


def _images(images: Any) -> torch.Tensor:
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    if x.dim() != 4:
        raise ParameterError(f"images must be [n, channels, height, width], got shape {list(x.shape)}")
    return x.float()


def _timm_parts(vit: nn.Module) -> tuple[nn.Module, nn.Module]:
    """A timm ViT's patch embedding as (patchify, -, linear, norm) and its blocks as one transformer."""
    from einops.layers.torch import Rearrange

    embed: Any = vit.patch_embed
    if getattr(vit, "no_embed_class", False) or getattr(vit, "num_prefix_tokens", 1) > 1:
        raise ParameterError(
            f"{type(vit).__name__}: MAE/SimMIM need a position table over the class token and the "
            "patches (no register tokens, no_embed_class=False)"
        )
    p1, p2 = embed.patch_size
    patchify = Rearrange("b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p1, p2=p2)
    patches = nn.Sequential(patchify, nn.Identity(), _PatchProjection(embed.proj), embed.norm)
    parts: Any = vit
    return patches, nn.Sequential(parts.norm_pre, parts.blocks, parts.norm)


class _PatchProjection(nn.Module):
    """A patch-embedding convolution applied to flattened patches (``(p1 p2 c)`` order) as a linear map."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    @property
    def weight(self) -> torch.Tensor:
        """[dim, p1 * p2 * channels], the convolution's kernel in the patches' order."""
        return self.conv.weight.permute(0, 2, 3, 1).flatten(1)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(patches, self.weight, self.conv.bias)


__all__ = ["METHODS", "MaskedImagePretraining", "MaskedImageView", "features", "linear_probe_accuracy"]
