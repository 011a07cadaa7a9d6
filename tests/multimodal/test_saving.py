"""Saving a fusion model (spec + safetensors + tokenizer files), loading it without pickle or
downloads, and one ONNX graph with several inputs that matches eager within 1e-4."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from modelfusion.errors import BundleError, ExportError, ParameterError, UnsafeFormatError
from modelfusion.examples.digit_instructions import digit_instructions, instruction_model
from modelfusion.manifest import write_manifest
from modelfusion.multimodal import (
    FUSION_OPERATORS,
    ImageEncoder,
    ModuleEncoder,
    MultimodalFusion,
    MultimodalGraph,
    TabularEncoder,
    TextEncoder,
    export_multimodal_onnx,
)
from modelfusion.multimodal.saving import GRAPHS

TEXTS = ["a red apple", "two cats on the mat", "the mat", "a cat", "red red red apple on the mat"]


@pytest.fixture(scope="module")
def digits_batch():
    task = digit_instructions(per_image=1, seed=0)
    return task, {"image": task["images"][:6], "text": task["texts"][:6]}


def _logits(model, batch) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(batch).numpy()


@pytest.mark.parametrize("fusion", list(FUSION_OPERATORS))
def test_every_fusion_operator_round_trips_and_exports_within_1e_4(tmp_path, digits_batch, fusion):
    task, batch = digits_batch
    torch.manual_seed(0)
    model = instruction_model(task["vocabulary"], fusion=fusion)
    model.save(tmp_path / "m", example=batch)
    loaded = MultimodalFusion.load(tmp_path / "m")
    np.testing.assert_array_equal(_logits(loaded, batch), _logits(model, batch))
    graph = MultimodalGraph(tmp_path / "m" / GRAPHS["fp32"], loaded)
    assert np.abs(graph.logits(batch) - _logits(model, batch)).max() <= 1e-4
    int8 = MultimodalGraph(tmp_path / "m" / GRAPHS["int8"], loaded).logits(batch)
    assert np.abs(int8 - _logits(model, batch)).max() < 0.05 * np.abs(_logits(model, batch)).max() + 1e-3
    assert (tmp_path / "m" / GRAPHS["int8"]).stat().st_size < (tmp_path / "m" / GRAPHS["fp32"]).stat().st_size


def test_image_text_and_tabular_model_exports_with_named_inputs_and_dynamic_lengths(
    tmp_path, bert, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # loading must not reach the hub
    model_hf, tokenizer = bert
    torch.manual_seed(0)
    model = MultimodalFusion(
        encoders={
            "image": ImageEncoder("resnet18", image_size=32, in_channels=1),
            "text": TextEncoder(model_hf, tokenizer, pooling="mean"),
            "table": TabularEncoder(5, width=8),
        },
        fusion="cross_attention",
        dim=16,
        num_classes=3,
        head={"hidden": [12], "dropout": 0.1},
    )
    batch = {"image": torch.randn(5, 1, 32, 32), "text": TEXTS, "table": torch.randn(5, 5)}
    path = export_multimodal_onnx(model, tmp_path / "fused.onnx", batch)
    import onnx

    names = [i.name for i in onnx.load(str(path)).graph.input]
    assert (
        names[:3] == ["image.pixels", "text.input_ids", "text.attention_mask"] and names[-1] == "table.values"
    )
    model.save(tmp_path / "m", example=batch, classes=["no", "maybe", "yes"], precisions=("fp32",))
    loaded = MultimodalFusion.load(tmp_path / "m")
    assert loaded.classes_ == ["no", "maybe", "yes"] and not (tmp_path / "m" / GRAPHS["int8"]).exists()
    graph = MultimodalGraph(path, loaded)
    shorter = {"image": batch["image"][:2], "text": ["a cat", "mat"], "table": batch["table"][:2]}
    for b in (batch, shorter):  # other batch sizes and token counts than the export's
        assert np.abs(graph.logits(b) - _logits(model, b)).max() <= 1e-4
        np.testing.assert_allclose(_logits(loaded, b), _logits(model, b), atol=1e-6)


def test_a_changed_file_or_manifest_is_refused(tmp_path, digits_batch):
    task, _ = digits_batch
    instruction_model(task["vocabulary"]).save(tmp_path / "m")
    weights = tmp_path / "m" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="weights.safetensors fails its sha256 check"):
        MultimodalFusion.load(tmp_path / "m")
    manifest = tmp_path / "m" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"fusion": "gated"', '"fusion": "sum"'))
    with pytest.raises(BundleError, match="does not match bundle.sha256"):
        MultimodalFusion.load(tmp_path / "m")
    with pytest.raises(BundleError, match="no manifest.json"):
        MultimodalFusion.load(tmp_path)


def test_an_architecture_outside_the_allow_list_needs_trust(tmp_path, digits_batch):
    task, _ = digits_batch
    instruction_model(task["vocabulary"]).save(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    manifest["model"]["encoders"]["image"]["architecture"] = "os:system"
    write_manifest(tmp_path / "m", manifest)  # a hostile bundle with a valid digest
    with pytest.raises(UnsafeFormatError, match="model.encoders.image builds its architecture by importing"):
        MultimodalFusion.load(tmp_path / "m")


def test_what_a_spec_cannot_describe_is_named(tmp_path, digits_batch):
    task, _ = digits_batch
    custom = ModuleEncoder(torch.nn.Flatten(), example=torch.zeros(1, 1, 8, 8))
    model = MultimodalFusion(encoders={"image": custom}, num_classes=10)
    with pytest.raises(ParameterError, match="give ModuleEncoder architecture="):
        model.save(tmp_path / "m")
    model = instruction_model(task["vocabulary"])
    model.classifier = torch.nn.Linear(model.fusion.out_features, 10)
    with pytest.raises(ParameterError, match="classifier was replaced"):
        model.save(tmp_path / "m")
    assert not any(tmp_path.iterdir())  # nothing half-written
    with pytest.raises(ParameterError, match=r"model.encoders.x.type: 'video' is not one of"):
        MultimodalFusion.from_spec({"encoders": {"x": {"type": "video"}}, "num_classes": 2})
    with pytest.raises(ParameterError, match=r"head: unknown keys \['layers'\]"):
        MultimodalFusion(encoders={"image": custom}, num_classes=2, head={"layers": 2})


def test_an_export_that_fails_leaves_no_bundle(tmp_path, digits_batch, monkeypatch):
    task, batch = digits_batch
    import modelfusion.multimodal.export as export

    monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)  # every graph now "differs" from eager
    with pytest.raises(ExportError, match="differ from the eager model's"):
        instruction_model(task["vocabulary"]).save(tmp_path / "m", example=batch)
    assert list(tmp_path.iterdir()) == []
