"""Fusion operators: shapes (batch 1, tokens, mismatched widths), bad input named, and each one
learning a task that needs both modalities."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modelfusion.errors import FeatureWidthError, ParameterError
from modelfusion.multimodal import FUSION_OPERATORS, build_fusion

WIDTHS = {"image": 48, "text": 20, "table": 7}


def _features(batch: int, *, tokens: int | None = None) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    shape = (lambda w: (batch, tokens, w)) if tokens else (lambda w: (batch, w))
    return {name: torch.randn(*shape(w)) for name, w in WIDTHS.items()}


@pytest.mark.parametrize("name", sorted(FUSION_OPERATORS))
@pytest.mark.parametrize("batch", [1, 5])
def test_every_operator_fuses_mismatched_widths_into_out_features(name, batch):
    fuse = build_fusion(name, WIDTHS, **({} if name == "concat" else {"dim": 16}))
    out = fuse(_features(batch))
    assert out.shape == (batch, fuse.out_features) and torch.isfinite(out).all()
    expected = {"concat": sum(WIDTHS.values()), "cross_attention": 32}.get(name, 16)
    assert fuse.out_features == expected
    if name != "concat":  # concat has no parameters
        out.sum().backward()  # every parameter takes part
        assert all(p.grad is not None for p in fuse.parameters())


@pytest.mark.parametrize("name", sorted(FUSION_OPERATORS))
def test_token_sequences_are_pooled_or_attended(name):
    fuse = build_fusion(name, WIDTHS, **({} if name == "concat" else {"dim": 16}))
    assert fuse(_features(3, tokens=6)).shape == (3, fuse.out_features)


def test_cross_attention_reads_the_other_modalities_tokens():
    fuse = build_fusion("cross_attention", WIDTHS, dim=16, query="text", heads=2).eval()
    features = _features(2, tokens=4)
    before = fuse(features)
    features["image"] = features["image"] + 1.0  # only the context changes
    assert not torch.allclose(before, fuse(features))


def test_bad_input_is_named():
    fuse = build_fusion("gated", WIDTHS, dim=8)
    with pytest.raises(FeatureWidthError, match=r"missing \['table'\]"):
        fuse({"image": torch.zeros(2, 48), "text": torch.zeros(2, 20)})
    with pytest.raises(FeatureWidthError, match=r"modality 'text': expected features \[batch, 20\]"):
        fuse({**_features(2), "text": torch.zeros(2, 21)})
    with pytest.raises(ParameterError, match="not one of"):
        build_fusion("average", WIDTHS)
    with pytest.raises(ParameterError, match="at least 2 modalities"):
        build_fusion("bilinear", {"image": 4})
    with pytest.raises(ParameterError, match="condition 'audio' is not a modality"):
        build_fusion("film", WIDTHS, condition="audio")
    with pytest.raises(ParameterError, match="must divide by heads"):
        build_fusion("cross_attention", WIDTHS, dim=10, heads=4)
    with pytest.raises(ParameterError, match="fusion 'sum'"):
        build_fusion("sum", WIDTHS, heads=2)
    with pytest.raises(ParameterError, match="width must be a positive int"):
        build_fusion("concat", {"image": 0, "text": 3})


def _interaction_task(n: int = 256, k: int = 4):
    """Modality a shows class i, modality b class j (noisy codes); the label is (i + j) mod k:
    either modality alone says nothing about it."""
    g = torch.Generator().manual_seed(0)
    codes_a, codes_b = torch.randn(k, 12, generator=g), torch.randn(k, 9, generator=g)
    i, j = torch.randint(0, k, (n,), generator=g), torch.randint(0, k, (n,), generator=g)
    a = codes_a[i] + 0.1 * torch.randn(n, 12, generator=g)
    b = codes_b[j] + 0.1 * torch.randn(n, 9, generator=g)
    return {"a": a, "b": b}, (i + j) % k


@pytest.mark.parametrize("name", sorted(FUSION_OPERATORS))
def test_each_operator_learns_a_label_that_needs_both_modalities(name):
    features, y = _interaction_task()
    torch.manual_seed(0)
    fuse = build_fusion(name, {"a": 12, "b": 9}, **({} if name == "concat" else {"dim": 32}))
    model = nn.ModuleDict(
        {"fuse": fuse, "head": nn.Sequential(nn.Linear(fuse.out_features, 64), nn.ReLU(), nn.Linear(64, 4))}
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model["head"](model["fuse"](features)), y)
        loss.backward()
        optimizer.step()
    accuracy = (model["head"](model["fuse"](features)).argmax(1) == y).float().mean()
    assert accuracy > 0.95, (name, float(accuracy))  # chance is 0.25
