"""Encoders: widths probed from tiny models built from configs (nothing downloads), pooling,
truncation with one warning, freezing and training only the last blocks."""

from __future__ import annotations

import warnings

import pytest
import torch

from modelfusion.errors import ParameterError
from modelfusion.multimodal.encoders import ImageEncoder, TabularEncoder, TextEncoder, WordEncoder
from tests.multimodal.tiny_text import WORDS


def test_a_text_encoder_probes_its_width_and_pools_with_the_mask(bert):
    model, tokenizer = bert
    cls, mean = TextEncoder(model, tokenizer), TextEncoder(model, tokenizer, pooling="mean").eval()
    assert cls.width == mean.width == 24
    out = mean(["a red apple", "two cats"])
    with torch.no_grad():
        ids = tokenizer(["two cats"], return_tensors="pt")
        alone = model(**ids).last_hidden_state.mean(dim=1)[0]
    torch.testing.assert_close(out[1], alone, atol=1e-5, rtol=0)  # padding did not enter the mean
    tokens = TextEncoder(model, tokenizer, tokens=True)(["a red apple"])
    assert tokens.shape == (1, 3, 24)


def test_texts_over_the_tokenizers_limit_are_truncated_with_one_warning(bert):
    model, tokenizer = bert
    enc = TextEncoder(model, tokenizer)
    long = " ".join(WORDS)  # 8 words, the limit is 6
    with pytest.warns(UserWarning, match="1 text.* longer than the tokenizer's limit of 6 tokens"):
        assert enc([long, "a cat"]).shape == (2, 24)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc([long])  # warned once


def test_freeze_and_unfreeze_only_the_last_blocks(bert):
    model, tokenizer = bert
    enc = TextEncoder(model, tokenizer).freeze()
    assert not any(p.requires_grad for p in enc.parameters())
    enc.unfreeze(last=1)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("body.encoder.layer.1.") for n in trainable)
    with pytest.raises(ParameterError, match="has 2 blocks"):
        enc.unfreeze(last=3)
    assert all(p.requires_grad for p in enc.unfreeze().parameters())


def test_frozen_batch_norms_keep_their_statistics_in_training():
    pytest.importorskip("torchvision")
    enc = ImageEncoder("resnet18", image_size=32).freeze().unfreeze(last=1)
    enc.train()
    before = enc.body.bn1.running_mean.clone()
    enc(torch.rand(4, 3, 32, 32) * 5)
    assert torch.equal(enc.body.bn1.running_mean, before) and not enc.body.bn1.training  # frozen stem
    assert enc.body.layer4[1].bn2.training  # the trained last block still learns its statistics


def test_image_encoders_by_torchvision_and_timm_name_drop_their_head():
    pytest.importorskip("torchvision")
    resnet = ImageEncoder("resnet18", image_size=32)
    assert resnet.width == 512 and resnet(torch.zeros(2, 3, 32, 32)).shape == (2, 512)
    pytest.importorskip("timm")
    small = ImageEncoder("resnet10t", image_size=32, in_channels=1)
    assert small(torch.zeros(2, 1, 32, 32)).shape == (2, small.width)
    with pytest.raises(ParameterError, match="neither a timm nor a torchvision model"):
        ImageEncoder("no_such_net")


def test_tabular_and_word_encoders():
    assert TabularEncoder(7, width=12)(torch.zeros(3, 7)).shape == (3, 12)
    words = WordEncoder(["add", "two"], width=8)
    out = words(["add two", "unknown words only", ""])
    assert out.shape == (3, 8)
    assert not torch.equal(out[0], out[1])
    torch.testing.assert_close(out[1], out[2])  # only unknown words, or none: the unknown vector
    with torch.no_grad():
        add, two = words.body.weight[words.index["add"]], words.body.weight[words.index["two"]]
    torch.testing.assert_close(out[0], (add + two) / 2)  # the mean of the words' vectors, padding masked
