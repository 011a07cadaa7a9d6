"""Pruning: magnitude pruning made permanent and reported honestly; channel pruning that really narrows layers."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from modelfusion.compress import prune_channels, prune_magnitude
from modelfusion.errors import MissingDependencyError, ParameterError


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_magnitude_pruning_zeroes_weights_permanently_and_says_latency_is_unchanged(scope):
    net = _cnn()
    report = prune_magnitude(net, 0.6, scope=scope)
    assert report.zero_fraction == pytest.approx(0.6, abs=0.01)
    assert report.parameters_after == report.parameters_before  # same shapes
    assert (
        report.sparse_bytes < report.dense_bytes and "latency on dense kernels does not change" in report.note
    )
    assert not any(name.endswith("_orig") for name, _ in net.named_parameters())  # no mask left behind
    assert not any(m._forward_pre_hooks for m in net.modules())
    if scope == "layer":
        for layer in (net[0], net[2], net[6]):
            assert float((layer.weight == 0).float().mean()) == pytest.approx(0.6, abs=0.02)


def test_channel_pruning_removes_half_the_channels_and_keeps_the_output():
    net = _cnn()
    x = torch.randn(2, 1, 8, 8)
    report = prune_channels(net, x, ratio=0.5)
    assert (net[0].out_channels, net[2].out_channels, net[6].in_features, net[6].out_features) == (
        8,
        16,
        16,
        10,
    )
    assert net(x).shape == (2, 10)
    assert report.parameters_after < 0.35 * report.parameters_before


def test_bad_ratios_and_a_missing_torch_pruning_are_named(monkeypatch):
    with pytest.raises(ParameterError, match="ratio must be a fraction strictly between 0 and 1, got 1.5"):
        prune_channels(_cnn(), torch.randn(2, 1, 8, 8), ratio=1.5)
    with pytest.raises(ParameterError, match="amount must be a fraction strictly between 0 and 1, got 0"):
        prune_magnitude(_cnn(), 0)
    monkeypatch.setitem(sys.modules, "torch_pruning", None)
    with pytest.raises(
        MissingDependencyError, match="structured channel pruning needs torch-pruning.*modelfusion\\[prune\\]"
    ):
        prune_channels(_cnn(), torch.randn(2, 1, 8, 8), ratio=0.5)
