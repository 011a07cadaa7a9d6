"""Small real models for the member tests, built in seconds from scikit-learn's digits; nothing downloads."""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # before anything imports keras

import warnings
from pathlib import Path

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from tests.members.architectures import make_mlp  # noqa: E402

MLP_ARCHITECTURE = "tests.members.architectures:make_mlp"
LABELS = {0: "negative", 1: "neutral", 2: "positive"}
WORDS = ["the", "a", "film", "movie", "plot", "acting", "was", "good", "great", "bad", "dull", "ok"]


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """X float32 [1797, 64] in [0, 1], y int [1797]."""
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


@pytest.fixture(scope="session")
def X(digits) -> np.ndarray:
    """30 digits, float32 [30, 64]."""
    return digits[0][:30]


@pytest.fixture(scope="session")
def logreg(digits) -> LogisticRegression:
    X, y = digits
    return LogisticRegression(max_iter=300).fit(X[:600], y[:600])


@pytest.fixture(scope="session")
def mlp(digits) -> torch.nn.Module:
    """The MLP of MLP_ARCHITECTURE, trained for a few full-batch steps."""
    X, y = digits
    net = make_mlp()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
    inputs, targets = torch.from_numpy(X[:600]), torch.from_numpy(y[:600])
    for _ in range(30):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(inputs), targets).backward()
        optimizer.step()
    return net.eval()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def mlp_logits(mlp, X) -> np.ndarray:
    with torch.no_grad():
        return mlp(torch.from_numpy(X)).numpy()


@pytest.fixture(scope="session")
def onnx_dynamic_path(mlp, X, model_dir) -> Path:
    path = model_dir / "mlp_dynamic.onnx"
    _legacy_onnx_export(
        mlp,
        (torch.from_numpy(X[:2]),),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    return path


@pytest.fixture(scope="session")
def onnx_fixed_path(mlp, X, model_dir) -> Path:
    """The MLP exported with a fixed batch of 4."""
    path = model_dir / "mlp_fixed.onnx"
    _legacy_onnx_export(
        mlp, (torch.from_numpy(X[:4]),), str(path), input_names=["input"], output_names=["logits"]
    )
    return path


def _legacy_onnx_export(*args, **kwargs) -> None:
    """The TorchScript-based exporter: fast, and what many existing .onnx files were made with."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(*args, dynamo=False, **kwargs)


def _skl2onnx(estimator, zipmap: bool):
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    options = None if zipmap else {id(estimator): {"zipmap": False}}
    return convert_sklearn(estimator, initial_types=[("input", FloatTensorType([None, 64]))], options=options)


@pytest.fixture(scope="session")
def logreg_onnx_path(logreg, model_dir) -> Path:
    path = model_dir / "logreg.onnx"
    path.write_bytes(_skl2onnx(logreg, zipmap=False).SerializeToString())
    return path


@pytest.fixture(scope="session")
def logreg_zipmap_onnx_path(logreg, model_dir) -> Path:
    path = model_dir / "logreg_zipmap.onnx"
    path.write_bytes(_skl2onnx(logreg, zipmap=True).SerializeToString())
    return path


@pytest.fixture(scope="session")
def keras_model(digits):
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


@pytest.fixture(scope="session")
def keras_path(keras_model, model_dir) -> Path:
    path = model_dir / "digits.keras"
    keras_model.save(path)
    return path


@pytest.fixture(scope="session")
def h5_path(keras_model, model_dir) -> Path:
    path = model_dir / "digits.h5"
    keras_model.save(path)
    return path


@pytest.fixture(scope="session")
def text_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]")


@pytest.fixture(scope="session")
def text_model():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        num_labels=3,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    return BertForSequenceClassification(config).eval()


@pytest.fixture(scope="session")
def text_model_dir(text_model, text_tokenizer, model_dir) -> Path:
    path = model_dir / "sentiment"
    text_model.save_pretrained(path)
    text_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def image_model():
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=16,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        num_labels=3,
    )
    return ViTForImageClassification(config).eval()


@pytest.fixture(scope="session")
def image_processor():
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": 16, "width": 16})


@pytest.fixture(scope="session")
def image_model_dir(image_model, image_processor, model_dir) -> Path:
    path = model_dir / "vit"
    image_model.save_pretrained(path)
    image_processor.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    """Four random uint8 RGB images [4, 16, 16, 3]."""
    return np.random.default_rng(0).integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
