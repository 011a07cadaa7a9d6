"""load_member, load_saved_member and ModelLoader: inference of the framework, options and bad inputs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from modelfusion.errors import MemberFileNotFoundError, MemberLoadError
from modelfusion.members import (
    Member,
    ModelLoader,
    OnnxMember,
    SklearnMember,
    TorchMember,
    load_member,
    load_saved_member,
)
from modelfusion.members.loading import EXTENSIONS, FRAMEWORK_ALIASES
from tests.members.architectures import make_mlp
from tests.members.conftest import MLP_ARCHITECTURE


@pytest.mark.parametrize("alias", ["torch", "PyTorch", "TORCH"])
def test_framework_names_are_case_insensitive(alias, mlp):
    assert isinstance(load_member(mlp, alias), TorchMember)


def test_unknown_framework_lists_the_accepted_names(mlp):
    with pytest.raises(MemberLoadError, match="unknown framework 'jax'.*pytorch.*scikit-learn.*huggingface"):
        load_member(mlp, "jax")


def test_missing_file_raises_file_not_found_with_the_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MemberFileNotFoundError, match=re.escape(str(tmp_path / "models" / "nope.onnx"))):
        load_member("models/nope.onnx")


def test_missing_hub_like_path_hints_at_framework_hf():
    with pytest.raises(MemberFileNotFoundError, match="framework='hf'"):
        load_member("some-org/some-model")


def test_unknown_extension_lists_the_supported_extensions(tmp_path):
    path = tmp_path / "model.xyz"
    path.write_bytes(b"0")
    with pytest.raises(MemberLoadError, match=r"'\.xyz'.*\.onnx, \.skops"):
        load_member(path)


def test_corrupt_pt_file_names_the_file_and_the_framework(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(MemberLoadError, match="broken.pt") as info:
        load_member(path)
    assert "torch" in str(info.value)


def test_corrupt_safetensors_file_names_the_file_and_the_framework(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(MemberLoadError, match="broken.safetensors' as a torch model"):
        load_member(path, architecture=MLP_ARCHITECTURE)


def test_corrupt_skops_file_names_the_file_and_the_framework(tmp_path):
    path = tmp_path / "broken.skops"
    path.write_bytes(b"garbage")
    with pytest.raises(MemberLoadError, match="broken.skops' as a sklearn model"):
        load_member(path)


def test_folder_without_config_json_is_rejected(tmp_path):
    with pytest.raises(MemberLoadError, match="without config.json"):
        load_member(tmp_path)


def test_frameworks_are_inferred_from_objects(mlp, logreg, onnx_dynamic_path):
    assert isinstance(load_member(mlp), TorchMember)
    assert isinstance(load_member(logreg), SklearnMember)
    assert isinstance(load_member(onnx.load(str(onnx_dynamic_path))), OnnxMember)


def test_object_of_unknown_kind_asks_for_a_framework():
    with pytest.raises(MemberLoadError, match="pass framework="):
        load_member(object())


def test_default_names_are_the_file_stem_or_the_lower_cased_class_name(onnx_dynamic_path, logreg):
    assert load_member(onnx_dynamic_path).name == "mlp_dynamic"
    assert load_member(logreg).name == "logisticregression"
    assert load_member(logreg, name="lr").name == "lr"


def test_common_options_pass_through_to_the_member(mlp):
    member = load_member(mlp, task="multilabel", output_kind="logits", classes=list("abcdefghij"))
    assert (member.task, member.output_kind, member.classes[0]) == ("multilabel", "logits", "a")


def test_preprocess_option_is_applied_before_the_model(logreg, X):
    member = load_member(logreg, preprocess=lambda batch: np.asarray(batch) * 0.0)
    np.testing.assert_allclose(member.predict(X), logreg.predict_proba(np.zeros_like(X)), atol=1e-6)


def test_unknown_option_is_rejected_with_the_accepted_ones(mlp):
    with pytest.raises(MemberLoadError, match="architectur .*accepted: .*architecture"):
        load_member(mlp, architectur="resnet18")


def test_an_existing_member_is_returned_as_is(mlp):
    member = TorchMember(mlp, name="a")
    assert load_member(member) is member
    assert load_member(member, name="b").name == "b"


def test_model_loader_is_an_alias_of_load_member(tmp_path, X):
    net = make_mlp(seed=2)
    path = tmp_path / "net.safetensors"
    TorchMember(net, architecture=MLP_ARCHITECTURE).save(tmp_path)
    (tmp_path / "weights.safetensors").rename(path)
    loader = ModelLoader(framework="pytorch", model_path=path, architecture=MLP_ARCHITECTURE, name="net")
    assert (loader.framework, loader.model_path, loader.input_shape, loader.tokenizer_path) == (
        "pytorch",
        path,
        None,
        None,
    )
    member = loader.load()
    expected = load_member(path, architecture=MLP_ARCHITECTURE).predict(X)
    assert member.name == "net"
    np.testing.assert_allclose(member.predict(X), expected, atol=1e-6)


def test_load_saved_member_dispatches_on_the_spec_framework(logreg, X, tmp_path):
    spec = load_member(logreg, name="lr").save(tmp_path)
    restored = load_saved_member(tmp_path, spec)
    assert isinstance(restored, SklearnMember)
    np.testing.assert_allclose(restored.predict(X), logreg.predict_proba(X), atol=1e-6)


def test_load_saved_member_rejects_an_unknown_framework(tmp_path):
    with pytest.raises(MemberLoadError, match="framework 'mxnet'"):
        load_saved_member(tmp_path, {"name": "m", "framework": "mxnet", "file": "model.params"})


def test_load_saved_member_reports_a_missing_file(tmp_path):
    with pytest.raises(MemberFileNotFoundError, match="model.onnx"):
        load_saved_member(tmp_path, {"name": "m", "framework": "onnx", "file": "model.onnx"})


def test_every_member_predicts_float32_rows(mlp, logreg, onnx_dynamic_path, X):
    for source in (mlp, logreg, onnx_dynamic_path):
        out = load_member(source).predict(X[:3])
        assert out.dtype == np.float32 and out.shape == (3, 10)


def test_tables_of_names_cover_every_framework():
    assert set(FRAMEWORK_ALIASES.values()) == set(EXTENSIONS.values()) | {"hf"}


def test_importing_members_does_not_import_optional_frameworks():
    code = (
        "import sys, modelfusion.members; "
        "print(sorted(m for m in ('transformers', 'keras', 'timm', 'torchvision') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.strip() == "[]"


def test_member_is_the_common_base(mlp):
    assert isinstance(load_member(mlp), Member) and isinstance(load_member(mlp), torch.nn.Module)


def test_path_given_as_string_works(onnx_dynamic_path):
    assert load_member(str(onnx_dynamic_path)).source_path == Path(onnx_dynamic_path)


def test_hub_id_with_framework_hf_goes_to_the_hf_loader(monkeypatch):
    import modelfusion.members.hf as hf

    calls = []

    def fake_load_hf(source, *, name, trust=False, tokenizer=None, **options):
        calls.append((source, name, trust))
        return "member"

    monkeypatch.setattr(hf, "load_hf", fake_load_hf)
    assert load_member("some-org/tiny-bert", framework="hf") == "member"
    assert calls == [("some-org/tiny-bert", "tiny-bert", False)]
