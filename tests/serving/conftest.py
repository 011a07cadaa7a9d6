"""Small real bundles to serve: scikit-learn members on digits rows, and a torch CNN on 8x8 images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modelfusion import FusedModel, load_member, score_members
from modelfusion.data.builtin import load_digits
from modelfusion.examples.digits import SmallCNN
from modelfusion.inputs import input_record
from modelfusion.strategies import Mean


@pytest.fixture(scope="package")
def digits_rows():
    ds = load_digits()
    return ds.X.astype(np.float32), ds.y, list(ds.feature_names)


@pytest.fixture(scope="package")
def rows_bundle(digits_rows, tmp_path_factory):
    """Logistic regression and naive Bayes on the 64 pixel columns, averaged; records its inputs."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB

    X, y, names = digits_rows
    members = [
        load_member(LogisticRegression(max_iter=300).fit(X[:1200], y[:1200]), name="logreg"),
        load_member(GaussianNB(var_smoothing=0.05).fit(X[:1200], y[:1200]), name="bayes"),
    ]
    preds = score_members(members, X[1200:1500], y=y[1200:1500], progress=False)
    fused = FusedModel(members, Mean().fit(preds, y[1200:1500]), metadata={"inputs": input_record(X, names)})
    return fused.save(tmp_path_factory.mktemp("bundles") / "rows")


@pytest.fixture(scope="package")
def image_bundle(digits_rows, tmp_path_factory):
    """One small CNN taking [1, 8, 8] images (random weights: serving, not accuracy, is tested)."""
    X, y, _ = digits_rows
    torch.manual_seed(0)
    images = X.reshape(-1, 1, 8, 8)
    member = load_member(SmallCNN(channels=4).eval(), name="cnn", output_kind="logits")
    preds = score_members([member], images[:200], y=y[:200], progress=False)
    fused = FusedModel([member], Mean().fit(preds, y[:200]), metadata={"inputs": input_record(images, None)})
    return fused.save(tmp_path_factory.mktemp("bundles") / "images")


@pytest.fixture(scope="package")
def text_bundle(tmp_path_factory):
    """A tiny BERT classifier (random weights, a word-level tokenizer saved with it) taking texts."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    words = ["the", "film", "was", "good", "bad", "plot", "dull", "great"]
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=16,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=20,
        num_labels=2,
    )
    member = load_member(BertForSequenceClassification(config).eval(), tokenizer=tokenizer, name="bert")
    texts = ["the film was good", "dull plot", "great film", "bad"] * 4
    labels = np.array(["LABEL_1", "LABEL_0", "LABEL_1", "LABEL_0"] * 4)
    preds = score_members([member], texts, y=labels, progress=False)
    fused = FusedModel([member], Mean().fit(preds, labels))
    return fused.save(tmp_path_factory.mktemp("bundles") / "text")
