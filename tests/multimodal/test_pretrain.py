"""MAE and SimMIM pretraining of vit-pytorch and timm ViTs: the objectives train the ViT itself,
reproducibly, and the pretrained ViT serves as an image encoder in a fusion model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from modelfusion.errors import ParameterError
from modelfusion.multimodal import ModalityDataset, MultimodalFusion, WordEncoder
from modelfusion.multimodal.encoders import ImageEncoder
from modelfusion.multimodal.pretrain import MaskedImagePretraining, MaskedImageView, linear_probe_accuracy
from modelfusion.multimodal.specs import build_encoder
from modelfusion.training import Trainer

vit_pytorch = pytest.importorskip("vit_pytorch")
timm = pytest.importorskip("timm")


def tiny_vit(pool: str = "cls") -> nn.Module:
    torch.manual_seed(0)
    return vit_pytorch.ViT(
        image_size=16,
        patch_size=4,
        num_classes=10,
        dim=32,
        depth=2,
        heads=2,
        mlp_dim=64,
        channels=1,
        pool=pool,
    )


def tiny_timm_vit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=0,
        img_size=16,
        patch_size=4,
        in_chans=1,
        embed_dim=32,
        depth=2,
        num_heads=2,
    )


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    x = torch.from_numpy(load_digits().images[:96] / 16.0).float().unsqueeze(1)
    return nn.functional.interpolate(x, scale_factor=2)


@pytest.mark.parametrize("method", ["mae", "simmim"])
@pytest.mark.parametrize("make", [lambda: tiny_vit("cls"), lambda: tiny_vit("mean"), tiny_timm_vit])
def test_pretraining_lowers_the_loss_and_trains_the_vit_in_place(method, make, images):
    vit = make()
    before = [p.detach().clone() for p in vit.parameters()]
    fitted = MaskedImagePretraining(vit, method=method, max_epochs=4, batch_size=32, seed=0).fit(images)
    losses = [row["train_loss"] for row in fitted.history_]
    assert fitted is not None and losses[-1] < losses[0]
    changed = sum(not torch.equal(a, b) for a, b in zip(before, vit.parameters()))
    assert changed > len(before) // 2  # the encoder itself learned, not only the decoder


def test_pretraining_is_reproducible_from_its_seed(images):
    runs = [
        MaskedImagePretraining(tiny_vit(), method="mae", max_epochs=2, batch_size=32, seed=3)
        .fit(images)
        .history_
        for _ in range(2)
    ]
    assert [r["train_loss"] for r in runs[0]] == [r["train_loss"] for r in runs[1]]


def test_timm_view_embeds_patches_exactly_like_the_vit(images):
    vit = tiny_timm_vit()
    view = MaskedImageView(vit)
    torch.testing.assert_close(
        view.to_patch_embedding(images[:4]), vit.patch_embed(images[:4]), rtol=0, atol=1e-6
    )
    assert view.pos_embedding.shape == (1, 17, 32)  # class token + 16 patches
    assert MaskedImageView(tiny_vit("mean")).pos_embedding.shape == (1, 17, 32)  # a zero class slot added


@pytest.mark.parametrize("make", [tiny_vit, tiny_timm_vit], ids=["vit-pytorch", "timm"])
def test_pretrained_vit_is_fine_tuned_inside_a_fusion_model(make, images):
    vit = make()
    MaskedImagePretraining(vit, method="simmim", max_epochs=1, batch_size=32, seed=0).fit(images)
    encoder = ImageEncoder(vit, image_size=16, in_channels=1)
    assert encoder.width == 32 and encoder(images[:3]).shape == (3, 32)  # vit-pytorch's mlp_head removed
    encoder.freeze()
    encoder.unfreeze(last=1)  # the last transformer block and what follows it
    model = MultimodalFusion(
        encoders={"image": encoder, "text": WordEncoder(["add", "one"], width=8)},
        fusion="gated",
        dim=16,
        num_classes=10,
    )
    pretrained = {k: v.clone() for k, v in vit.state_dict().items()}
    texts = ["add one", "one"] * 16
    labels = torch.from_numpy(load_digits().target[:32])
    data = ModalityDataset({"image": images[:32], "text": texts}, labels)
    Trainer(model, nn.functional.cross_entropy, lr=1e-2, batch_size=16, max_epochs=3, seed=0).fit(data)
    changed = {k for k, v in vit.state_dict().items() if not torch.equal(v, pretrained[k])}
    first_block = next(k for k in pretrained if ".0." in k and ("transformer" in k or "blocks" in k))
    assert changed and first_block not in changed  # the last block trained, the frozen first did not
    assert model({"image": images[:2], "text": ["add one", "one"]}).shape == (2, 10)


def test_vit_by_factory_path_round_trips_through_its_spec():
    encoder = ImageEncoder(
        "vit_pytorch.vit:ViT",
        image_size=16,
        in_channels=1,
        patch_size=4,
        num_classes=1,
        dim=32,
        depth=2,
        heads=2,
        mlp_dim=64,
    )
    twin = build_encoder(encoder.spec(), files=None)
    twin.load_state_dict(encoder.state_dict())
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(twin.eval()(x), encoder.eval()(x))


def test_linear_probe_scores_features_on_held_out_rows():
    digits = load_digits()
    x = torch.from_numpy(digits.images / 16.0).float().unsqueeze(1)[:400]
    y = digits.target[:400]
    flat = nn.Flatten()
    accuracy = linear_probe_accuracy(flat, (x[:300], y[:300]), (x[300:], y[300:]))
    assert 0.85 < accuracy <= 1.0  # raw pixels of digits are linearly separable enough


def test_bad_pretraining_arguments_are_named(images):
    with pytest.raises(ParameterError, match="method='bert'"):
        MaskedImagePretraining(tiny_vit(), method="bert")
    with pytest.raises(ParameterError, match="masking_ratio"):
        MaskedImagePretraining(tiny_vit(), masking_ratio=1.0)
    with pytest.raises(ParameterError, match="pretrain a ViT"):
        MaskedImagePretraining(nn.Conv2d(1, 4, 3), max_epochs=1).fit(images)
    with pytest.raises(ParameterError, match=r"\[n, channels, height, width\]"):
        MaskedImagePretraining(tiny_vit(), max_epochs=1).fit(np.zeros((4, 16, 16), dtype=np.float32))
