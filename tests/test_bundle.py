"""FusedModel and its bundle: save/load round trips, checksums, no pickle, atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from torch import nn

from modelfusion import FusedModel, load_member, score_members
from modelfusion.errors import BundleError, StrategyError, UnsafeFormatError
from modelfusion.strategies import Mean, WeightedAverage


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


@pytest.fixture(scope="module")
def mixed_members(digits_split):
    d = digits_split
    lr = load_member(LogisticRegression(max_iter=300).fit(d["X_train"], d["y_train"]), name="lr")
    nb = load_member(GaussianNB().fit(d["X_train"], d["y_train"]), name="nb")
    net = load_member(_mlp(0), name="mlp", output_kind="logits")
    return [lr, nb, net]


@pytest.fixture(scope="module")
def fused(mixed_members, digits_split):
    preds = score_members(mixed_members, digits_split["X_val"], y=digits_split["y_val"])
    strategy = WeightedAverage({"lr": 0.5, "nb": 0.2, "mlp": 0.3}).fit(preds)
    return FusedModel(mixed_members, strategy)


def test_fused_predict_proba_matches_strategy_on_member_predictions(fused, digits_split):
    X = digits_split["X_test"]
    expected = (
        0.5 * fused.members[0].predict_proba(X)
        + 0.2 * fused.members[1].predict_proba(X)
        + 0.3 * fused.members[2].predict_proba(X)
    )
    np.testing.assert_allclose(fused.predict_proba(X), expected, atol=1e-5)
    assert fused.predict(X).shape == (len(X),)


def test_save_load_round_trip_gives_identical_predictions(fused, digits_split, tmp_path):
    path = fused.save(tmp_path / "bundle")
    loaded = FusedModel.load(path)
    X = digits_split["X_test"]
    np.testing.assert_allclose(loaded.predict_proba(X), fused.predict_proba(X), atol=1e-6)
    assert loaded.names == fused.names
    np.testing.assert_allclose(loaded.strategy.weights_, fused.strategy.weights_)


def test_manifest_describes_members_strategy_versions_and_checksums(fused, tmp_path):
    path = fused.save(tmp_path / "bundle")
    manifest = json.loads((path / "manifest.json").read_text())
    assert [m["framework"] for m in manifest["members"]] == ["sklearn", "sklearn", "torch"]
    assert manifest["strategy"]["class"] == "WeightedAverage"
    assert manifest["strategy"]["params"]["weights"] == {"__dict__": {"lr": 0.5, "nb": 0.2, "mlp": 0.3}}
    assert manifest["classes"] == list(range(10))
    assert {"torch", "numpy", "scikit-learn", "onnxruntime"} <= set(manifest["versions"])
    assert all(len(d) == 64 for d in manifest["checksums"].values())


def test_bundle_contains_no_pickle(fused, tmp_path):
    path = fused.save(tmp_path / "bundle")
    suffixes = {p.suffix for p in path.rglob("*") if p.is_file()}
    assert not suffixes & {".pkl", ".pickle", ".joblib"}
    assert suffixes <= {
        ".json",
        ".skops",
        ".safetensors",
        ".onnx",
        ".pt2",
        ".pt",
        ".keras",
        ".txt",
        ".model",
        ".sha256",
    }


def test_tampered_file_fails_the_checksum(fused, tmp_path):
    path = fused.save(tmp_path / "bundle")
    target = next(p for p in path.rglob("*.skops"))
    target.write_bytes(target.read_bytes()[:-8] + b"tampered")
    with pytest.raises(BundleError, match=r"checksum mismatch"):
        FusedModel.load(path)


def test_missing_manifest_is_not_a_bundle(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="manifest.json is missing"):
        FusedModel.load(tmp_path / "empty")


def test_interrupted_save_leaves_no_bundle(fused, tmp_path, monkeypatch):
    import modelfusion.bundle as bundle

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bundle, "save_strategy", boom)
    with pytest.raises(KeyboardInterrupt):
        fused.save(tmp_path / "bundle")
    assert list(tmp_path.iterdir()) == []


def test_overwriting_a_bundle_replaces_it_atomically(fused, tmp_path):
    fused.save(tmp_path / "bundle")
    fused.save(tmp_path / "bundle")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    with pytest.raises(BundleError, match="already exists"):
        fused.save(tmp_path / "bundle", overwrite=False)


def test_fused_model_of_torch_members_is_one_nn_module(digits_split):
    members = [load_member(_mlp(s), name=f"mlp{s}", output_kind="logits") for s in range(3)]
    preds = score_members(members, digits_split["X_val"], y=digits_split["y_val"])
    fused = FusedModel(members, Mean().fit(preds))
    module = fused.to_torch()
    assert isinstance(module, nn.Module)
    X = digits_split["X_test"]
    with torch.no_grad():
        out = module(torch.as_tensor(X)).numpy()
    np.testing.assert_allclose(out, fused.predict_proba(X), atol=1e-5)


def test_to_torch_names_the_members_that_are_not_torch(fused):
    with pytest.raises(StrategyError, match=r"\['lr', 'nb'\]"):
        fused.to_torch()


def test_strategy_fitted_on_other_members_is_rejected(mixed_members, digits_split):
    preds = score_members(mixed_members[:2], digits_split["X_val"], y=digits_split["y_val"])
    with pytest.raises(StrategyError, match="fitted on members"):
        FusedModel(mixed_members, Mean().fit(preds))


def test_bundle_architecture_that_imports_code_needs_trust(digits_split, tmp_path):
    from tests.members.architectures import make_mlp

    member = load_member(
        make_mlp(), name="mlp", output_kind="logits", architecture="tests.members.architectures:make_mlp"
    )
    preds = score_members([member], digits_split["X_val"], y=digits_split["y_val"])
    path = FusedModel([member], Mean().fit(preds)).save(tmp_path / "bundle")
    with pytest.raises(
        UnsafeFormatError, match=r"importing and calling 'tests.members.architectures:make_mlp'.*trust"
    ):
        FusedModel.load(path)
    assert FusedModel.load(path, trust=True).names == ["mlp"]


def test_save_refuses_to_replace_a_folder_that_is_not_a_bundle(fused, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "report.html").write_text("keep me")
    with pytest.raises(BundleError, match="not a modelfusion bundle; refusing"):
        fused.save(results)
    assert (results / "report.html").read_text() == "keep me"


def test_malformed_manifest_is_a_bundle_error(fused, tmp_path):
    path = fused.save(tmp_path / "bundle")
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["members"][0]["dir"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="malformed"):
        FusedModel.load(path)
