"""Fused inference: one ONNX graph vs the naive eager loop, scikit-learn's VotingClassifier and the members' floor.

Three ensembles, one process, the same inputs for every engine:

* **cnn8** — 8 small CNNs (conv16-pool-conv32-pool-fc64-fc10) and **mlp8** — 8 MLPs
  (784-512-512-10, MatMul-bound), each trained for a few seeded epochs on *digits28*
  (scikit-learn's digits upsampled to MNIST's 28x28), fused with the mean; accuracy on the
  450-row test split.
* **digits** — the heterogeneous ``modelfusion demo`` members (torch CNN with a reshape,
  ONNX MLP, five scikit-learn models), trained here, fused with greedy selection.

Engines: (a) the naive eager loop over members (pure torch for cnn8; the library's serial
member path for digits), (b) scikit-learn's ``VotingClassifier(voting="soft")`` over the
digits scikit-learn members, next to our fused graph of the same five members, (c) our fused
ONNX graph fp32, (d) int8 (dynamic; static and fp16 too), (e) the concurrent member
executor, and the floor: every member's own ONNX graph run alone, one after another, on
ONNX Runtime (sum of their times). Printed: throughput (samples/s) at batch 1, 32, 256,
p50/p99 latency at batch 1, peak extra memory (resident memory grown while an engine runs,
warm-up included, weights loaded before excluded), file sizes, and ratios vs (a) and the
floor. Engines are timed round-robin (every engine once per round, five rounds) and each keeps
its best round's median call: other processes on a shared machine only ever add time, and a
noisy moment hits every engine alike.

``python benchmarks/inference.py [--quick]``; about 2.5 minutes on 2 CPU cores (``--quick``: under 1.5).
"""

from __future__ import annotations

import os

# Two OpenMP runtimes (torch's, scikit-learn's) and two OpenBLAS builds (numpy's, scipy's) spin-wait
# against each other on a small machine (a 25 ms HistGradientBoosting predict becomes 3 s after a torch
# call). Passive waiting and one BLAS thread keep the *baselines* honest; ONNX Runtime is unaffected.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from modelfusion import FusedModel, load_member, score_members  # noqa: E402
from modelfusion.runtime import (  # noqa: E402
    MemberExecutor,
    OnnxExecutor,
    TorchExecutor,
    build_fused_onnx,
    graph_breakdown,
)
from modelfusion.runtime.member_onnx import member_to_onnx  # noqa: E402
from modelfusion.runtime.onnx_export import example_rows  # noqa: E402
from modelfusion.runtime.quantize import quantize_onnx  # noqa: E402
from modelfusion.strategies import GreedySelection, Mean  # noqa: E402

BATCHES = (1, 32, 256)
SEED = 0


class CNN28(nn.Module):
    """small CNNs (conv16-pool-conv32-pool-fc64-fc10, ~106K parameters); on [N, 1, 28, 28]."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP28(nn.Sequential):
    """MLPs (784-512-512-10, ~670K parameters, MatMul-bound); on [N, 1, 28, 28]."""

    def __init__(self):
        super().__init__(
            nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
        )


# -- measuring ----------------------------------------------------------------------------------


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every millisecond (Linux /proc)."""

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def _rss() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: whole-process peak instead
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Interleaved:
    """Times engines round-robin: a noisy moment on a shared machine hits every engine alike.

    :meth:`add` registers an engine and returns the dict :meth:`run` fills: throughput per
    batch size, p50/p99 latency at batch 1 and peak extra memory (during warm-up, when buffers
    are allocated). In each of ``rounds`` rounds every engine is timed at every batch size;
    a round's figure is its median call and each engine keeps its best round (as ``timeit``
    keeps the minimum): other processes only ever add time.
    """

    def __init__(self, budget: float, rounds: int = 5):
        self.budget, self.rounds = budget, rounds
        self.jobs: list[tuple] = []
        self.finish: list = []

    def add(self, fn, X: np.ndarray) -> dict:
        result: dict = {}
        self.jobs.append((fn, X, result))
        return result

    def add_sum(self, parts: list[tuple]) -> dict:
        """One figure for several engines run one after another (their times add up)."""
        results = [self.add(fn, X) for fn, X in parts]
        total: dict = {}

        def combine() -> None:
            total.update({b: b / sum(b / r[b] for r in results) for b in BATCHES})
            total["p50"] = sum(r["p50"] for r in results)
            total["p99"] = sum(r["p99"] for r in results)
            total["mem"] = max(r["mem"] for r in results)

        self.finish.append(combine)
        return total

    def run(self) -> None:
        medians = {(i, b): [] for i in range(len(self.jobs)) for b in BATCHES}
        batch1: dict[int, list] = {i: [] for i in range(len(self.jobs))}
        for fn, X, result in self.jobs:
            for b in BATCHES:
                x = np.ascontiguousarray(X[:b])
                with PeakRSS() as mem:
                    for _ in range(3):
                        fn(x)
                result["mem"] = max(result.get("mem", 0.0), mem.extra_mb)
        share = self.budget / self.rounds
        for _ in range(self.rounds):
            for i, (fn, X, _) in enumerate(self.jobs):
                for b in BATCHES:
                    x = np.ascontiguousarray(X[:b])
                    times, start = [], time.perf_counter()
                    min_calls = 100 if b == 1 else 5
                    while len(times) < min_calls or time.perf_counter() - start < share:
                        t = time.perf_counter()
                        fn(x)
                        times.append(time.perf_counter() - t)
                        if time.perf_counter() - start > 6 * share:
                            break
                    medians[(i, b)].append(float(np.median(times)))
                    if b == 1:
                        batch1[i] += times
        for i, (_, _, result) in enumerate(self.jobs):
            result.update({b: b / min(medians[(i, b)]) for b in BATCHES})
            result["p50"] = float(np.percentile(batch1[i], 50) * 1e3)
            result["p99"] = float(np.percentile(batch1[i], 99) * 1e3)
        for combine in self.finish:
            combine()


