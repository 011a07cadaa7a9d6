"""Distillation: a heterogeneous ensemble (scikit-learn + torch) distilled into one MLP from soft targets
scored once; per-teacher mode; the vit-pytorch style wrapper; bad students and teachers named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from torch import nn

from modelfusion import FusedModel, load_member, score_members
from modelfusion.distill import Distiller, DistillWrapper, distillation_loss
from modelfusion.errors import ParameterError, PredictionError
from modelfusion.strategies import Mean

OPTIONS = dict(lr=3e-3, batch_size=64, max_epochs=15, seed=0, device="cpu", progress=False)


@pytest.fixture(scope="module")
def ensemble():
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(X))
    tr, va, te = order[:900], order[900:1300], order[1300:]
    members = [
        load_member(LogisticRegression(max_iter=300).fit(X[tr], y[tr]), name="logreg"),
        load_member(RandomForestClassifier(n_estimators=40, random_state=0).fit(X[tr], y[tr]), name="forest"),
        load_member(KNeighborsClassifier(5).fit(X[tr], y[tr]), name="knn"),
    ]
    fused = FusedModel(members, Mean().fit(score_members(members, X[va], progress=False)))
    return fused, (X[tr], y[tr]), (X[va], y[va]), (X[te], y[te])


def _student(width: int = 64, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))


def _accuracy(member, X, y) -> float:
    return float((member.predict(X).argmax(axis=1) == y).mean())


def test_a_heterogeneous_ensemble_distils_into_one_mlp_from_targets_scored_once(ensemble, monkeypatch):
    fused, train, val, (X_te, y_te) = ensemble
    calls = {m.name: 0 for m in fused.members}
    for m in fused.members:
        real = m.predict

        def counted(batch, _real=real, _name=m.name):
            calls[_name] += 1
            return _real(batch)

        monkeypatch.setattr(m, "predict", counted)
    distiller = Distiller(fused, _student(), temperature=2.0, alpha=0.9, **OPTIONS).fit(train, val)
    once = -(-len(train[0]) // 256) + -(-len(val[0]) // 256)  # one pass over each, in batches of 256
    assert set(calls.values()) == {once}, calls  # 15 epochs, yet each member scored train and val once
    monkeypatch.undo()
    fused_acc = float((fused.predict(X_te) == y_te).mean())
    student_acc = _accuracy(distiller.student_member_, X_te, y_te)
    assert student_acc >= 0.95 * fused_acc, (student_acc, fused_acc)
    assert list(distiller.student_member_.classes) == list(range(10))
    assert len(distiller.trainer_.history_) == 15


def test_the_distilled_student_is_a_member_a_bundle_keeps(ensemble, tmp_path):
    fused, train, _, (X_te, _) = ensemble
    distiller = Distiller(fused, _student(), **{**OPTIONS, "max_epochs": 2}).fit(train)
    student = distiller.student_member_
    bundle = FusedModel([student], Mean().fit(score_members([student], X_te, progress=False))).save(
        tmp_path / "b"
    )
    loaded = FusedModel.load(bundle)
    np.testing.assert_allclose(
        loaded.predict_proba(X_te),
        FusedModel([student], Mean().fit(score_members([student], X_te, progress=False))).predict_proba(X_te),
        atol=1e-5,
    )


def test_per_teacher_mode_averages_one_kl_term_per_member_with_weights(ensemble):
    fused, train, val, _ = ensemble
    d = Distiller(
        fused.members,
        _student(),
        teacher_mode="per_teacher",
        teacher_weights={"logreg": 1, "forest": 3, "knn": 0},
        **{**OPTIONS, "max_epochs": 2},
    )
    targets, classes, weights = d.soft_targets(train[0][:10])
    assert targets.shape == (3, 10, 10) and weights.tolist() == [0.25, 0.75, 0.0]
    d.fit(train, val)
    assert d.trainer_.history_[-1]["val_loss"] > 0


def test_the_loss_is_hintons_and_pure_soft_targets_need_no_labels():
    torch.manual_seed(0)
    logits, teacher = torch.randn(8, 5), torch.softmax(torch.randn(8, 5), dim=1)
    labels = torch.randint(0, 5, (8,))
    T = 3.0
    soft = torch.softmax(torch.log(teacher) / T, dim=1)
    kl = nn.functional.kl_div(torch.log_softmax(logits / T, dim=1), soft, reduction="batchmean")
    expected = 0.7 * T**2 * kl + 0.3 * nn.functional.cross_entropy(logits, labels)
    got = distillation_loss(logits, teacher, labels, temperature=T, alpha=0.7)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(distillation_loss(logits, teacher, None, temperature=T, alpha=1.0))
    with pytest.raises(ParameterError, match="alpha < 1 mixes in the hard-label loss"):
        distillation_loss(logits, teacher, None, temperature=T, alpha=0.5)


def test_the_wrapper_takes_images_and_labels_and_trains_only_the_student():
    torch.manual_seed(0)
    teacher, student = _student(32, seed=1), _student(16, seed=2)
    distiller = DistillWrapper(student, teacher, temperature=3.0, alpha=0.5)
    loss = distiller(torch.rand(6, 64), torch.randint(0, 10, (6,)))
    loss.backward()
    assert loss.dim() == 0 and all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())
    hard = DistillWrapper(student, teacher, hard=True)(torch.rand(6, 64), torch.randint(0, 10, (6,)))
    assert torch.isfinite(hard)


def test_a_student_of_the_wrong_width_and_a_teacher_that_cannot_score_are_named(ensemble):
    fused, train, _, _ = ensemble
    wrong = nn.Sequential(nn.Linear(64, 7))
    with pytest.raises(
        ParameterError, match="the student returns \\[2, 7\\] for 2 rows but the teacher has 10 classes"
    ):
        Distiller(fused, wrong, **OPTIONS).fit(train)
    X, y = train
    with pytest.raises(PredictionError, match="the teacher cannot score the training data"):
        Distiller(fused, _student(), **OPTIONS).fit((X[:, :32], y))
    with pytest.raises(ParameterError, match="teacher_mode='mix' is not one of mean, per_teacher"):
        Distiller(fused, _student(), teacher_mode="mix")


def _shift_and_noise(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Digits moved by up to a pixel and speckled: the same digit, a row no teacher was fitted on."""
    images = X.reshape(-1, 8, 8).copy()
    for i, (dx, dy) in enumerate(rng.integers(-1, 2, (len(images), 2))):
        images[i] = np.roll(np.roll(images[i], dx, 0), dy, 1)
    return np.clip(images.reshape(len(X), 64) + rng.normal(0, 0.1, X.shape), 0, 1).astype(np.float32)


