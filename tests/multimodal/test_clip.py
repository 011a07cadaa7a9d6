"""CLIP towers as encoders (a tiny CLIPConfig, nothing downloads): widths, fine-tuning inside a
fusion model, save/load and ONNX; contrastive alignment and retrieval recall."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modelfusion.errors import ParameterError
from modelfusion.multimodal import (
    ContrastiveAlignment,
    ImageEncoder,
    ModalityDataset,
    MultimodalFusion,
    MultimodalGraph,
    WordEncoder,
    clip_encoders,
    contrastive_loss,
    retrieval_recall,
)
from modelfusion.multimodal.saving import GRAPHS
from modelfusion.training import Trainer
from tests.multimodal.tiny_text import WORDS, tiny_clip

pytest.importorskip("transformers")
TEXTS = ["a red apple", "two cats", "the mat", "cats on the mat", "a red mat", "two apple"]


def test_clip_towers_probe_their_widths():
    clip, tokenizer = tiny_clip()
    towers = clip_encoders(clip, tokenizer)
    assert towers["image"].width == towers["text"].width == 16  # the joint (projected) space
    assert towers["image"](torch.rand(1, 3, 32, 32)).shape == (1, 16)  # batch size 1
    assert towers["text"](TEXTS[:3]).shape == (3, 16)
    raw = clip_encoders(clip, tokenizer, projected=False)
    assert raw["image"].width == raw["text"].width == 32
    with torch.no_grad():  # the tower's own image embedding
        own = clip.get_image_features(torch.ones(2, 3, 32, 32))
        own = getattr(own, "pooler_output", own)  # transformers 5 returns an output object
        torch.testing.assert_close(towers["image"](torch.ones(2, 3, 32, 32)), own)


def test_a_clip_fusion_model_fine_tunes_saves_and_exports(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clip, tokenizer = tiny_clip()
    model = MultimodalFusion(
        encoders=clip_encoders(clip, tokenizer), fusion="bilinear", dim=16, num_classes=2
    )
    batch = {"image": torch.rand(6, 3, 32, 32), "text": TEXTS}
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(40):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(batch), y)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1
    model.save(tmp_path / "m", example=batch, precisions=("fp32",))
    loaded = MultimodalFusion.load(tmp_path / "m")
    with torch.no_grad():
        expected = model.eval()(batch).numpy()
        np.testing.assert_allclose(loaded(batch).numpy(), expected, atol=1e-6)
    graph = MultimodalGraph(tmp_path / "m" / GRAPHS["fp32"], loaded)
    assert np.abs(graph.logits({"image": batch["image"], "text": TEXTS}) - expected).max() <= 1e-4


def test_contrastive_alignment_learns_to_retrieve_pairs():
    torch.manual_seed(0)
    n = 48
    images = torch.rand(n, 1, 8, 8)
    words = [f"w{i}" for i in range(n)]  # each image has its own word: the pairs to learn
    cnn = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32))
    align = ContrastiveAlignment(
        {"image": ImageEncoder(cnn, image_size=8, in_channels=1), "text": WordEncoder(words, width=32)},
        dim=16,
    )
    with torch.no_grad():
        before = retrieval_recall(align.embed("text", words), align.embed("image", images))
    data = ModalityDataset({"image": images, "text": words}, np.arange(n))
    trainer = Trainer(align, contrastive_loss, lr=1e-2, batch_size=16, max_epochs=40, seed=0).fit(data)
    assert trainer.history_[-1]["train_loss"] < trainer.history_[0]["train_loss"]
    with torch.no_grad():
        after = retrieval_recall(align.embed("text", words), align.embed("image", images))
    assert after["R@1"] > 0.9 > before["R@5"]


def test_retrieval_recall_and_bad_alignment_arguments():
    assert retrieval_recall(torch.eye(4), torch.eye(4), ks=(1,)) == {"R@1": 1.0}
    swapped = torch.eye(4)[[1, 0, 2, 3]]
    assert retrieval_recall(torch.eye(4), swapped, ks=(1, 2)) == {
        "R@1": 0.5,
        "R@2": 0.5,
    }  # ties count against
    assert retrieval_recall(torch.eye(4), swapped + 0.1 * torch.eye(4), ks=(1, 2)) == {"R@1": 0.5, "R@2": 1.0}
    with pytest.raises(ParameterError, match="pair up row by row"):
        retrieval_recall(torch.eye(3), torch.eye(4))
    words = WordEncoder(WORDS, width=8)
    with pytest.raises(ParameterError, match="two modalities"):
        ContrastiveAlignment({"a": words})
    with pytest.raises(ParameterError, match="dim=None needs encoders of one width"):
        ContrastiveAlignment({"a": words, "b": WordEncoder(WORDS, width=4)}, dim=None)
