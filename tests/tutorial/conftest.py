"""Small real models for the tutorial tests (issue 6), built in seconds; nothing downloads."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before anything imports keras

import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# A tiny configuration of every vit_pytorch model the tests build: 32x32 RGB images, 3 classes.
VIT_KWARGS = dict(image_size=32, patch_size=8, num_classes=3, dim=32, depth=1, heads=2, mlp_dim=32)
WORDS = ["a", "text", "another", "film", "was", "good", "bad", "plot"]


@pytest.fixture(scope="session")
def tutorial_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tutorial_models")


@pytest.fixture(scope="session")
def image_keras_model():
    """A Keras classifier of channels-last 8x8 RGB images into 3 classes (softmax head)."""
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


@pytest.fixture(scope="session")
def keras_h5_path(image_keras_model, tutorial_dir) -> Path:
    path = tutorial_dir / "resnet50_weights.h5"
    _save_keras(image_keras_model, path)
    return path


@pytest.fixture(scope="session")
def keras_file_path(image_keras_model, tutorial_dir) -> Path:
    path = tutorial_dir / "classifier.keras"
    _save_keras(image_keras_model, path)
    return path


def _save_keras(model, path: Path) -> None:
    with warnings.catch_warnings():  # keras' own numpy-2 DeprecationWarning while writing variables
        warnings.simplefilter("ignore", DeprecationWarning)
        model.save(path)


@pytest.fixture(scope="session")
def images_hwc() -> np.ndarray:
    """Five random float32 images, channels last [5, 8, 8, 3]."""
    return np.random.default_rng(0).random((5, 8, 8, 3), dtype=np.float32)


@pytest.fixture(scope="session")
def bert_config():
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(WORDS) + 5,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=2,
        pad_token_id=0,
    )


@pytest.fixture(scope="session")
def bert_model(bert_config):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(bert_config).eval()


@pytest.fixture(scope="session")
def bert_tokenizer_json(tutorial_dir) -> Path:
    """A WordPiece tokenizer with [CLS]/[SEP] and no pad token set, saved as one tokenizer.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    vocab.update({w: i + 5 for i, w in enumerate(WORDS)})
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    path = tutorial_dir / "bert_tokenizer.json"
    tokenizer.save(str(path))
    return path


@pytest.fixture(scope="session")
def bert_checkpoint(bert_model, bert_config, tutorial_dir) -> Path:
    """``bert_base_uncased.bin`` (a torch.save state dict) with its config.json in the same folder."""
    folder = tutorial_dir / "bert"
    folder.mkdir()
    bert_config.save_pretrained(folder)
    path = folder / "bert_base_uncased.bin"
    torch.save(bert_model.state_dict(), path)
    return path


def vit_member(factory: str = "vit_pytorch:ViT", seed: int = 0, **overrides):
    """A tiny vit_pytorch member built through load_member, seeded."""
    from modelfusion import load_member

    torch.manual_seed(seed)
    return load_member(factory, **{**VIT_KWARGS, **overrides})


@pytest.fixture(scope="session")
def vit_images() -> torch.Tensor:
    """Six random images [6, 3, 32, 32]."""
    return torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