def test_on_an_augmented_transfer_set_the_student_beats_the_same_student_trained_on_labels(ensemble):
    """The teacher scores the augmented copies once; its soft targets there carry what labels do not."""
    from modelfusion.training import Trainer

    fused, (X, y), _, (X_te, y_te) = ensemble
    options = {**OPTIONS, "max_epochs": 20}
    distiller = Distiller(
        fused, _student(), temperature=4.0, alpha=0.9, augment=_shift_and_noise, augment_copies=4, **options
    ).fit((X, y))
    X_aug, y_aug = distiller.transfer_set(X, y)
    assert len(X_aug) == 5 * len(X)
    labels_only = _student()
    Trainer(labels_only, nn.functional.cross_entropy, **options).fit((X_aug, y_aug))
    plain = float((labels_only(torch.from_numpy(X_te)).argmax(1).numpy() == y_te).mean())
    distilled = _accuracy(distiller.student_member_, X_te, y_te)
    assert distilled > plain, (distilled, plain)
    assert distilled >= 0.97 * float((fused.predict(X_te) == y_te).mean())
    with pytest.raises(ParameterError, match="augment_copies=2 needs augment="):
        Distiller(fused, _student(), augment_copies=2)


def test_a_built_in_student_is_sized_from_the_data_and_a_bundle_rebuilds_it_without_trust(ensemble, tmp_path):
    """``student="mlp"``: in/out widths from the data and the teacher; saved as safetensors + an
    allow-listed architecture, so FusedModel.load needs no trust."""
    import json

    from modelfusion.training.students import build_student

    fused, train, _, (X_te, _) = ensemble
    d = Distiller(fused, "mlp", student_kwargs={"width": 48}, **{**OPTIONS, "max_epochs": 2}).fit(train)
    student = d.student_member_
    assert student.architecture == "modelfusion.training.students:MLPStudent"
    assert student.architecture_kwargs == {"in_features": 64, "n_classes": 10, "width": 48}
    model = FusedModel([student], Mean().fit(score_members([student], X_te, progress=False)))
    path = model.save(tmp_path / "bundle")
    spec = json.loads((path / "manifest.json").read_text())["members"][0]
    assert spec["file"] == "weights.safetensors"
    np.testing.assert_allclose(
        FusedModel.load(path).predict_proba(X_te), model.predict_proba(X_te), atol=1e-5
    )
    cnn, _, options = build_student("cnn", sample_shape=(1, 8, 8), n_classes=3, width=4)
    assert cnn(torch.zeros(2, 1, 8, 8)).shape == (2, 3) and options["in_channels"] == 1
    with pytest.raises(ParameterError, match="the 'cnn' student takes images"):
        build_student("cnn", sample_shape=(64,), n_classes=10)
    with pytest.raises(ParameterError, match="student 'vit' is not a built-in one"):
        build_student("vit", sample_shape=(64,), n_classes=10)


