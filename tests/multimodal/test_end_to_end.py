"""MultimodalFusion built from encoders and a fusion operator, trained on the training engine, on
the built-in digit-instruction task that neither modality solves alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modelfusion.errors import FeatureWidthError, ParameterError
from modelfusion.examples.digit_instructions import digit_instructions, instruction_model, split_by_image
from modelfusion.multimodal import MultimodalFusion
from modelfusion.multimodal.encoders import ModuleEncoder, TabularEncoder
from modelfusion.training import Trainer


@pytest.fixture(scope="module")
def task():
    t = digit_instructions(per_image=3, seed=0)
    return (t, *split_by_image(t, per_image=3, test_fraction=500 / 1797, seed=0))


def _cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())


def _accuracy(out: torch.Tensor, y: torch.Tensor) -> float:
    return float((out.argmax(1) == y).float().mean())


def _train(task, modalities, fusion="gated", epochs=15) -> float:
    t, train, test = task
    torch.manual_seed(0)
    model = instruction_model(t["vocabulary"], modalities=modalities, fusion=fusion)
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
    assert encoders["image"].width == 32 and encoders["table"].width == 24
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
