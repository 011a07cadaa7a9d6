"""Standard batch preprocessors and build_preprocessor."""

from __future__ import annotations

import numpy as np
import pytest

from modelfusion.data import (
    DataError,
    DataFileNotFoundError,
    build_preprocessor,
    image_preprocessor,
    reshape_preprocessor,
    text_preprocessor,
)


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    tokenizers = pytest.importorskip("tokenizers")
    pytest.importorskip("transformers")
    from tokenizers import models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "a": 2, "great": 3, "film": 4, "dull": 5}
    tok = tokenizers.Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    folder = tmp_path_factory.mktemp("tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(
        folder
    )
    return folder / "tokenizer.json"


def test_image_preprocessor_accepts_nhwc_uint8_and_returns_nchw_float32():
    prep = image_preprocessor(size=16, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    out = prep(np.full((2, 8, 10, 3), 255, np.uint8))
    assert out.shape == (2, 3, 16, 16) and out.dtype == np.float32
    np.testing.assert_allclose(out, 1.0, atol=1e-5)


def test_image_preprocessor_keeps_nchw_and_can_emit_channels_last():
    batch = np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float64)
    np.testing.assert_allclose(image_preprocessor()(batch), batch, atol=1e-6)
    assert image_preprocessor(size=(4, 6), channels_first=False)(batch).shape == (4, 4, 6, 1)
    assert image_preprocessor(size=4)([np.zeros((8, 8, 3)), np.zeros((5, 7, 3))]).shape == (2, 3, 4, 4)


def test_image_preprocessor_rejects_mean_of_the_wrong_length():
    with pytest.raises(DataError, match="mean/std have 3 values for 1-channel images"):
        image_preprocessor(mean=[0.1, 0.2, 0.3], std=[1, 1, 1])(np.zeros((1, 1, 4, 4), np.float32))


def test_reshape_preprocessor_turns_flat_digits_into_images():
    out = reshape_preprocessor([1, 8, 8])(np.zeros((5, 64), np.float32))
    assert out.shape == (5, 1, 8, 8) and out.dtype == np.float32
    with pytest.raises(DataError, match="each sample has 63 values, the shape holds 64"):
        reshape_preprocessor([1, 8, 8])(np.zeros((5, 63)))


def test_text_preprocessor_from_a_tokenizer_file_pads_and_truncates(tokenizer_file):
    prep = text_preprocessor(tokenizer_file, max_length=5)
    out = prep(["a great film", "dull a a a a a a a", "unknown"])
    assert set(out) == {"input_ids", "attention_mask"}
    assert all(v.dtype == np.int64 and v.shape == (3, 5) for v in out.values())
    assert out["input_ids"][0].tolist() == [2, 3, 4, 0, 0]
    assert out["attention_mask"][0].tolist() == [1, 1, 1, 0, 0]
    assert out["input_ids"][2, 0] == 1  # [UNK]


def test_text_preprocessor_from_a_tokenizer_folder(tokenizer_file):
    out = text_preprocessor(tokenizer_file.parent, max_length=4, padding="longest")(["a", "a great"])
    assert out["input_ids"].tolist() == [[2, 0], [2, 3]]


def test_text_preprocessor_missing_tokenizer_file(tmp_path):
    with pytest.raises(DataFileNotFoundError, match="tokenizer .*nope.json' does not exist"):
        text_preprocessor(tmp_path / "nope.json")


def test_build_preprocessor_chains_steps_in_order():
    prep = build_preprocessor({"reshape": [1, 8, 8], "image": {"size": 4}})
    out = prep(np.zeros((3, 64), np.float32))
    assert out.shape == (3, 1, 4, 4) and out.dtype == np.float32
    assert build_preprocessor("flatten")(np.zeros((2, 1, 8, 8))).shape == (2, 64)
    assert build_preprocessor([{"reshape": [8, 8]}, "flatten"])(np.zeros((2, 64))).shape == (2, 64)
    assert build_preprocessor(None) is None


def test_build_preprocessor_text_resolves_the_tokenizer_against_base_dir(tokenizer_file):
    prep = build_preprocessor(
        {"text": {"tokenizer": "tokenizer.json", "max_length": 3}}, base_dir=tokenizer_file.parent
    )
    assert prep(["a great film dull"])["input_ids"].tolist() == [[2, 3, 4]]


def test_build_preprocessor_unknown_key_lists_valid_keys():
    with pytest.raises(
        ValueError, match=r"unknown preprocessing step 'resize'.*valid steps: flatten, image, reshape, text"
    ):
        build_preprocessor({"resize": 224})
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'sise' for preprocess.image"):
        build_preprocessor({"image": {"sise": 224}})
    with pytest.raises(ValueError, match="a string step must be 'flatten'"):
        build_preprocessor("normalize")
