"""The built-in example: seven small, diverse members on scikit-learn's digits.

Three frameworks take part: a torch CNN (safetensors weights + architecture), a torch
MLP exported to ONNX, and five scikit-learn estimators saved with skops. Training takes a
few seconds on two CPU cores. The split is the one ``fusion.yaml`` asks for, so members
never see the validation or test samples.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modelfusion.data import load_dataset, split_dataset

SPLIT: dict[str, Any] = {"validation": 0.25, "test": 0.25, "seed": 0}


class SmallCNN(nn.Module):
    """A two-layer CNN for 8x8 digit images [N, 1, 8, 8] → 10 logits."""

    def __init__(self, channels: int = 16, n_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(2 * channels * 16, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class MLP(nn.Module):
    """A one-hidden-layer perceptron on flat digits [N, 64] → 10 logits."""

    def __init__(self, hidden: int = 32, n_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _train(
    make: Callable[[], nn.Module], X: np.ndarray, y: np.ndarray, *, epochs: int, seed: int
) -> nn.Module:
    """Build the module under ``seed`` (its initial weights too) and train it; same seed, same weights."""
    torch.manual_seed(seed)
    module = make()
    opt = torch.optim.Adam(module.parameters(), lr=3e-3, weight_decay=1e-4)
    Xt, yt = torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y)
    gen = torch.Generator().manual_seed(seed)
    module.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(Xt), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(module(Xt[idx]), yt[idx]).backward()
            opt.step()
    return module.eval()


def build_digits_members(models_dir: str | Path, seed: int = 0) -> list[dict[str, Any]]:
    """Train the example members on the digits train split and save them to ``models_dir``.

    Returns the ``members:`` entries of a config that loads them (paths relative to the
    folder above ``models_dir``).
    """
    import skops.io
    from safetensors.torch import save_file
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier

    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    train = split_dataset(load_dataset("builtin:digits"), **SPLIT)["train"]
    X, y = np.asarray(train.X, dtype=np.float32), np.asarray(train.y)
    rel = models_dir.name

    cnn = _train(SmallCNN, X.reshape(-1, 1, 8, 8), y, epochs=4, seed=seed)
    save_file(cnn.state_dict(), str(models_dir / "cnn.safetensors"))

    mlp = _train(MLP, X, y, epochs=6, seed=seed + 1)
    with warnings.catch_warnings():  # the TorchScript exporter needs no onnxscript, which core lacks
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            mlp,
            (torch.as_tensor(X[:2]),),
            str(models_dir / "mlp.onnx"),
            dynamo=False,
            input_names=["pixels"],
            output_names=["logits"],
            dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
        )

    sklearn_members = {
        "logreg": LogisticRegression(C=0.01, max_iter=500),
        "forest": RandomForestClassifier(n_estimators=20, max_depth=6, random_state=seed),
        "boosting": HistGradientBoostingClassifier(max_iter=25, max_depth=3, random_state=seed),
        "knn": KNeighborsClassifier(n_neighbors=9),
        "bayes": GaussianNB(var_smoothing=0.05),
    }
    for name, est in sklearn_members.items():
        skops.io.dump(est.fit(X, y), models_dir / f"{name}.skops")

    return [
        {
            "name": "cnn",
            "path": f"{rel}/cnn.safetensors",
            "framework": "torch",
            "preprocess": {"reshape": [1, 8, 8]},
            "options": {"architecture": "modelfusion.examples.digits:SmallCNN", "output_kind": "logits"},
        },
        {"name": "mlp", "path": f"{rel}/mlp.onnx", "options": {"output_kind": "logits"}},
        *({"name": n, "path": f"{rel}/{n}.skops"} for n in sklearn_members),
    ]


def digits_config(members: list[dict[str, Any]], output_dir: str = "runs/digits") -> dict[str, Any]:
    """A complete run config for the digits example."""
    return {
        "name": "digits",
        "seed": SPLIT["seed"],
        "output_dir": output_dir,
        "cache_dir": ".modelfusion-cache",
        "data": {"source": "builtin:digits", "split": SPLIT},
        "members": members,
        "fusion": {"strategies": "auto", "metric": "nll", "cv": 5},
        "report": {"title": "modelfusion demo: seven members on digits"},
        "deploy": {"onnx": True, "quantize": "dynamic"},
    }
