"""Feature (hint) distillation: a student's layer pulled towards a torch teacher member's activations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from torch import nn

from modelfusion import FusedModel, load_member, score_members
from modelfusion.distill import Distiller
from modelfusion.errors import ParameterError
from modelfusion.members.torch import TorchMember
from modelfusion.strategies import Mean
from modelfusion.training import Trainer
from modelfusion.training.hints import HintStudent, connector, resolve_hint_layers, teacher_features

OPTIONS = dict(lr=3e-3, batch_size=64, max_epochs=12, seed=0, device="cpu", progress=False)


@pytest.fixture(scope="module")
def teacher():
    """A torch MLP (64-128-10) and a logistic regression on digits, fused by the mean."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(X))
    tr, va = order[:900], order[900:1300]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    Trainer(net, nn.functional.cross_entropy, **{**OPTIONS, "max_epochs": 8}).fit((X[tr], y[tr]))
    members = [
        TorchMember(net.eval(), name="net", classes=list(range(10))),
        load_member(LogisticRegression(max_iter=300).fit(X[tr], y[tr]), name="logreg"),
    ]
    fused = FusedModel(members, Mean().fit(score_members(members, X[va], progress=False)))
    return fused, (X[tr], y[tr]), (X[va], y[va])


def _student(seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def _layer_mse(student: nn.Module, target: np.ndarray, X: np.ndarray) -> float:
    with torch.no_grad():
        hidden = student[:2](torch.from_numpy(X)).numpy()
    return float(((hidden - target) ** 2).mean())


def test_hints_pull_the_students_layer_onto_the_teachers_activations(teacher):
    fused, train, val = teacher
    kwargs = dict(temperature=4.0, alpha=0.9, **OPTIONS)
    plain = Distiller(fused, _student(), **kwargs).fit(train, val)
    hinted = Distiller(fused, _student(), hint_layers=["1"], hint_weight=5.0, **kwargs).fit(train, val)
    X_val, y_val = val
    pairs = resolve_hint_layers(["1"], hinted.student_member_.module, fused.members)
    target = teacher_features(pairs, X_val)[0]  # the teacher's ReLU layer on rows it never saw
    assert target.shape == (len(X_val), 128)
    mse_plain = _layer_mse(plain.student_member_.module, target, X_val)
    mse_hinted = _layer_mse(hinted.student_member_.module, target, X_val)
    assert mse_hinted < 0.5 * mse_plain, (mse_plain, mse_hinted)
    accuracy = (hinted.student_member_.predict(X_val).argmax(1) == y_val).mean()
    assert accuracy > 0.85
    assert not hinted.student_member_.module[1]._forward_hooks  # the training hooks are gone


def test_a_mapping_pairs_layers_of_other_widths_through_a_learned_connector(teacher):
    fused, train, val = teacher
    d = Distiller(
        fused, "mlp", student_kwargs={"width": 32}, hint_layers={"net.2": "net:1"}, alpha=0.9, **OPTIONS
    ).fit(train, val)
    X_val, y_val = val
    assert (d.student_member_.predict(X_val).argmax(1) == y_val).mean() > 0.85
    assert "connectors" not in " ".join(d.student_member_.module.state_dict())  # the student alone is kept
    model = HintStudent(d.student_member_.module, ["net.2"], [(128,)], train[0][:2])
    assert isinstance(model.connectors[0], nn.Sequential)  # 32 -> 128: flatten + linear
    model.train()
    model(torch.from_numpy(train[0][:8]))
    assert [tuple(h.shape) for h in model.hints_] == [(8, 128)]
    assert model.release() is d.student_member_.module


def test_connectors_map_feature_maps_and_vectors_onto_the_teachers_shape():
    maps = connector((8, 16, 16), (32, 8, 8))
    assert maps(torch.zeros(2, 8, 16, 16)).shape == (2, 32, 8, 8)
    assert isinstance(connector((32, 8, 8), (32, 8, 8)), nn.Identity)
    flat = connector((16, 4, 4), (64,))
    assert flat(torch.zeros(3, 16, 4, 4)).shape == (3, 64)


def test_bad_hint_layers_are_named(teacher):
    fused, train, val = teacher
    student = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    with pytest.raises(ParameterError, match=r"the student has no layer 'body'.*0, 1, 2"):
        resolve_hint_layers({"body": "net:1"}, student, fused.members)
    with pytest.raises(ParameterError, match="teacher member 'net' has no layer 'head'"):
        resolve_hint_layers({"1": "net:head"}, student, fused.members)
    with pytest.raises(ParameterError, match="need a torch teacher member"):
        resolve_hint_layers(["1"], student, [fused.members[1]])
    second = TorchMember(nn.Sequential(nn.Linear(64, 10)), name="other", classes=list(range(10)))
    with pytest.raises(ParameterError, match="'member:layer'"):
        resolve_hint_layers({"1": "0"}, student, [*fused.members, second])
    preds = score_members(fused.members, train[0], progress=False)
    with pytest.raises(ParameterError, match="not a PredictionSet"):
        Distiller(preds, student, hint_layers=["1"])
    with pytest.raises(ParameterError, match="hint_weight"):
        Distiller(fused, student, hint_layers=["1"], hint_weight=0)
