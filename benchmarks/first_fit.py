"""The first strategy fit in a process vs later ones: is there one-time set-up left to remove?

Greedy selection on 20 members x 20,000 samples x 10 classes (issue 17 item 5 reported 0.27 s
for the first fit against 0.056 s warm). Each round runs in a fresh interpreter with the
package already imported, and times three fits on one PredictionSet, plus a fit on a new
PredictionSet (whose probabilities are not cached yet), so the one-time costs are split into
"first fit in the process" and "first fit on a PredictionSet".

``python benchmarks/first_fit.py``; about 20 s on 2 CPU cores.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

ROUNDS = 5
CHILD = r"""
import json, time
import numpy as np
from modelfusion.predictions import PredictionSet
from modelfusion.strategies import GreedySelection

def make(seed):
    rng = np.random.default_rng(seed)
    n, m, c = 20_000, 20, 10
    y = rng.integers(0, c, n)
    outs = []
    for _ in range(m):
        p = rng.dirichlet(np.ones(c), n).astype(np.float32)
        p[np.arange(n), y] += 0.3 * rng.random(n)
        outs.append(p / p.sum(1, keepdims=True))
    return PredictionSet(outs, names=[f"m{i}" for i in range(m)], classes=list(range(c))), y

preds, y = make(0)
times = []
for _ in range(3):
    t = time.perf_counter(); GreedySelection(random_state=0).fit(preds, y); times.append(time.perf_counter() - t)
fresh, y2 = make(1)
t = time.perf_counter(); fresh.proba; times.append(time.perf_counter() - t)
t = time.perf_counter(); GreedySelection(random_state=0).fit(fresh, y2); times.append(time.perf_counter() - t)
print(json.dumps(times))
"""


def main() -> None:
    runs = [
        json.loads(
            subprocess.run([sys.executable, "-c", CHILD], check=True, capture_output=True, text=True).stdout
        )
        for _ in range(ROUNDS)
    ]
    first, second, third, proba, cached = (statistics.median(r[i] for r in runs) for i in range(5))
    print(f"greedy 20 x 20,000 x 10, median of {ROUNDS} fresh processes")
    print(f"  first fit in the process:              {first * 1e3:6.1f} ms")
    print(f"  second / third fit (same set):         {second * 1e3:6.1f} / {third * 1e3:6.1f} ms")
    print(f"  a new PredictionSet's probabilities:   {proba * 1e3:6.1f} ms (computed once, then cached)")
    print(f"  fit on that set, probabilities cached: {cached * 1e3:6.1f} ms")
    print(
        f"  first / third fit: {first / third:.2f}x; first - third = {(first - third) * 1e3:.1f} ms, "
        f"of which the probabilities {proba * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
