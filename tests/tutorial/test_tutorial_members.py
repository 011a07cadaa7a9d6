"""Issue 6, items 2 and 11: the tutorial's ModelLoader and the vit-pytorch model pool, as written."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from modelfusion import MemberLoadError, ModelLoader, load_member, load_saved_member, score_members
from modelfusion.errors import MemberFileNotFoundError, MissingDependencyError
from modelfusion.members import HFMember, KerasMember, TorchMember
from modelfusion.members.keras import SavedModelMember
from modelfusion.strategies import WeightedAverage
from tests.tutorial.conftest import VIT_KWARGS, vit_member

TEXTS = ["a text", "another film was good"]


def _reference_logits(bert_model, tokenizer_json, texts):
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json), pad_token="[PAD]")
    with torch.no_grad():
        return bert_model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()


# -- item 2: ModelLoader, Keras ---------------------------------------------------------------


@pytest.mark.parametrize("framework", ["tensorflow", "tf", "keras"])
def test_modelloader_loads_keras_h5_with_input_shape_check(
    framework, keras_h5_path, image_keras_model, images_hwc
):
    member = ModelLoader(framework=framework, model_path=keras_h5_path, input_shape=(8, 8, 3)).load()
    assert isinstance(member, KerasMember)
    assert member.input_shape == (8, 8, 3)
    np.testing.assert_allclose(
        member.predict(images_hwc), image_keras_model.predict_on_batch(images_hwc), atol=1e-6
    )


def test_modelloader_loads_a_keras_file_through_keras3_on_torch(
    keras_file_path, image_keras_model, images_hwc
):
    member = ModelLoader(framework="tensorflow", model_path=keras_file_path, input_shape=(8, 8, 3)).load()
    assert member.output_kind == "proba"  # softmax head
    np.testing.assert_allclose(
        member.predict(images_hwc), image_keras_model.predict_on_batch(images_hwc), atol=1e-6
    )


def test_input_shape_contradicting_the_model_names_both_shapes(keras_h5_path):
    loader = ModelLoader(framework="tensorflow", model_path=keras_h5_path, input_shape=(224, 224, 3))
    with pytest.raises(MemberLoadError, match=r"input_shape=\(224, 224, 3\).*input shape \(8, 8, 3\)"):
        loader.load()


def _saved_model_folder(tmp_path):
    folder = tmp_path / "resnet50_savedmodel"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"\x08\x01")
    return folder


def test_savedmodel_folder_without_tensorflow_names_the_package_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # as on a machine without tensorflow
    folder = _saved_model_folder(tmp_path)
    loader = ModelLoader(framework="tensorflow", model_path=folder, input_shape=(224, 224, 3))
    with pytest.raises(MissingDependencyError, match="SavedModel folder.*pip install tensorflow") as info:
        loader.load()
    assert str(folder) in str(info.value)
    with pytest.raises(MissingDependencyError, match="pip install tensorflow"):
        load_member(folder)  # the framework is inferred from saved_model.pb
    with pytest.raises(MissingDependencyError, match="pip install tensorflow"):
        load_member(folder / "saved_model.pb")


def _fake_tensorflow(weights: np.ndarray) -> types.SimpleNamespace:
    """Just enough of tensorflow's SavedModel API: one serving signature, softmax(x @ weights)."""

    class Spec:
        def __init__(self, shape):
            self.shape = shape

    class Output:
        def __init__(self, value):
            self.value = value

        def numpy(self):
            return self.value

    def serving_default(input_1):
        z = np.asarray(input_1).reshape(len(input_1), -1) @ weights
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return {"output_0": Output(e / e.sum(axis=1, keepdims=True))}

    serving_default.structured_input_signature = ((), {"input_1": Spec([None, 2, 2, 3])})
    loaded = types.SimpleNamespace(signatures={"serving_default": serving_default}, variables=[weights])
    return types.SimpleNamespace(
        saved_model=types.SimpleNamespace(load=lambda path: loaded), convert_to_tensor=np.asarray
    )


