"""MultimodalFusion built from encoders and a fusion operator, trained on the training engine, on
the built-in digit-instruction task that neither modality solves alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from modelfusion.errors import FeatureWidthError, ParameterError
from modelfusion.examples.digit_instructions import digit_instructions
from modelfusion.multimodal import MultimodalFusion
from modelfusion.multimodal.data import ModalityDataset
from modelfusion.multimodal.encoders import ModuleEncoder, TabularEncoder, WordEncoder
from modelfusion.training import Trainer


@pytest.fixture(scope="module")
def task():
    t = digit_instructions(per_image=3, seed=0)
    images = np.arange(len(t["labels"])) // 3  # split by image: test digits never seen in training
    test_images = set(np.random.default_rng(0).permutation(images.max() + 1)[:500])
    test = np.array([i in test_images for i in images])
    data = ModalityDataset({"image": t["images"], "text": t["texts"]}, t["labels"])
    return t, data.subset(np.flatnonzero(~test)), data.subset(np.flatnonzero(test))


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
    )


def _accuracy(out: torch.Tensor, y: torch.Tensor) -> float:
    return float((out.argmax(1) == y).float().mean())


def _train(task, modalities, fusion="gated", epochs=15) -> float:
    t, train, test = task
    torch.manual_seed(0)
    encoders = {}
    if "image" in modalities:
        encoders["image"] = ModuleEncoder(_cnn(), example=torch.zeros(1, 1, 8, 8))
    if "text" in modalities:
        encoders["text"] = WordEncoder(t["vocabulary"], width=32)
    model = MultimodalFusion(encoders=encoders, fusion=fusion, dim=64, num_classes=10)
    model.classifier = nn.Sequential(nn.Linear(model.fusion.out_features, 128), nn.ReLU(), nn.Linear(128, 10))
    options = dict(lr=3e-3, batch_size=64, max_epochs=epochs, seed=0, device="cpu", progress=False)
    trainer = Trainer(model, nn.functional.cross_entropy, metrics={"accuracy": _accuracy}, **options)
    return trainer.fit(train, test).history_[-1]["accuracy"]


def test_the_fused_model_solves_what_neither_modality_can(task):
    fused = _train(task, ("image", "text"))
    image_only = _train(task, ("image",), fusion="concat", epochs=5)
    text_only = _train(task, ("text",), fusion="concat", epochs=5)
    assert fused > 0.85, fused  # chance is 0.10; 30 epochs reach 0.97 (benchmarks/multimodal_digits.py)
    assert image_only < 0.3 and text_only < 0.3, (image_only, text_only)


def test_widths_are_probed_and_a_missing_modality_is_named(task):
    t, train, _ = task
    encoders = {
        "image": ModuleEncoder(_cnn(), example=torch.zeros(1, 1, 8, 8)),
        "table": TabularEncoder(5, width=24),
    }
    assert encoders["image"].width == 128 and encoders["table"].width == 24
    model = MultimodalFusion(encoders=encoders, fusion="film", dim=32, num_classes=10)
    assert model({"image": torch.zeros(2, 1, 8, 8), "table": torch.zeros(2, 5)}).shape == (2, 10)
    with pytest.raises(FeatureWidthError, match=r"the batch has no \['table'\]"):
        model({"image": torch.zeros(2, 1, 8, 8)})
    with pytest.raises(ParameterError, match="pass example= .* or width="):
        ModuleEncoder(nn.Linear(3, 4))
    with pytest.raises(ParameterError, match="probing its width failed"):
        ModuleEncoder(nn.Linear(3, 4), example=torch.zeros(1, 5))
    with pytest.raises(FeatureWidthError, match="no probed width"):
        MultimodalFusion(encoders={"image": nn.Linear(3, 4)}, num_classes=2)
