"""Small real models for the conversion tests, built once per session from digits (seconds)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """Digits pixels scaled to [0, 1] (float32) and their labels."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


@pytest.fixture(scope="session")
def models(tmp_path_factory, digits) -> dict:
    """Files and the objects they hold: logreg/forest ``.skops``, an MLP and a CNN (BatchNorm) as ``.pt2``."""
    import skops.io
    import torch
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from torch import nn

    X, y = digits
    folder = tmp_path_factory.mktemp("models")
    logreg = LogisticRegression(max_iter=300).fit(X, y)
    forest = RandomForestClassifier(n_estimators=10, max_depth=6, random_state=0).fit(X, y)
    skops.io.dump(logreg, folder / "logreg.skops")
    skops.io.dump(forest, folder / "forest.skops")
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    cnn = nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 16, 10),
    )
    cnn.train()
    cnn(torch.from_numpy(X[:256]))  # batch-norm statistics that are not the identity
    cnn.eval()
    for name, net in (("mlp", mlp), ("cnn", cnn)):
        program = torch.export.export(
            net, (torch.from_numpy(X[:4]),), dynamic_shapes=({0: torch.export.Dim("batch")},)
        )
        torch.export.save(program, folder / f"{name}.pt2")
    return {"folder": folder, "logreg": logreg, "forest": forest, "mlp": mlp, "cnn": cnn}


def run_onnx(path, rows: np.ndarray) -> np.ndarray:
    """The first output of the ONNX file at ``path`` on ``rows``, in a real ONNX Runtime session."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    feed = rows.astype(np.float64 if first.type == "tensor(double)" else np.float32)
    return session.run([session.get_outputs()[0].name], {first.name: feed})[0]


def torch_out(net, rows: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return net(torch.from_numpy(rows)).numpy()