def test_savedmodel_folder_loads_through_tensorflow_when_installed(tmp_path, monkeypatch):
    weights = np.random.default_rng(0).normal(size=(12, 3))
    monkeypatch.setitem(sys.modules, "tensorflow", _fake_tensorflow(weights))
    folder = _saved_model_folder(tmp_path)
    member = ModelLoader(framework="tf", model_path=folder, input_shape=(2, 2, 3)).load()
    assert isinstance(member, SavedModelMember)
    x = np.random.default_rng(1).random((4, 2, 2, 3), dtype=np.float32)
    proba = member.predict(x)
    assert proba.shape == (4, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert member.n_parameters == 36
    spec = member.save(tmp_path / "bundle_member")  # a bundle copies the folder
    assert (tmp_path / "bundle_member" / "saved_model" / "saved_model.pb").exists()
    with pytest.raises(MemberLoadError, match=r"SavedModel, whose graph can run any TensorFlow op.*trust"):
        load_saved_member(tmp_path / "bundle_member", spec)  # a saved graph can run any op: trust only
    restored = load_saved_member(tmp_path / "bundle_member", spec, trust=True)
    np.testing.assert_allclose(restored.predict(x), proba)
    with pytest.raises(MemberLoadError, match=r"input_shape=\(224, 224, 3\).*\(2, 2, 3\)"):
        ModelLoader(framework="tf", model_path=folder, input_shape=(224, 224, 3)).load()


# -- item 2: ModelLoader, Hugging Face checkpoint file + tokenizer.json ----------------------------


def test_modelloader_loads_hf_checkpoint_bin_with_a_tokenizer_json(
    bert_checkpoint, bert_tokenizer_json, bert_model
):
    member = ModelLoader(
        framework="pytorch", model_path=bert_checkpoint, tokenizer_path=bert_tokenizer_json
    ).load()
    assert isinstance(member, HFMember)
    assert member.name == "bert_base_uncased"
    assert member.tokenizer.pad_token == "[PAD]"  # the file sets none: taken from config.pad_token_id
    logits = member.predict(TEXTS)
    assert logits.shape == (2, 2)
    np.testing.assert_allclose(logits, _reference_logits(bert_model, bert_tokenizer_json, TEXTS), atol=1e-5)


def test_pytorch_framework_also_loads_a_save_pretrained_folder(bert_model, bert_tokenizer_json, tmp_path):
    bert_model.save_pretrained(tmp_path / "bert")
    member = ModelLoader(
        framework="pytorch", model_path=tmp_path / "bert", tokenizer_path=bert_tokenizer_json
    ).load()
    assert isinstance(member, HFMember)
    expected = _reference_logits(bert_model, bert_tokenizer_json, TEXTS)
    np.testing.assert_allclose(member.predict(TEXTS), expected, atol=1e-5)


def test_hf_checkpoint_safetensors_loads_and_round_trips(
    bert_model, bert_config, bert_tokenizer_json, tmp_path
):
    from safetensors.torch import save_model

    bert_config.save_pretrained(tmp_path)
    save_model(bert_model, str(tmp_path / "model.safetensors"))
    member = load_member(tmp_path / "model.safetensors", tokenizer=bert_tokenizer_json)
    expected = _reference_logits(bert_model, bert_tokenizer_json, TEXTS)
    np.testing.assert_allclose(member.predict(TEXTS), expected, atol=1e-5)
    spec = member.save(tmp_path / "saved")
    np.testing.assert_allclose(
        load_saved_member(tmp_path / "saved", spec).predict(TEXTS), expected, atol=1e-5
    )


def test_base_checkpoint_without_a_head_loads_with_a_warning(bert_config, bert_tokenizer_json, tmp_path):
    from transformers import BertModel

    torch.manual_seed(1)
    base = BertModel(bert_config)
    bert_config.save_pretrained(tmp_path)
    torch.save(base.state_dict(), tmp_path / "bert_base_uncased.bin")
    with pytest.warns(UserWarning, match="classifier.*freshly initialised"):
        member = load_member(tmp_path / "bert_base_uncased.bin", "pytorch", tokenizer=bert_tokenizer_json)
    torch.testing.assert_close(
        member.model.bert.embeddings.word_embeddings.weight, base.embeddings.word_embeddings.weight
    )
    assert member.predict(TEXTS).shape == (2, 2)


def test_bin_without_config_json_says_what_is_needed(bert_model, bert_tokenizer_json, tmp_path):
    path = tmp_path / "bert_base_uncased.bin"
    torch.save(bert_model.state_dict(), path)
    with pytest.raises(MemberLoadError, match="config.json in the same folder") as info:
        ModelLoader(framework="pytorch", model_path=path, tokenizer_path=bert_tokenizer_json).load()
    assert str(tmp_path / "config.json") in str(info.value)
    with pytest.raises(MemberLoadError, match="architecture=.*config.json"):
        load_member(path)


def test_checkpoint_of_another_model_is_refused(bert_config, tmp_path):
    bert_config.save_pretrained(tmp_path)
    torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(MemberLoadError, match="none of the weights in .*pytorch_model.bin"):
        load_member(tmp_path / "pytorch_model.bin")


def test_tokenizer_file_that_is_not_a_tokenizer_names_the_file(bert_checkpoint, tmp_path):
    bogus = tmp_path / "bert_tokenizer.json"
    bogus.write_text(json.dumps({"vocab": ["a", "b"], "lowercase": True}))
    loader = ModelLoader(framework="pytorch", model_path=bert_checkpoint, tokenizer_path=bogus)
    with pytest.raises(MemberLoadError, match="is not a tokenizer file") as info:
        loader.load()
    assert str(bogus) in str(info.value)
    missing = ModelLoader(
        framework="pytorch", model_path=bert_checkpoint, tokenizer_path=tmp_path / "no.json"
    )
    with pytest.raises(MemberFileNotFoundError, match="no.json"):
        missing.load()


def test_unknown_framework_lists_the_accepted_names(keras_h5_path):
    with pytest.raises(MemberLoadError, match="unknown framework 'jax'") as info:
        ModelLoader(framework="jax", model_path=keras_h5_path).load()
    for name in ("pytorch", "tensorflow", "tf", "keras", "onnx", "sklearn", "huggingface"):
        assert name in str(info.value)


# -- item 2: loaded members are nn.Modules -------------------------------------------------------


class _TwoMemberNet(nn.Module):
    """The tutorial's pattern: loaded members as submodules, their outputs concatenated, a head on top."""

    def __init__(self, image_model: nn.Module, text_model: nn.Module, width: int):
        super().__init__()
        self.image_model = image_model
        self.text_model = text_model
        self.classifier = nn.Linear(width, 2)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.cat([self.image_model(images), self.text_model(input_ids)], dim=1))