def floor(timer: Interleaved, sessions: list[ort.InferenceSession], X: np.ndarray, member_inputs) -> dict:
    """Every member's own graph alone: per batch size, the sum of the members' times."""
    parts = []
    for session, prep in zip(sessions, member_inputs):
        name = session.get_inputs()[0].name
        parts.append((lambda x, s=session, n=name: s.run(None, {n: x}), prep(X)))
    return timer.add_sum(parts)


def member_sessions(model: FusedModel, X: np.ndarray) -> tuple[list, list, int]:
    """Each member converted alone (its own graph, raw outputs), its input transform, total bytes."""
    sessions, preps, size = [], [], 0
    example = example_rows(model, X[:8])
    for m in model.members:
        prepared = m.preprocess(example) if m.preprocess is not None else example
        graph = member_to_onnx(m, np.asarray(prepared), 17).model
        data = graph.SerializeToString()
        size += len(data)
        sessions.append(ort.InferenceSession(data, providers=["CPUExecutionProvider"]))
        dtype = np.float64 if sessions[-1].get_inputs()[0].type == "tensor(double)" else np.float32
        preps.append(  # the member's own preprocessing and input type, outside the timed call
            lambda x, p=m.preprocess, t=dtype: np.ascontiguousarray(p(x) if p is not None else x, dtype=t)
        )
    return sessions, preps, size


def breakdown(graphs: dict[str, Path], X: np.ndarray, runs: int = 20) -> None:
    """Where each graph's bytes and kernel time go, member by member (see ``graph_breakdown``)."""
    print(f"\n   where the bytes / kernel time go (batch {len(X)}):")
    for label, path in graphs.items():
        rows = graph_breakdown(path, X, runs=runs)
        total_kb, total_ms = sum(r["bytes"] for r in rows) / 1024, sum(r["ms"] for r in rows)
        cells = ", ".join(
            f"{r['member']} {r['bytes'] / 1024:.0f} KB / {r['ms']:.2f} ms"
            for r in rows
            if r["bytes"] > 2048 or r["ms"] > 0.05
        )
        print(f"   {label:28s} {total_kb:6.0f} KB / {total_ms:5.2f} ms: {cells}")


# -- printing -----------------------------------------------------------------------------------


def report(title: str, rows: list[tuple[str, dict, int | None, str]], ref: str, floor_name: str) -> None:
    print(f"\n== {title}")
    head = f"{'engine':44s} {'b=1/s':>9s} {'b=32/s':>9s} {'b=256/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} "
    print(head + f"{'mem MB':>7s} {'file':>9s}  {'x(a)@256':>8s} {'/floor@256':>10s}  quality")
    by_name = {name: r for name, r, _, _ in rows}
    for name, r, size, quality in rows:
        vs_a = r[256] / by_name[ref][256]
        vs_floor = by_name[floor_name][256] / r[256]  # time ratio: ours / floor
        size_s = (
            "-" if size is None else f"{size / 2**20:.2f}MB" if size >= 2**20 else f"{size / 2**10:.0f}KB"
        )
        print(
            f"{name:44s} {r[1]:9.0f} {r[32]:9.0f} {r[256]:9.0f} {r['p50']:8.3f} {r['p99']:8.3f} "
            f"{r['mem']:7.1f} {size_s:>9s}  {vs_a:8.2f} {vs_floor:10.2f}  {quality}"
        )


