"""Hot paths on a busy machine: each timed quiet and beside one CPU-bound process, ours vs the libraries' default threads.

"Ours" is modelfusion's thread policy (:mod:`modelfusion.threads`: small kernels on one
thread); "default" is the same code with the policy off (every BLAS/OpenMP pool at its
default size, as before the policy existed). Each case keeps its best of five calls. Targets
(issue 17): beside one busy process every hot path stays within 2.5x of its quiet time, and
ours is no slower than the default when quiet.

Cases: greedy selection on 20 members x 20,000 samples x 10 classes; ``search_strategies``
(auto, 5-fold) on 8 x 3,000 x 10; ``score_members`` with five scikit-learn members on digits;
an ONNX Runtime session running a 64-256-256-10 MLP at batch 256.

``python benchmarks/contention.py``; about 2 minutes on 2 CPU cores.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

import modelfusion.threads as threads
from modelfusion.predictions import PredictionSet, score_members
from modelfusion.strategies import GreedySelection, search_strategies


def _best(fn: Callable[[], object], repeats: int = 5) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _cases() -> dict[str, Callable[[], object]]:
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.tree import DecisionTreeClassifier

    from modelfusion import load_member

    rng = np.random.default_rng(0)
    big = PredictionSet(rng.dirichlet(np.ones(10), size=(20, 20000)).astype(np.float32), kind="proba")
    y_big = rng.integers(0, 10, 20000)
    mid = PredictionSet(rng.dirichlet(np.ones(10), size=(8, 3000)).astype(np.float32), kind="proba")
    y_mid = rng.integers(0, 10, 3000)
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    members = [
        load_member(est.fit(X[:1000], y[:1000]), name=name)
        for name, est in {
            "logreg": LogisticRegression(max_iter=300),
            "forest": RandomForestClassifier(n_estimators=30, random_state=0),
            "knn": KNeighborsClassifier(),
            "bayes": GaussianNB(),
            "tree": DecisionTreeClassifier(random_state=0),
        }.items()
    ]
    session, batch = _mlp_session(), X[:256]
    return {
        "greedy fit 20x20000x10": lambda: GreedySelection().fit(big, y_big),
        "search auto 8x3000x10": lambda: search_strategies(mid, y_mid, cv=5, progress=False),
        "score 5 sklearn members": lambda: score_members(members, X, progress=False),
        "ORT MLP batch 256": lambda: session.run(None, {"x": batch}),
    }


def _mlp_session():
    import io

    import torch

    from modelfusion.runtime.session import open_session

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    ).eval()
    buf = io.BytesIO()
    torch.onnx.export(
        net, (torch.zeros(2, 64),), buf, dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}}
    )
    return open_session(buf.getvalue(), ["CPUExecutionProvider"])


def main() -> None:
    cases = _cases()
    results: dict[str, dict[str, float]] = {name: {} for name in cases}
    for policy in ("ours", "default"):
        threads.SMALL_WORK = (1 << 26) if policy == "ours" else -1  # -1: every kernel keeps its pools
        for name, fn in cases.items():
            results[name][f"{policy} quiet"] = _best(fn)
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(0.5)
            for name, fn in cases.items():
                results[name][f"{policy} busy"] = _best(fn)
        finally:
            busy.kill()
    print(
        f"{'hot path':<26}{'ours quiet':>11}{'ours busy':>11}{'busy/quiet':>11}{'default quiet':>15}"
        f"{'default busy':>14}{'busy/quiet':>11}  verdict"
    )
    for name, r in results.items():
        ours, default = r["ours busy"] / r["ours quiet"], r["default busy"] / r["default quiet"]
        ok = ours <= 2.5 and r["ours quiet"] <= 1.1 * r["default quiet"]
        print(
            f"{name:<26}{1000 * r['ours quiet']:>9.1f}ms{1000 * r['ours busy']:>9.1f}ms{ours:>10.2f}x"
            f"{1000 * r['default quiet']:>13.1f}ms{1000 * r['default busy']:>12.1f}ms{default:>10.2f}x  "
            f"{'MET' if ok else 'MISS'}"
        )


if __name__ == "__main__":
    main()