def test_loaded_members_are_submodules_called_on_tensor_batches(
    bert_checkpoint, bert_tokenizer_json, vit_images
):
    image_model = vit_member()
    text_model = ModelLoader(
        framework="pytorch", model_path=bert_checkpoint, tokenizer_path=bert_tokenizer_json
    ).load()
    assert isinstance(image_model, TorchMember) and isinstance(text_model, HFMember)
    net = _TwoMemberNet(image_model, text_model, width=3 + 2)
    owned = {id(p) for p in net.parameters()}
    assert all(id(p) in owned for p in text_model.parameters())
    assert all(id(p) in owned for p in image_model.parameters())
    input_ids = torch.tensor(text_model.tokenizer(["a text"] * 6)["input_ids"])
    out = net(vit_images, input_ids)
    assert out.shape == (6, 2)
    out.sum().backward()
    assert text_model.model.bert.embeddings.word_embeddings.weight.grad is not None
    assert net.classifier.weight.grad is not None


def test_keras_member_is_a_submodule_called_on_tensor_batches(keras_h5_path, images_hwc):
    member = ModelLoader(framework="tensorflow", model_path=keras_h5_path, input_shape=(8, 8, 3)).load()
    assert isinstance(member, nn.Module)
    net = nn.Module()
    net.image_model = member
    assert sum(p.numel() for p in net.parameters()) == member.n_parameters
    x = torch.from_numpy(images_hwc).requires_grad_()
    out = net.image_model(x)
    np.testing.assert_allclose(out.detach().numpy(), member.predict(images_hwc), atol=1e-6)
    out.sum().backward()
    assert x.grad is not None


