"""Greedy ensemble selection, ours vs AutoGluon's, then the whole strategy sweep.

Both selectors get the same cached member predictions and the same settings (50 rounds,
log loss, best prefix kept); their weights are scored by one function, so the validation
losses are comparable. Then :func:`search_strategies` is timed on the large case.

Run ``make bench`` (installs ``modelfusion[bench]``, i.e. ``autogluon.core``), or
``python benchmarks/strategy_search.py [--cases a b] [--no-search]``. Without autogluon the
script says so and times ours alone.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from modelfusion.outputs import EPS
from modelfusion.predictions import PredictionSet
from modelfusion.strategies.search import search_strategies
from modelfusion.strategies.selection import GreedySelection

#: name -> (members, samples, classes)
CASES: dict[str, tuple[int, int, int]] = {"a": (20, 20_000, 10), "b": (20, 50_000, 100)}
ENSEMBLE_SIZE = 50
SEED = 0


def make_predictions(n_members: int, n_samples: int, n_classes: int, seed: int = SEED) -> PredictionSet:
    """Synthetic but realistic member probabilities, float32 [members, samples, classes].

    Each member's logits are noise plus a boost on the true class. The noise is partly
    shared between members (so their errors correlate, as trained models' do) and the boost
    shrinks on "hard" samples; every member has its own skill, noise level and temperature
    (some over-, some under-confident), so no single member and no uniform average is optimal.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n_samples)
    rows = np.arange(n_samples)
    shared = rng.standard_normal((n_samples, n_classes), dtype=np.float32)
    ease = rng.gamma(shape=2.0, scale=0.5, size=n_samples).astype(np.float32)
    proba = np.empty((n_members, n_samples, n_classes), dtype=np.float32)
    for m in range(n_members):
        skill, noise, corr = rng.uniform(1.8, 3.0), rng.uniform(0.8, 1.2), rng.uniform(0.3, 0.6)
        temperature = rng.uniform(0.6, 1.6)
        own = rng.standard_normal((n_samples, n_classes), dtype=np.float32)
        logits = noise * (corr * shared + np.sqrt(1.0 - corr**2) * own)
        logits[rows, y] += skill * ease
        logits /= temperature
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        proba[m] = logits
    return PredictionSet(proba, names=[f"m{m:02d}" for m in range(n_members)], labels=y)


def validation_nll(weights: np.ndarray, preds: PredictionSet, y: np.ndarray) -> float:
    """NLL of the weighted average of the members (the one scorer for both selectors)."""
    p_true = preds.proba[:, np.arange(len(y)), y].astype(np.float64)
    return float(-np.log(np.clip(np.asarray(weights, dtype=np.float64) @ p_true, EPS, None)).mean())


def run_ours(preds: PredictionSet, y: np.ndarray, repeats: int = 5) -> tuple[np.ndarray, float]:
    """Median of ``repeats`` timed fits, after one warm-up fit on a small slice (thread pools, imports)."""
    GreedySelection(ensemble_size=ENSEMBLE_SIZE, metric="nll").fit(preds.take(np.arange(500)), y[:500])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        greedy = GreedySelection(ensemble_size=ENSEMBLE_SIZE, metric="nll").fit(preds, y)
        times.append(time.perf_counter() - start)
    return greedy.weights_, float(np.median(times))


def run_autogluon(preds: PredictionSet, y: np.ndarray) -> tuple[np.ndarray, float] | None:
    try:
        from autogluon.core.metrics import log_loss
        from autogluon.core.models.greedy_ensemble.ensemble_selection import EnsembleSelection
    except ImportError:
        return None
    members = [preds.proba[m] for m in range(preds.n_members)]
    selector = EnsembleSelection(
        ensemble_size=ENSEMBLE_SIZE,
        problem_type="multiclass",
        metric=log_loss,
        random_state=np.random.RandomState(SEED),
    )
    warm = EnsembleSelection(
        ensemble_size=ENSEMBLE_SIZE,
        problem_type="multiclass",
        metric=log_loss,
        random_state=np.random.RandomState(SEED),
    )
    warm.fit([m[:500] for m in members], y[:500])  # same warm-up as ours
    start = time.perf_counter()
    selector.fit(members, y)
    return np.asarray(selector.weights_), time.perf_counter() - start


def compare_selection(name: str, preds: PredictionSet, y: np.ndarray) -> None:
    m, n, k = preds.outputs.shape
    print(f"\n== case {name}: {m} members x {n:,} samples x {k} classes, ensemble_size={ENSEMBLE_SIZE}, nll")
    best_member = min(validation_nll(np.eye(m)[i], preds, y) for i in range(m))
    print(
        f"best single member nll {best_member:.5f}   uniform mean nll {validation_nll(np.full(m, 1 / m), preds, y):.5f}"
    )
    weights, seconds = run_ours(preds, y)
    print(
        f"modelfusion GreedySelection : {seconds:8.3f} s (median of 5)   nll {validation_nll(weights, preds, y):.5f}   "
        f"members used {np.count_nonzero(weights)}"
    )
    theirs = run_autogluon(preds, y)
    if theirs is None:
        print(
            "autogluon EnsembleSelection : not installed (pip install 'modelfusion[bench]'); timed ours only"
        )
        return
    ag_weights, ag_seconds = theirs
    print(
        f"autogluon EnsembleSelection : {ag_seconds:8.3f} s   nll {validation_nll(ag_weights, preds, y):.5f}   "
        f"members used {np.count_nonzero(ag_weights)}"
    )
    print(f"speed-up (autogluon time / ours): {ag_seconds / seconds:.1f}x")


def time_search(name: str, preds: PredictionSet, y: np.ndarray) -> None:
    m, n, k = preds.outputs.shape
    print(f"\n== search_strategies on case {name} ({m} x {n:,} x {k}), 5-fold CV, metric nll")
    start = time.perf_counter()
    result = search_strategies(preds, y, metric="nll", cv=5, progress=False)
    seconds = time.perf_counter() - start
    print(result)
    per_strategy = ", ".join(
        f"{r['name']} {r['fit_seconds']:.1f}+{r['combine_seconds']:.1f}"
        for r in result.rows
        if r["kind"] == "strategy"
    )
    print(f"fit+combine seconds over the 5 folds: {per_strategy}")
    print(f"whole sweep: {seconds:.1f} s on {os.cpu_count()} CPU cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--no-search", action="store_true", help="skip timing search_strategies")
    args = parser.parse_args()
    cached: dict[str, PredictionSet] = {}
    for name in args.cases:
        cached[name] = make_predictions(*CASES[name])
        compare_selection(name, cached[name], cached[name].labels)
    if not args.no_search and "b" in cached:
        time_search("b", cached["b"], cached["b"].labels)


if __name__ == "__main__":
    main()
