"""Members like the digits demo's (torch CNN with a reshape, ONNX MLP, five scikit-learn models), built in seconds."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from modelfusion import FusedModel, load_member, score_members
from modelfusion.data import build_preprocessor
from modelfusion.examples.digits import MLP, SmallCNN
from modelfusion.strategies import GreedySelection, Mean


def _fit(module: nn.Module, X: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    for _ in range(epochs):
        for idx in torch.randperm(len(Xt), generator=torch.Generator().manual_seed(seed)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(module(Xt[idx]), yt[idx]).backward()
            opt.step()
    return module.eval()


def export_torch_onnx(
    module: nn.Module, example: torch.Tensor, path, *, opset: int = 17, dynamic: bool = True
):
    """An ONNX member file written with the TorchScript exporter."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module.eval(),
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["pixels"],
            output_names=["logits"],
            dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None,
        )
    return path


@pytest.fixture(scope="package", autouse=True)
def _one_thread_per_runtime():
    """Two OpenMP and two OpenBLAS runtimes spin-wait against each other on two cores (a 5 s
    LogisticRegression fit instead of 30 ms); one thread each keeps these tests fast."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="package")
def digits_members(digits_split, tmp_path_factory):
    """Seven members of three frameworks, as in ``modelfusion demo``."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier

    d = digits_split
    X, y = d["X_train"], d["y_train"]
    estimators = {  # fitted before any torch work: OpenMP runtimes contend on two cores
        "logreg": LogisticRegression(C=0.5, max_iter=300),
        "forest": RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0),
        "boosting": HistGradientBoostingClassifier(max_iter=25, max_depth=3, random_state=0),
        "knn": KNeighborsClassifier(n_neighbors=9),
        "bayes": GaussianNB(var_smoothing=0.05),
    }
    sklearn_members = [load_member(est.fit(X, y), name=name) for name, est in estimators.items()]
    cnn = _fit(SmallCNN(channels=8), X.reshape(-1, 1, 8, 8), y, epochs=2, seed=0)
    reshape = {"reshape": [1, 8, 8]}
    cnn_member = load_member(cnn, name="cnn", output_kind="logits", preprocess=build_preprocessor(reshape))
    cnn_member.preprocess_spec = reshape
    mlp = _fit(MLP(), X, y, epochs=4, seed=1)
    path = export_torch_onnx(mlp, torch.as_tensor(X[:2]), tmp_path_factory.mktemp("onnx") / "mlp.onnx")
    mlp_member = load_member(path, name="mlp", output_kind="logits")
    return [cnn_member, mlp_member, *sklearn_members]


@pytest.fixture(scope="package")
def digits_val_preds(digits_members, digits_split):
    return score_members(digits_members, digits_split["X_val"], y=digits_split["y_val"], progress=False)


@pytest.fixture(scope="package")
def digits_fused(digits_members, digits_val_preds, digits_split):
    """The heterogeneous ensemble fused with greedy selection (weights, like the demo's winner)."""
    strategy = GreedySelection().fit(digits_val_preds, digits_split["y_val"])
    return FusedModel(digits_members, strategy)


@pytest.fixture(scope="package")
def torch_fused(digits_split):
    """An all-torch ensemble: two CNNs on reshaped input and an MLP, averaged."""
    d = digits_split
    reshape = {"reshape": [1, 8, 8]}
    members = []
    for i, (kind, width) in enumerate([("cnn", 4), ("cnn", 6), ("mlp", 16)]):
        torch.manual_seed(i)
        is_cnn = kind == "cnn"
        module = SmallCNN(channels=width) if is_cnn else MLP(hidden=width)
        prep = build_preprocessor(reshape) if is_cnn else None
        member = load_member(module.eval(), name=f"net{i}", output_kind="logits", preprocess=prep)
        member.preprocess_spec = reshape if is_cnn else None
        members.append(member)
    preds = score_members(members, d["X_val"], y=d["y_val"], progress=False)
    return FusedModel(members, Mean().fit(preds, d["y_val"]))


@pytest.fixture(scope="package")
def digits_bundle(digits_fused, tmp_path_factory):
    """The heterogeneous fused model saved once; copy it (``shutil.copytree``) before changing it."""
    return digits_fused.save(tmp_path_factory.mktemp("bundles") / "digits")


class WideCNN(nn.Module):
    """A CNN whose weights are mostly in deep convolutions and linear layers: what int8 shrinks."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),  # shallow (depth 9): stays float in static mode
            nn.ReLU(),
            nn.Conv2d(16, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 16, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@pytest.fixture(scope="package")
def conv_fused(digits_split):
    """Two trained WideCNNs on reshaped digits, averaged: ~150K float weights, 98% of them in int8-able layers."""
    d = digits_split
    reshape = {"reshape": [1, 8, 8]}
    members = []
    for i in range(2):
        torch.manual_seed(i)
        module = _fit(WideCNN(), d["X_train"].reshape(-1, 1, 8, 8), d["y_train"], epochs=2, seed=i)
        member = load_member(
            module, name=f"wide{i}", output_kind="logits", preprocess=build_preprocessor(reshape)
        )
        member.preprocess_spec = reshape
        members.append(member)
    preds = score_members(members, d["X_val"], y=d["y_val"], progress=False)
    return FusedModel(members, Mean().fit(preds, d["y_val"]))