# -- item 11: the ViT model pool ------------------------------------------------------------------


@pytest.mark.parametrize("factory", ["vit_pytorch:ViT", "vit_pytorch:SimpleViT"])
def test_load_member_builds_vit_pytorch_classes_from_an_import_path(factory, vit_images):
    import vit_pytorch

    member = vit_member(factory)
    assert isinstance(member, TorchMember)
    assert isinstance(member.module, getattr(vit_pytorch, factory.split(":")[1]))
    assert member.name == factory.split(":")[1].lower()
    assert member.architecture_kwargs == VIT_KWARGS
    scores = member.predict(vit_images)
    assert scores.shape == (6, 3)
    with torch.no_grad():
        np.testing.assert_allclose(scores, member.module.eval()(vit_images).numpy(), atol=1e-6)


def test_a_class_in_a_submodule_of_the_package_is_found(vit_images):
    from vit_pytorch.cait import CaiT

    member = vit_member("vit_pytorch:CaiT", cls_depth=1)
    assert isinstance(member.module, CaiT)
    assert member.architecture == "vit_pytorch.cait:CaiT"
    assert member.predict(vit_images).shape == (6, 3)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_file_is_loaded_into_the_built_model(suffix, vit_images, tmp_path):
    trained = vit_member(seed=1)
    path = tmp_path / f"vit{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_model

        save_model(trained.module, str(path))
    else:
        torch.save(trained.module.state_dict(), path)
    torch.manual_seed(2)  # a different initialisation: only the weights file can make them agree
    member = load_member("vit_pytorch:ViT", weights=path, name="vit_a", **VIT_KWARGS)
    np.testing.assert_allclose(member.predict(vit_images), trained.predict(vit_images), atol=1e-6)
    spec = member.save(tmp_path / "saved")
    assert spec["file"] == "weights.safetensors" and spec["architecture"] == "vit_pytorch:ViT"
    reloaded = load_saved_member(tmp_path / "saved", spec)
    np.testing.assert_allclose(reloaded.predict(vit_images), trained.predict(vit_images), atol=1e-6)


def test_bad_factory_arguments_name_the_factory_and_the_arguments():
    with pytest.raises(MemberLoadError, match="vit_pytorch:ViT.*failed with.*patch_size"):
        load_member("vit_pytorch:ViT", image_size=32, patch_size=7, num_classes=3)
    with pytest.raises(MemberLoadError, match="builds a torch member"):
        load_member("vit_pytorch:ViT", "onnx", **VIT_KWARGS)


def test_weighted_average_validation_weights_members_by_validation_accuracy(vit_images):
    pool = [vit_member("vit_pytorch:ViT", seed=0), vit_member("vit_pytorch:SimpleViT", seed=3)]
    images = torch.rand(40, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    # Labels that agree with the ViT on 30 of 40 images: it should get the larger weight.
    y = pool[0].predict(images).argmax(axis=1)
    y[30:] = (y[30:] + 1) % 3
    preds = score_members(pool, images, y=y)
    accuracy = (preds.proba.argmax(axis=2) == y).mean(axis=1)
    fused = WeightedAverage(weights="validation").fit(preds, y)
    np.testing.assert_allclose(fused.weights_, accuracy / accuracy.sum())
    assert fused.weights_[0] > fused.weights_[1]
    assert fused.combine(preds).shape == (40, 3)
