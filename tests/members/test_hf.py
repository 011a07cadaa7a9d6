"""HFMember: tiny BERT (text) and ViT (image) classifiers built from configs; nothing downloads."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from modelfusion.errors import MemberLoadError, MissingDependencyError
from modelfusion.members import HFMember, load_member
from tests.members.conftest import LABELS

TEXTS = ["the film was great", "dull plot and bad acting", "ok movie"]


def _expected_text_logits(model, tokenizer, texts):
    with torch.no_grad():
        inputs = tokenizer(texts, padding=True, return_tensors="pt")
        return model(**inputs).logits.numpy()


def test_hf_text_member_tokenizes_strings_and_returns_logits(text_model, text_tokenizer):
    member = load_member(text_model, tokenizer=text_tokenizer)
    assert isinstance(member, HFMember) and member.name == "bertforsequenceclassification"
    assert member.output_kind == "logits"
    np.testing.assert_allclose(
        member.predict(TEXTS), _expected_text_logits(text_model, text_tokenizer, TEXTS), atol=1e-5
    )


def test_hf_classes_come_from_id2label_in_id_order(text_model, text_tokenizer):
    member = HFMember(text_model, tokenizer=text_tokenizer)
    assert member.classes.tolist() == [LABELS[i] for i in range(3)]


def test_hf_dict_of_model_inputs_is_passed_through(text_model, text_tokenizer):
    member = HFMember(text_model, tokenizer=text_tokenizer)
    inputs = dict(text_tokenizer(TEXTS, padding=True, return_tensors="np"))
    np.testing.assert_allclose(member.predict(inputs), member.predict(TEXTS), atol=1e-5)


def test_hf_forward_returns_the_logits_tensor(text_model, text_tokenizer):
    member = HFMember(text_model, tokenizer=text_tokenizer)
    logits = member(**text_tokenizer(TEXTS, padding=True, return_tensors="pt"))
    assert isinstance(logits, torch.Tensor) and logits.shape == (3, 3)


def test_hf_text_without_tokenizer_says_to_pass_one(text_model):
    with pytest.raises(ValueError, match="tokenizer="):
        HFMember(text_model).predict(TEXTS)


def test_hf_text_folder_loads_with_its_tokenizer(text_model_dir, text_model, text_tokenizer):
    member = load_member(text_model_dir)
    assert member.name == "sentiment" and member.framework == "hf"
    np.testing.assert_allclose(
        member.predict(TEXTS), _expected_text_logits(text_model, text_tokenizer, TEXTS), atol=1e-5
    )


def test_hf_text_save_round_trip_gives_identical_predictions(text_model_dir, tmp_path):
    member = load_member(text_model_dir)
    spec = member.save(tmp_path)
    assert (tmp_path / spec["file"] / "config.json").exists()
    restored = load_member(tmp_path / spec["file"], name="restored")
    np.testing.assert_allclose(restored.predict(TEXTS), member.predict(TEXTS), atol=1e-6)
    np.testing.assert_allclose(
        HFMember.load_saved(tmp_path, spec).predict(TEXTS), member.predict(TEXTS), atol=1e-6
    )


def test_hf_image_member_accepts_channels_last_and_channels_first_arrays(
    image_model, image_processor, images
):
    member = load_member(image_model, processor=image_processor)
    channels_last = member.predict(images)
    channels_first = member.predict(images.transpose(0, 3, 1, 2))
    assert channels_last.shape == (4, 3)
    np.testing.assert_allclose(channels_first, channels_last, atol=1e-5)


def test_hf_image_folder_loads_with_its_processor_and_round_trips(
    image_model_dir, image_model, images, tmp_path
):
    member = load_member(image_model_dir)
    assert member.modality == "image" and member.processor is not None
    with torch.no_grad():
        pixels = member.processor(images=list(images), return_tensors="pt")["pixel_values"]
        np.testing.assert_allclose(
            member.predict(images), image_model(pixel_values=pixels).logits.numpy(), atol=1e-5
        )
    spec = member.save(tmp_path)
    np.testing.assert_allclose(
        HFMember.load_saved(tmp_path, spec).predict(images), member.predict(images), atol=1e-6
    )


def test_hf_fingerprint_is_stable_across_reloads_and_differs_between_models(text_model_dir, image_model_dir):
    first = load_member(text_model_dir).fingerprint()
    assert first == load_member(text_model_dir).fingerprint()
    assert first != load_member(image_model_dir).fingerprint()


def test_hf_folder_that_is_not_a_model_raises_member_load_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(MemberLoadError, match="config"):
        load_member(tmp_path)


def test_missing_transformers_names_the_extra_to_install(text_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(
        MissingDependencyError, match=r'member needs transformers, .*pip install "modelfusion\[hf\]"'
    ):
        load_member(text_model_dir)


def test_hf_cache_key_changes_with_the_tokenizer_and_max_length(text_model, text_tokenizer, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from modelfusion import score_members
    from modelfusion.predictions import member_cache_key

    base = HFMember(text_model, tokenizer=text_tokenizer, name="bert")
    shorter = HFMember(text_model, tokenizer=text_tokenizer, name="bert", max_length=2)
    vocab = {"[PAD]": 0, "[UNK]": 1, "great": 2, "film": 3}  # another tokenizer for the same weights
    other = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    other.pre_tokenizer = pre_tokenizers.Whitespace()
    retokenized = HFMember(
        text_model,
        tokenizer=PreTrainedTokenizerFast(tokenizer_object=other, pad_token="[PAD]", unk_token="[UNK]"),
        name="bert",
    )
    keys = {member_cache_key(m) for m in (base, shorter, retokenized)}
    assert len(keys) == 3
    first = score_members([base], TEXTS, cache_dir=tmp_path)
    second = score_members([shorter], TEXTS, cache_dir=tmp_path)
    assert second.metadata["bert"]["cached"] is False  # not the old outputs
    assert not np.allclose(first.outputs, second.outputs)


def test_a_saved_config_that_names_a_file_to_load_is_refused_without_trust(text_model_dir, tmp_path):
    import json
    import shutil

    from modelfusion.errors import UnsafeFormatError
    from modelfusion.members.hf import check_saved_config

    check_saved_config(text_model_dir / "config.json", owner="member 'bert'")  # what save_pretrained writes
    folder = shutil.copytree(text_model_dir, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    config["model_args"] = {"checkpoint_path": "/home/user/secret.pth"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsafeFormatError, match=r"'model_args.checkpoint_path'.*trust"):
        HFMember.load_saved(tmp_path, {"name": "bert", "file": "model"})
