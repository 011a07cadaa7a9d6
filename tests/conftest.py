"""Shared fixtures: small real models on scikit-learn's bundled digits; nothing downloads."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("MODELFUSION_QUIET", "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402


@pytest.fixture(scope="session")
def digits_split() -> dict[str, np.ndarray]:
    """Digits scaled to [0, 1], split 50/25/25 into train/val/test with a fixed seed."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    X_train, X_rest, y_train, y_rest = train_test_split(X, y, test_size=0.5, random_state=0, stratify=y)
    X_val, X_test, y_val, y_test = train_test_split(
        X_rest, y_rest, test_size=0.5, random_state=0, stratify=y_rest
    )
    return {
        "X_train": X_train,
        "y_train": y_train,
        "X_val": X_val,
        "y_val": y_val,
        "X_test": X_test,
        "y_test": y_test,
    }


@pytest.fixture(scope="session")
def digits_member_file(tmp_path_factory):
    """A logistic regression on digits (pixels / 16) saved as ``logreg.skops``: a member file for runs."""
    import skops.io
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    X, y = load_digits(return_X_y=True)
    path = tmp_path_factory.mktemp("member") / "logreg.skops"
    skops.io.dump(LogisticRegression(max_iter=200).fit(X / 16.0, y), path)
    return path


def torchrun(script, *args, nproc: int = 2, cwd=None, timeout: int = 180):
    """Run ``script`` under ``python -m torch.distributed.run`` on loopback with ``nproc`` processes.

    The repository is on PYTHONPATH, one thread per process, no launcher variables inherited.
    Returns the CompletedProcess (stdout and stderr captured).
    """
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "MODELFUSION_QUIET": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port),
        str(script),
        *map(str, args),
    ]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
