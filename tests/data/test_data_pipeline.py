"""DataPipeline: per-modality stages on records, lists of records and datasets."""

from __future__ import annotations

import numpy as np
import pytest

from modelfusion.data import DataPipeline, Dataset


def _append(tag):
    def stage(text):
        return f"{text}+{tag}"

    stage.__qualname__ = f"append_{tag}"
    return stage


def test_stages_of_one_modality_run_in_the_order_added():
    pipeline = DataPipeline().add_stage("text", _append("a")).add_stage("text", _append("b"))
    assert pipeline({"text": "x"}) == {"text": "x+a+b"}
    assert [s.name for s in pipeline.stages("text")] == ["append_a", "append_b"]


def test_record_modalities_without_stages_pass_through_when_declared():
    pipeline = DataPipeline(modalities=["id"])
    pipeline.add_stage("image", lambda img: img * 2)
    out = pipeline({"image": np.ones((2, 2)), "id": 7})
    np.testing.assert_array_equal(out["image"], 2 * np.ones((2, 2)))
    assert out["id"] == 7
    assert pipeline.modalities == ["id", "image"]


def test_list_of_records_gives_list_of_processed_records():
    pipeline = DataPipeline().add_stage("text", str.upper)
    assert pipeline([{"text": "a"}, {"text": "b"}]) == [{"text": "A"}, {"text": "B"}]


def test_dataset_columns_are_processed_per_item_and_restacked():
    ds = Dataset({"image": np.ones((3, 2, 2)), "text": ["a", "b", "c"]}, np.array([0, 1, 0]), name="mm")
    pipeline = DataPipeline()
    pipeline.add_stage("image", lambda img: img.sum(axis=0), name="collapse")
    pipeline.add_stage("text", str.upper)
    out = pipeline(ds)
    assert isinstance(out, Dataset) and out.y.tolist() == [0, 1, 0] and out.name == "mm"
    assert isinstance(out.X["image"], np.ndarray) and out.X["image"].shape == (3, 2)
    assert out.X["text"] == ["A", "B", "C"]


def test_batched_stage_sees_the_whole_column_at_once():
    calls = []

    def normalise(batch):
        calls.append(batch.shape)
        return batch / batch.max()

    pipeline = DataPipeline().add_stage("image", normalise, batched=True)
    out = pipeline(Dataset({"image": np.arange(8.0).reshape(4, 2)}))
    assert calls == [(4, 2)] and out.X["image"].max() == 1.0
    # On one record a batched stage gets a batch of one and the result is unwrapped.
    np.testing.assert_allclose(pipeline({"image": np.array([1.0, 4.0])})["image"], [0.25, 1.0])


def test_unknown_modality_is_rejected_with_the_known_ones():
    pipeline = DataPipeline(modalities=["label"]).add_stage("image", lambda x: x)
    with pytest.raises(
        ValueError,
        match=r"unknown modality 'imgae' \(did you mean 'image'\?\); this pipeline knows: label, image",
    ):
        pipeline({"imgae": np.zeros(3)})
    assert DataPipeline(strict=False).add_stage("image", abs)({"other": 1}) == {"other": 1}


def test_as_member_preprocess_applies_one_modality_to_a_batch():
    pipeline = DataPipeline().add_stage("image", lambda img: img.reshape(1, 2, 2), name="to_chw")
    prep = pipeline.as_member_preprocess("image")
    assert prep(np.zeros((5, 4))).shape == (5, 1, 2, 2)
    with pytest.raises(ValueError, match="unknown modality 'text'"):
        pipeline.as_member_preprocess("text")
    both = DataPipeline().add_stage("text", str.upper).as_member_preprocess()
    assert both({"text": ["a", "b"]}) == {"text": ["A", "B"]}


def test_fingerprint_depends_on_stage_names_and_repr_lists_them():
    a = DataPipeline().add_stage("text", str.upper, name="upper").add_stage("text", str.strip, name="strip")
    b = DataPipeline().add_stage("text", str.lower, name="upper").add_stage("text", str.strip, name="strip")
    c = DataPipeline().add_stage("text", str.strip, name="strip").add_stage("text", str.upper, name="upper")
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert repr(a) == "DataPipeline(text: [upper -> strip])"


def test_dataset_without_modalities_is_a_clear_type_error():
    with pytest.raises(TypeError, match="X is a dict of modalities"):
        DataPipeline().add_stage("image", abs)(Dataset(np.zeros((2, 2))))
