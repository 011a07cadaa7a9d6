"""MultimodalDataset from a CSV/Parquet manifest: images, texts and tabular columns through
DataPipeline stages; missing modalities skipped with a count or given a learned stand-in;
undecodable images counted or named; missing columns named."""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch import nn

from modelfusion.data import DataPipeline
from modelfusion.errors import DataError, FeatureWidthError, ModelFusionWarning
from modelfusion.multimodal import (
    ModuleEncoder,
    MultimodalDataset,
    MultimodalFusion,
    MultimodalGraph,
    TabularEncoder,
    WordEncoder,
)
from modelfusion.multimodal.saving import GRAPHS
from modelfusion.training import Trainer

COLUMNS = {"image": "photo", "text": "caption", "table": ["size", "weight"]}


def write_manifest(folder, rows=24, *, blank_image=(), empty_text=(), broken=(), nan_table=()):
    """``rows`` digit images with a caption and two numbers; the label is the digit."""
    digits = load_digits()
    (folder / "img").mkdir(exist_ok=True)
    lines = [["photo", "caption", "size", "weight", "label"]]
    for i in range(rows):
        name = f"img/{i}.png"
        if i in broken:
            (folder / name).write_bytes(b"not a png at all")
        else:
            Image.fromarray((digits.images[i] * 15).astype(np.uint8)).save(folder / name)
        label = f"d{digits.target[i]}"
        lines.append(
            [
                "" if i in blank_image else name,
                "" if i in empty_text else f"digit number {digits.target[i]}",
                "" if i in nan_table else str(i / rows),
                str(digits.target[i] * 0.1),
                label,
            ]
        )
    with open(folder / "manifest.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(lines)
    return folder / "manifest.csv"


def model_for(data: MultimodalDataset, **options) -> MultimodalFusion:
    torch.manual_seed(0)
    cnn = ModuleEncoder.from_architecture(
        "modelfusion.examples.digit_instructions:digit_cnn", {"channels": 4}, input_shape=(1, 8, 8)
    )
    return MultimodalFusion(
        encoders={
            "image": cnn,
            "text": WordEncoder([f"{d}" for d in range(10)] + ["digit", "number"], width=8),
            "table": TabularEncoder(2, width=8),
        },
        fusion="concat",
        num_classes=len(data.classes_),
        **options,
    )


def test_a_manifest_loads_every_modality_through_the_pipeline_and_trains(tmp_path):
    path = write_manifest(tmp_path)
    pipeline = DataPipeline().add_stage("image", lambda img: 1.0 - img, "invert").add_stage("text", str.upper)
    data = MultimodalDataset(path, columns=COLUMNS, pipeline=pipeline)
    assert data.kinds_ == {"image": "image", "text": "text", "table": "tabular"}
    assert len(data) == 24 and data.skipped_ == {}
    inputs, label = data[0]
    assert inputs["image"].shape == (1, 8, 8) and float(inputs["image"].max()) == pytest.approx(1.0)
    assert inputs["text"] == "DIGIT NUMBER 0"  # the text stage ran
    assert inputs["table"].shape == (2,) and list(data.classes_)[int(label)] == "d0"
    model = model_for(data)
    trainer = Trainer(model, nn.functional.cross_entropy, max_epochs=30, batch_size=8, lr=1e-2, seed=0).fit(
        data
    )
    assert trainer.history_[-1]["train_loss"] < trainer.history_[0]["train_loss"] / 2


def test_rows_missing_a_modality_are_skipped_with_a_count(tmp_path):
    path = write_manifest(tmp_path, blank_image=[1, 2], empty_text=[3], nan_table=[4])
    with pytest.warns(
        ModelFusionWarning, match=r"skipped 2 missing image, 1 missing text, 1 missing table rows"
    ):
        data = MultimodalDataset(path, columns=COLUMNS)
    assert len(data) == 20
    assert data.skipped_ == {"missing image": 2, "missing text": 1, "missing table": 1}


def test_missing_modalities_can_get_a_learned_stand_in_that_exports(tmp_path):
    path = write_manifest(tmp_path, blank_image=[1, 2], empty_text=[3])
    data = MultimodalDataset(path, columns=COLUMNS, missing="embed")
    assert len(data) == 24 and not data[1][0]["present"]["image"] and data[0][0]["present"]["image"]
    with pytest.raises(FeatureWidthError, match="missing_embeddings=True"):
        model_for(data)({**data.inputs, "present": data.present})
    model = model_for(data, missing_embeddings=True)
    Trainer(model, nn.functional.cross_entropy, max_epochs=3, batch_size=8, seed=0).fit(data)
    assert model.missing["image"].abs().sum() > 0  # the stand-in learned
    batch = {
        "image": data.inputs["image"][:4].clone(),
        "text": data.inputs["text"][:4],
        "table": data.inputs["table"][:4],
    }
    batch["present"] = {name: flags[:4] for name, flags in data.present.items()}
    with torch.no_grad():
        before = model.eval()(batch)
        batch["image"][1] = torch.rand(1, 8, 8)  # row 1 has no image: its pixels must not matter
        after = model(batch)
    torch.testing.assert_close(before, after)
    model.save(tmp_path / "m", example=batch, precisions=("fp32",))
    graph = MultimodalGraph(tmp_path / "m" / GRAPHS["fp32"], MultimodalFusion.load(tmp_path / "m"))
    assert np.abs(graph.logits(batch) - after.numpy()).max() <= 1e-4


def test_undecodable_images_fail_naming_the_first_files_or_are_counted(tmp_path):
    path = write_manifest(tmp_path, broken=[5, 7])
    with pytest.raises(DataError, match=r"2 image file\(s\) cannot be read, first: img/5.png .*img/7.png"):
        MultimodalDataset(path, columns=COLUMNS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = MultimodalDataset(path, columns=COLUMNS, bad_images="skip")
    assert data.skipped_ == {"unreadable image (image)": 2} and len(data) == 22
    assert any("2 unreadable image" in str(w.message) for w in caught)


def test_missing_columns_are_named_with_the_modality(tmp_path):
    path = write_manifest(tmp_path)
    with pytest.raises(
        DataError, match=r"no column 'picture' \(for image\), 'target' \(for label\); its columns: photo"
    ):
        MultimodalDataset(path, columns={**COLUMNS, "image": "picture"}, label="target")
    with pytest.raises(DataError, match="images have different sizes"):
        Image.new("L", (5, 5)).save(tmp_path / "img" / "0.png")
        MultimodalDataset(path, columns=COLUMNS)
    assert MultimodalDataset(path, columns=COLUMNS, image_size=8).inputs["image"].shape == (24, 1, 8, 8)


def test_a_parquet_manifest_reads_the_same_rows(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = write_manifest(tmp_path)
    from_csv = MultimodalDataset(path, columns=COLUMNS)
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    table = pa.table(
        {
            "photo": [r["photo"] for r in rows],
            "caption": [r["caption"] for r in rows],
            "size": [float(r["size"]) for r in rows],
            "weight": [float(r["weight"]) for r in rows],
            "label": [r["label"] for r in rows],
        }
    )
    pq.write_table(table, tmp_path / "manifest.parquet")
    from_parquet = MultimodalDataset(tmp_path / "manifest.parquet", columns=COLUMNS)
    torch.testing.assert_close(from_parquet.inputs["image"], from_csv.inputs["image"])
    assert from_parquet.inputs["text"] == from_csv.inputs["text"]
    assert list(from_parquet.classes_) == list(from_csv.classes_)