def test_vit_pytorchs_distillable_vit_is_a_student_on_images(ensemble):
    """vit-pytorch's ``DistillableViT`` learns from the ensemble's soft targets on 1x8x8 digit images."""
    pytest.importorskip("vit_pytorch")

    fused, (X, y), _, (X_test, y_test) = ensemble
    teacher = score_members(fused.members, X, progress=False)  # scored on the flat rows, once
    vit = {"image_size": 8, "patch_size": 2, "num_classes": 10, "dim": 32, "depth": 2, "heads": 4}
    vit.update(mlp_dim=64, channels=1)
    images = X.reshape(-1, 1, 8, 8)
    name = "vit_pytorch.distill:DistillableViT"  # by import path and keyword arguments
    d = Distiller(teacher, name, student_kwargs=vit, alpha=0.9, **{**OPTIONS, "max_epochs": 6}).fit(
        (images, y)
    )
    assert type(d.student_member_.module).__name__ == "DistillableViT"
    history = d.trainer_.history_
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    proba = d.student_member_.predict_proba(X_test.reshape(-1, 1, 8, 8))
    assert proba.shape == (len(X_test), 10) and (proba.argmax(1) == y_test).mean() > 0.5


def test_a_torchvision_architecture_by_name_is_a_student(ensemble, tmp_path):
    pytest.importorskip("torchvision")
    fused, (X, y), _, (X_test, _) = ensemble
    teacher = score_members(fused.members, X[:128], progress=False)
    images = np.repeat(X[:128].reshape(-1, 1, 8, 8), 3, axis=1)  # 3 channels, 8x8: a tiny image
    student_kwargs = {"num_classes": 10, "width_mult": 0.25}
    d = Distiller(teacher, "mobilenet_v2", student_kwargs=student_kwargs, **{**OPTIONS, "max_epochs": 1})
    member = d.fit((images, y[:128])).student_member_
    assert member.architecture == "mobilenet_v2" and member.architecture_kwargs == student_kwargs
    FusedModel([member], Mean().fit(score_members([member], images, progress=False))).save(tmp_path / "b")
    loaded = FusedModel.load(tmp_path / "b")  # a torchvision name with plain arguments: no trust needed
    np.testing.assert_allclose(loaded.predict_proba(images[:4]), member.predict_proba(images[:4]), atol=1e-5)
