"""Late fusion: a head per modality fused by prediction-level strategies; it helps when each
modality carries the label, and stays at chance when only their combination does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from modelfusion.errors import FeatureWidthError, ParameterError
from modelfusion.multimodal import ModalityDataset, ModuleEncoder, TabularEncoder, WordEncoder
from modelfusion.multimodal.late import LateFusion, late_fusion_loss
from modelfusion.training import Trainer

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def noisy_views(seed=0):
    """Pixels with heavy noise, and a digit name that is wrong 40% of the time: each alone is partial."""
    rng = np.random.default_rng(seed)
    X, y = load_digits(return_X_y=True)
    pixels = (X / 16.0 + rng.normal(0, 0.6, X.shape)).astype(np.float32)
    wrong = rng.random(len(y)) < 0.4
    words = [NAMES[(d + rng.integers(1, 10)) % 10] if w else NAMES[d] for d, w in zip(y, wrong)]
    data = ModalityDataset({"pixels": pixels, "text": words}, y)
    order = rng.permutation(len(y))
    return data.subset(order[:1000]), data.subset(order[1000:1300]), data.subset(order[1300:])


def model():
    torch.manual_seed(0)
    return LateFusion(
        encoders={"pixels": TabularEncoder(64, width=32), "text": WordEncoder(list(NAMES), width=16)},
        num_classes=10,
    )


def accuracy(probs, data):
    return float((probs.argmax(1) == data.labels.numpy()).mean())


def test_late_fusion_beats_each_modality_alone_when_each_carries_the_label():
    train, val, test = noisy_views()
    late = model()
    Trainer(late, late_fusion_loss, lr=3e-3, max_epochs=15, batch_size=64, seed=0).fit(train)
    heads = late.member_probabilities(test)
    assert heads.shape == (2, len(test), 10)
    single = max(accuracy(h, test) for h in heads)
    for strategy in ("mean", "weighted"):
        fused = late.fit_strategy(val, strategy=strategy).predict_proba(test)
        np.testing.assert_allclose(fused.sum(axis=1), 1, atol=1e-5)
        assert accuracy(fused, test) > single + 0.03, strategy


def test_late_fusion_loss_is_the_mean_of_the_heads_cross_entropies():
    logits, y = torch.randn(5, 2, 3), torch.tensor([0, 1, 2, 1, 0])
    expected = (
        nn.functional.cross_entropy(logits[:, 0], y) + nn.functional.cross_entropy(logits[:, 1], y)
    ) / 2
    torch.testing.assert_close(late_fusion_loss(logits, y), expected)


def test_bad_late_fusion_input_is_named():
    with pytest.raises(FeatureWidthError, match="no probed width"):
        LateFusion(encoders={"a": nn.Linear(2, 2)}, num_classes=3)
    late = model()
    with pytest.raises(FeatureWidthError, match=r"the batch has no \['text'\]"):
        late({"pixels": torch.zeros(2, 64)})
    with pytest.raises(ParameterError, match="fit_strategy"):
        late.predict_proba({"pixels": torch.zeros(2, 64), "text": ["one", "two"]})
    with pytest.raises(ParameterError, match="num_classes"):
        LateFusion(encoders={"a": ModuleEncoder(nn.Identity(), width=2)}, num_classes=1)
