"""TorchMember: prediction, every file format it loads, save/load_saved and fingerprints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from modelfusion.errors import MemberLoadError, UnsafeFormatError
from modelfusion.members import TorchMember, load_member
from tests.members.architectures import TokenBag, make_mlp
from tests.members.conftest import MLP_ARCHITECTURE

# torch.jit is deprecated in favour of torch.export but still what many checkpoints are.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


def _state_dict_file(mlp, directory, name="mlp.safetensors"):
    path = directory / name
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in mlp.state_dict().items()}, str(path))
    else:
        torch.save(mlp.state_dict(), path)
    return path


def test_torch_member_predicts_the_module_logits_for_a_numpy_batch(mlp, X, mlp_logits):
    member = TorchMember(mlp, name="mlp")
    out = member.predict(X)
    assert member.output_kind == "logits"
    assert out.shape == (len(X), 10)
    np.testing.assert_allclose(out, mlp_logits, atol=1e-6)


def test_torch_member_accepts_float64_lists(mlp, X, mlp_logits):
    out = TorchMember(mlp).predict(X.astype(np.float64).tolist())
    np.testing.assert_allclose(out, mlp_logits, atol=1e-5)


def test_torch_member_keeps_integer_inputs_as_int64_token_ids():
    ids = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int32)
    bag = TokenBag()
    out = TorchMember(bag).predict(ids)
    with torch.no_grad():
        expected = bag(torch.from_numpy(ids).long()).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_torch_member_works_as_a_submodule_of_another_network(X):
    member = TorchMember(make_mlp(), name="mlp")
    parent = nn.Sequential(member, nn.Linear(10, 2))
    out = parent(torch.from_numpy(X[:3]))
    out.sum().backward()
    assert out.shape == (3, 2)
    assert member.module[0].weight.grad is not None


def test_torch_predict_restores_training_mode(X):
    net = make_mlp().train()
    TorchMember(net).predict(X[:2])
    assert net.training


def test_torch_member_remembers_two_rows_of_the_first_batch_as_example_input(mlp, X):
    member = TorchMember(mlp)
    member.predict(X[:5])
    member.predict(X[10:15])
    torch.testing.assert_close(member.example_input_, torch.from_numpy(X[:2]))


def test_torch_regression_member_emits_values(X):
    member = TorchMember(make_mlp(n_classes=1), task="regression")
    assert member.output_kind == "values"
    assert member.predict(X).shape == (len(X), 1)


def test_torch_n_parameters_counts_module_parameters(mlp):
    assert TorchMember(mlp).n_parameters == 64 * 32 + 32 + 32 * 10 + 10


def test_torchscript_file_loads_with_trust_and_matches_the_module(mlp, X, mlp_logits, tmp_path):
    path = tmp_path / "mlp.ts"
    torch.jit.script(mlp).save(str(path))
    with pytest.raises(UnsafeFormatError, match="TorchScript, a program"):
        load_member(path)
    member = load_member(path, trust=True)
    assert isinstance(member, TorchMember) and member.name == "mlp"
    np.testing.assert_allclose(member.predict(X), mlp_logits, atol=1e-6)


def test_torchscript_saved_as_pt_is_detected_from_the_archive(mlp, X, mlp_logits, tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.script(mlp).save(str(path))
    member = load_member(path, trust=True)
    assert isinstance(member.module, torch.jit.ScriptModule)
    np.testing.assert_allclose(member.predict(X), mlp_logits, atol=1e-6)


def test_exported_pt2_file_loads_with_a_dynamic_batch(mlp, X, mlp_logits, tmp_path):
    program = torch.export.export(
        mlp, (torch.from_numpy(X[:2]),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    path = tmp_path / "mlp.pt2"
    torch.export.save(program, path)
    member = load_member(path)
    np.testing.assert_allclose(member.predict(X), mlp_logits, atol=1e-6)
    np.testing.assert_allclose(member.predict(X[:7]), mlp_logits[:7], atol=1e-6)


def test_safetensors_state_dict_loads_with_an_import_path_architecture(mlp, X, mlp_logits, tmp_path):
    member = load_member(_state_dict_file(mlp, tmp_path), architecture=MLP_ARCHITECTURE)
    np.testing.assert_allclose(member.predict(X), mlp_logits, atol=1e-6)


def test_pt_state_dict_loads_with_weights_only_and_architecture_kwargs(tmp_path, X):
    net = make_mlp(n_hidden=8, seed=3)
    member = load_member(
        _state_dict_file(net, tmp_path, "small.pt"),
        architecture=MLP_ARCHITECTURE,
        architecture_kwargs={"n_hidden": 8},
    )
    with torch.no_grad():
        np.testing.assert_allclose(member.predict(X), net(torch.from_numpy(X)).numpy(), atol=1e-6)


def test_checkpoint_dict_with_a_state_dict_entry_loads(mlp, X, mlp_logits, tmp_path):
    path = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 3, "state_dict": mlp.state_dict()}, path)
    member = load_member(path, architecture=MLP_ARCHITECTURE)
    np.testing.assert_allclose(member.predict(X), mlp_logits, atol=1e-6)


def test_torchvision_architecture_by_name_loads_a_state_dict(tmp_path):
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=3).eval()
    path = tmp_path / "resnet.pt"
    torch.save(net.state_dict(), path)
    images = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    member = load_member(path, architecture="resnet18", architecture_kwargs={"num_classes": 3})
    with torch.no_grad():
        expected = net(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(member.predict(images), expected, atol=1e-5)


def test_state_dict_without_architecture_asks_for_architecture(mlp, tmp_path):
    with pytest.raises(MemberLoadError, match="architecture="):
        load_member(_state_dict_file(mlp, tmp_path))


def test_weights_that_do_not_fit_the_architecture_raise_member_load_error(mlp, tmp_path):
    with pytest.raises(MemberLoadError, match="do not fit architecture"):
        load_member(
            _state_dict_file(mlp, tmp_path),
            architecture=MLP_ARCHITECTURE,
            architecture_kwargs={"n_classes": 3},
        )


def test_unknown_architecture_name_says_what_was_tried(mlp, tmp_path):
    with pytest.raises(MemberLoadError, match="unknown architecture 'no_such_net'.*torchvision"):
        load_member(_state_dict_file(mlp, tmp_path), architecture="no_such_net")


def test_unimportable_architecture_path_names_the_module(mlp, tmp_path):
    with pytest.raises(MemberLoadError, match="cannot import module 'no_such_package.nets'"):
        load_member(_state_dict_file(mlp, tmp_path), architecture="no_such_package.nets:make")


def test_pickled_module_is_refused_without_trust(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(make_mlp(), path)
    with pytest.raises(UnsafeFormatError, match="trust=True"):
        load_member(path)


def test_pickled_module_loads_with_trust(tmp_path, X):
    net = make_mlp(seed=5)
    path = tmp_path / "whole.pt"
    torch.save(net, path)
    member = load_member(path, trust=True)
    with torch.no_grad():
        np.testing.assert_allclose(member.predict(X), net(torch.from_numpy(X)).numpy(), atol=1e-6)


def test_save_with_architecture_writes_safetensors_and_round_trips(mlp, X, tmp_path):
    member = TorchMember(mlp, name="mlp", architecture=MLP_ARCHITECTURE, classes=list("abcdefghij"))
    spec = member.save(tmp_path)
    assert spec["file"] == "weights.safetensors" and spec["architecture"] == MLP_ARCHITECTURE
    restored = TorchMember.load_saved(tmp_path, spec, trust=True)  # a test module: not a listed network
    np.testing.assert_allclose(restored.predict(X), member.predict(X), atol=1e-6)
    assert restored.classes.tolist() == list("abcdefghij")
    assert restored.name == "mlp" and restored.output_kind == "logits"


def test_save_scripted_module_writes_torchscript_and_round_trips(mlp, X, tmp_path):
    member = TorchMember(torch.jit.script(mlp), name="scripted")
    spec = member.save(tmp_path)
    assert spec["file"] == "model.torchscript.pt"
    np.testing.assert_allclose(
        TorchMember.load_saved(tmp_path, spec, trust=True).predict(X), member.predict(X), atol=1e-6
    )


def test_save_plain_module_exports_pt2_with_a_dynamic_batch(mlp, X, tmp_path):
    member = TorchMember(mlp, name="plain")
    expected = member.predict(X)
    spec = member.save(tmp_path)
    assert spec["file"] == "model.pt2"
    restored = TorchMember.load_saved(tmp_path, spec)
    np.testing.assert_allclose(restored.predict(X), expected, atol=1e-6)
    np.testing.assert_allclose(restored.predict(X[:5]), expected[:5], atol=1e-6)


def test_save_plain_module_before_any_predict_asks_for_an_example_input(mlp, tmp_path):
    with pytest.raises(ValueError, match="call member.predict"):
        TorchMember(mlp).save(tmp_path)


def test_input_shape_gives_save_an_example_input_before_predict(mlp, X, tmp_path):
    member = TorchMember(mlp, input_shape=(64,))
    spec = member.save(tmp_path)
    np.testing.assert_allclose(
        TorchMember.load_saved(tmp_path, spec, trust=True).predict(X), member.predict(X), atol=1e-6
    )


def test_torch_fingerprint_is_stable_across_reloads(mlp, tmp_path):
    path = _state_dict_file(mlp, tmp_path)
    first = load_member(path, architecture=MLP_ARCHITECTURE).fingerprint()
    second = load_member(path, architecture=MLP_ARCHITECTURE).fingerprint()
    assert first == second == TorchMember(mlp).fingerprint()


def test_torch_fingerprint_differs_for_different_weights():
    assert TorchMember(make_mlp(seed=0)).fingerprint() != TorchMember(make_mlp(seed=1)).fingerprint()