def ratio_line(label: str, value: float, target: float, higher: bool) -> str:
    ok = value >= target if higher else value <= target
    sign = ">=" if higher else "<="
    return f"  {'MET ' if ok else 'MISS'} {label}: {value:.2f} (target {sign} {target})"


# -- the two ensembles --------------------------------------------------------------------------


def digits28(seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits upsampled to 28x28 (MNIST's shape), scaled to [0, 1]; 75/25 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    images = torch.from_numpy(X.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    X28 = nn.functional.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False).numpy()
    X_tr, X_te, y_tr, y_te = train_test_split(X28, y, test_size=0.25, random_state=seed, stratify=y)
    return X_tr, X_te, y_tr, y_te


def train(module: nn.Module, X: np.ndarray, y: np.ndarray, seed: int, epochs: int = 4) -> nn.Module:
    """A few epochs of Adam on minibatches of 64, seeded (member diversity comes from the seed)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(X), torch.from_numpy(y).long()
    module.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(module(xt[idx]), yt[idx]).backward()
            opt.step()
    return module.eval()


def torch_ensemble(name: str, make: type[nn.Module], budget: float, tmp: Path) -> list[str]:
    """8 members of one architecture trained on digits28: eager loop vs fused fp32 vs int8, floor."""
    X_tr, X_te, y_tr, y_te = digits28()
    X = np.concatenate([X_te] * 2)[:512]  # 450 test rows, repeated to fill batch 256 twice
    t = time.perf_counter()
    modules = []
    for i in range(8):
        torch.manual_seed(SEED + i)
        modules.append(train(make(), X_tr, y_tr, seed=SEED + i))
    print(f"\n(trained the 8 {name} members on digits28 in {time.perf_counter() - t:.1f} s)")
    members = [load_member(m, name=f"{name}{i}", output_kind="logits") for i, m in enumerate(modules)]
    preds = score_members(members, X_tr[:256], progress=False)
    fused = FusedModel(members, Mean().fit(preds))

    def eager(x):  # what torchensemble's voting and most tutorials do
        with torch.inference_mode():
            xt = torch.from_numpy(x)
            return torch.stack([torch.softmax(m(xt), dim=1) for m in modules]).mean(0).numpy()

    def acc(scores: np.ndarray) -> float:
        return 100 * float((scores.argmax(1) == y_te).mean())

    graph = tmp / f"{name}.onnx"
    graph.write_bytes(build_fused_onnx(fused, example_input=X[:8]).SerializeToString())
    variants = {
        "(d) fused ONNX int8 dynamic": quantize_onnx(
            graph, tmp / f"{name}.int8-dynamic.onnx", mode="dynamic"
        ),
        "    fused ONNX int8 static (QDQ)": quantize_onnx(
            graph, tmp / f"{name}.int8-static.onnx", mode="static", calibration=X_tr[:256]
        ),
    }
    if any(isinstance(layer, nn.Conv2d) for layer in modules[0].modules()):
        variants["    int8 dynamic, Conv as ConvInteger"] = quantize_onnx(
            graph, tmp / f"{name}.int8-convinteger.onnx", mode="dynamic", op_types=("Conv", "MatMul", "Gemm")
        )
    fp32 = OnnxExecutor(graph, providers=["cpu"])
    acc32 = acc(fp32.run(X_te))
    sessions, preps, member_bytes = member_sessions(fused, X)
    timer = Interleaved(budget)
    rows = [
        (
            "(a) eager loop, 8 torch modules",
            timer.add(eager, X),
            None,
            f"test acc {acc(eager(X_te)):.2f}%",
        ),
        ("    torch engine (FusedModule)", timer.add(TorchExecutor(fused).run, X), None, ""),
        (
            "(c) fused ONNX fp32",
            timer.add(lambda x: fp32.run(x, batch_size=None), X),
            graph.stat().st_size,
            f"test acc {acc32:.2f}%",
        ),
    ]
    deltas = {}
    for label, path in variants.items():
        ex = OnnxExecutor(path, providers=["cpu"])
        deltas[label] = acc(ex.run(X_te)) - acc32
        rows.append(
            (
                label,
                timer.add(lambda x, e=ex: e.run(x, batch_size=None), X),
                path.stat().st_size,
                f"test acc {acc32 + deltas[label]:.2f}% ({deltas[label]:+.2f} pp)",
            )
        )
    members_ex = MemberExecutor(fused) if name == "cnn" else None
    if members_ex is not None:
        rows.append(
            (
                f"(e) member executor ({members_ex.max_workers} threads)",
                timer.add(lambda x: members_ex.run(x, batch_size=256), X),
                None,
                "",
            )
        )
    rows.append(
        ("floor: 8 member graphs alone, one by one", floor(timer, sessions, X, preps), member_bytes, "")
    )
    timer.run()
    if members_ex is not None:
        members_ex.close()
    report(
        f"{name}8: 8 {make.__doc__.split(';')[0]} trained on digits28, mean", rows, rows[0][0], rows[-1][0]
    )
    breakdown(
        {"fp32": graph, **{k.strip().removeprefix("(d) fused ONNX "): v for k, v in variants.items()}},
        X[:256],
    )
    r = {label: v for label, v, _, _ in rows}
    fused_r, a, fl = r["(c) fused ONNX fp32"], r[rows[0][0]], r[rows[-1][0]]
    size32 = graph.stat().st_size
    speedup = fused_r[256] / a[256]
    lines = [
        ratio_line(f"{name}8 fused fp32 / eager loop throughput @256", speedup, 4.0, True)
        if name
        == "cnn"  # the 4x target is for small CNNs; MLPs are one BLAS call per layer either way
        else f"  info {name}8 fused fp32 / eager loop throughput @256: {speedup:.2f} (no target)",
        ratio_line(f"{name}8 fused time / floor @256", fl[256] / fused_r[256], 1.10, False),
    ]
    for label, path in variants.items():
        short = label.strip().removeprefix("(d) fused ONNX ").removeprefix("fused ONNX ")
        lines += [
            ratio_line(f"{name}8 {short} size reduction", size32 / path.stat().st_size, 3.5, True),
            ratio_line(f"{name}8 {short} speed-up vs fp32 @256", r[label][256] / fused_r[256], 1.3, True),
            ratio_line(f"{name}8 {short} accuracy change (pp, >= -1)", deltas[label], -1.0, True),
        ]
    return lines


def digits(budget: float, tmp: Path) -> list[str]:
    from sklearn.ensemble import VotingClassifier

    from modelfusion.config import parse_config
    from modelfusion.examples.digits import build_digits_members, digits_config
    from modelfusion.workflow import load_run_data, load_run_members

    t = time.perf_counter()
    entries = build_digits_members(tmp / "models")
    config = parse_config(digits_config(entries, output_dir="out"), base_dir=tmp)
    members, (val, test) = load_run_members(config), load_run_data(config)
    print(f"\n(trained the 7 digits members in {time.perf_counter() - t:.1f} s)")
    X_val, y_val = np.asarray(val.X, np.float32), np.asarray(val.y)
    X, y = np.asarray(test.X, np.float32), np.asarray(test.y)
    X_big = np.concatenate([X] * 2)[:512]  # 450 test rows, repeated to fill batch 256 twice
    preds = score_members(members, X_val, y=y_val, progress=False)
    fused = FusedModel(members, GreedySelection().fit(preds, y_val))

    graph = tmp / "digits.onnx"
    graph.write_bytes(build_fused_onnx(fused, example_input=X[:8]).SerializeToString())
    variants = {
        "(d) fused ONNX int8 dynamic": quantize_onnx(graph, tmp / "digits.int8-dynamic.onnx", mode="dynamic"),
        "    fused ONNX int8 static (QDQ)": quantize_onnx(
            graph, tmp / "digits.int8-static.onnx", mode="static", calibration=X_val
        ),
        "    fused ONNX fp16": quantize_onnx(graph, tmp / "digits.fp16.onnx", precision="fp16"),
    }

    def acc(scores: np.ndarray) -> str:
        return f"test acc {100 * (fused.classes[scores.argmax(1)] == y).mean():.2f}%"

    sk = [m for m in members if m.framework == "sklearn"]
    # VotingClassifier cannot take prefit estimators: it refits clones of the same five (same
    # hyperparameters, same train split); only predict_proba is timed.
    from modelfusion.data import load_dataset, split_dataset
    from modelfusion.examples.digits import SPLIT

    train = split_dataset(load_dataset("builtin:digits"), **SPLIT)["train"]
    voting = VotingClassifier([(m.name, m.estimator) for m in sk], voting="soft").fit(
        np.asarray(train.X, np.float32), np.asarray(train.y)
    )
    sk_fused = FusedModel(sk, Mean().fit(score_members(sk, X_val, progress=False)))
    sk_graph = tmp / "digits-sklearn.onnx"
    sk_graph.write_bytes(build_fused_onnx(sk_fused, example_input=X[:8]).SerializeToString())
    sk_ex = OnnxExecutor(sk_graph, providers=["cpu"])

    fp32, fp32_1 = OnnxExecutor(graph, providers=["cpu"]), OnnxExecutor(graph, providers=["cpu"], threads=1)
    serial, concurrent = MemberExecutor(fused, max_workers=1), MemberExecutor(fused)
    sessions, preps, member_bytes = member_sessions(fused, X)
    member_bytes_disk = sum(m.file_size or 0 for m in members)
    timer = Interleaved(budget)
    rows = [
        (
            "(a) eager loop over the 7 members (serial)",
            timer.add(lambda x: serial.run(x, batch_size=256), X_big),
            member_bytes_disk,
            acc(serial.run(X)),
        ),
        (
            "(b) sklearn VotingClassifier soft (5 sklearn)",
            timer.add(lambda x: voting.predict_proba(x.astype(np.float64)), X_big),
            None,
            f"test acc {100 * (voting.predict(X.astype(np.float64)) == y).mean():.2f}%",
        ),
        (
            "    fused ONNX of the same 5 sklearn, mean",
            timer.add(lambda x: sk_ex.run(x, batch_size=None), X_big),
            sk_graph.stat().st_size,
            acc(sk_ex.run(X)),
        ),
        (
            "(c) fused ONNX fp32 (7 members)",
            timer.add(lambda x: fp32.run(x, batch_size=None), X_big),
            graph.stat().st_size,
            acc(fp32.run(X)),
        ),
        (
            "    fused ONNX fp32, 1 ORT thread",
            timer.add(lambda x: fp32_1.run(x, batch_size=None), X_big),
            None,
            "",
        ),
    ]
    for label, path in variants.items():
        ex = OnnxExecutor(path, providers=["cpu"])
        rows.append(
            (
                label,
                timer.add(lambda x, e=ex: e.run(x, batch_size=None), X_big),
                path.stat().st_size,
                acc(ex.run(X)),
            )
        )
    rows.append(
        (
            f"(e) member executor ({concurrent.max_workers} threads)",
            timer.add(lambda x: concurrent.run(x, batch_size=256), X_big),
            None,
            acc(concurrent.run(X)),
        )
    )
    rows.append(
        ("floor: 7 member graphs alone, one by one", floor(timer, sessions, X_big, preps), member_bytes, "")
    )
    timer.run()
    concurrent.close()
    report(
        "digits demo: torch CNN + ONNX MLP + 5 scikit-learn, greedy selection (test split, 450 rows)",
        rows,
        rows[0][0],
        rows[-1][0],
    )
    breakdown(
        {"fp32": graph, **{k.strip().removeprefix("(d) fused ONNX "): v for k, v in variants.items()}},
        X_big[:256],
    )
    r = {name: v for name, v, _, _ in rows}
    f32, dyn = r["(c) fused ONNX fp32 (7 members)"], r["(d) fused ONNX int8 dynamic"]
    accs = {name: q for name, _, _, q in rows}
    d_acc = float(accs["(d) fused ONNX int8 dynamic"].split()[-1][:-1]) - float(
        accs["(c) fused ONNX fp32 (7 members)"].split()[-1][:-1]
    )
    dyn_path = variants["(d) fused ONNX int8 dynamic"]
    return [
        ratio_line("digits fused time / floor @256", r[rows[-1][0]][256] / f32[256], 1.10, False),
        ratio_line(
            "digits int8 dynamic size reduction", graph.stat().st_size / dyn_path.stat().st_size, 3.5, True
        ),
        ratio_line("digits int8 dynamic speed-up vs fp32 @256", dyn[256] / f32[256], 1.3, True),
        ratio_line("digits int8 dynamic accuracy change (pp, >= -1)", d_acc, -1.0, True),
        ratio_line(
            "digits fused fp32 / eager loop throughput @256", f32[256] / r[rows[0][0]][256], 1.0, True
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing loops (noisier)")
    args = parser.parse_args()
    budget = 0.25 if args.quick else 0.6
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    ort.set_default_logger_severity(3)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), onnxruntime {ort.__version__}; OMP_WAIT_POLICY="
        f"{os.environ['OMP_WAIT_POLICY']}, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}"
    )
    print("throughput in samples/s; 'x(a)' = throughput / engine (a)'s; '/floor' = engine time / floor time")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        lines = (
            torch_ensemble("cnn", CNN28, budget, Path(tmp))
            + torch_ensemble("mlp", MLP28, budget, Path(tmp))
            + digits(budget, Path(tmp))
        )
    print("\ntargets (issue 4):")
    print("\n".join(lines))
    print(
        f"\nwhole benchmark: {time.perf_counter() - start:.0f} s; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )


if __name__ == "__main__":
    main()
