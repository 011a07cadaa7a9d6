"""Measuring the distillation variants side by side: latency on each model's fastest engine, the Pareto front.

``modelfusion distill`` and ``benchmarks/distillation.py`` both build their table with these, so
the report and the benchmark measure the same way: per-sample latency at batch 1 and batch 256
(median of several timed calls after a warm-up), each model on the fastest of its engines (eager
torch, its ONNX graph on ONNX Runtime with one thread, the members one by one), and a row per
model (:class:`~modelfusion.rows.VariantRow`).

Examples
--------
>>> engines, path = torch_engines(student, X_test[:2], folder, "student")
>>> timing = fastest_engine(engines, X_test)
>>> row = variant_row("student", softmax(engines["torch"](X_test)), y_test, timing, n_parameters(student), path.stat().st_size)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modelfusion.evaluation.metrics import evaluate
from modelfusion.rows import VariantRow

#: ``run(rows) -> outputs`` for one engine.
Runner = Callable[[np.ndarray], Any]
#: The batch sizes of the table's two latency columns.
BATCHES = (1, 256)


@dataclass(frozen=True)
class Timing:
    """Milliseconds per sample at batch 1 and 256 on ``engine``."""

    b1: float
    b256: float
    engine: str


def latency_per_sample(run: Runner, X: np.ndarray, batch: int, *, calls: int | None = None) -> float:
    """Median milliseconds per sample of ``run`` on ``batch`` rows (rows repeated when ``X`` is shorter)."""
    rows = X[:batch] if len(X) >= batch else np.concatenate([X] * (batch // len(X) + 1))[:batch]
    run(rows)  # warm-up: lazy initialisation, first-call allocations
    calls = calls or (50 if batch == 1 else 5)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run(rows)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / batch


def fastest_engine(engines: Mapping[str, Runner], X: np.ndarray) -> Timing:
    """The engine fastest at batch 256, with its latency at batch 1 and 256."""
    timed = {name: [latency_per_sample(run, X, b) for b in BATCHES] for name, run in engines.items()}
    name = min(timed, key=lambda n: timed[n][1])
    return Timing(timed[name][0], timed[name][1], name)


def onnx_runner(path: str | Path) -> Runner:
    """``rows -> first output`` of an ONNX graph on ONNX Runtime's CPU provider, one intra-op thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda rows: session.run(None, {name: rows})[0]


def torch_engines(
    module: nn.Module, example: np.ndarray, folder: Path, tag: str
) -> tuple[dict[str, Runner], Path]:
    """Eager and ONNX Runtime runners of a torch student (its graph, exported as a torch member's
    is, written to ``folder/tag.onnx``)."""
    from modelfusion.files import write_bytes_atomic
    from modelfusion.members.torch import TorchMember
    from modelfusion.runtime.onnx_export import DEFAULT_OPSET

    module = module.eval()
    with torch.inference_mode():
        n_outputs = module(torch.from_numpy(example)).shape[-1]
    member = TorchMember(module, name=tag, classes=list(range(n_outputs)), output_kind="logits")
    path = folder / f"{tag}.onnx"
    write_bytes_atomic(path, member.to_onnx(example, DEFAULT_OPSET).model.SerializeToString())

    def eager(rows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(rows)).numpy()

    return {"torch": eager, "onnx": onnx_runner(path)}, path


def variant_row(
    name: str,
    proba: np.ndarray,
    y_enc: np.ndarray,
    timing: Timing,
    params: int | None,
    size: int | None,
    *,
    kind: str = "student",
) -> VariantRow:
    """The table row of one model: test accuracy, NLL and ECE of ``proba``, its timing and cost."""
    metrics = evaluate(y_enc, proba, "classification", ["accuracy", "nll", "ece"])
    return VariantRow(name, metrics, timing.b1, timing.b256, timing.engine, params, size, kind)


def mark_pareto(rows: Sequence[VariantRow]) -> list[VariantRow]:
    """Set ``pareto`` on each row: True when no other row is at least as accurate and as fast at
    batch 256, and strictly better on one of the two."""
    for r in rows:
        acc, ms = r.metrics["accuracy"], r.latency_b256_ms
        r.pareto = ms is not None and not any(
            o is not r
            and o.latency_b256_ms is not None
            and o.metrics["accuracy"] >= acc
            and o.latency_b256_ms <= ms
            and (o.metrics["accuracy"] > acc or o.latency_b256_ms < ms)
            for o in rows
        )
    return list(rows)


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def as_float32(X: Any) -> np.ndarray:
    """``X`` as an array, floats as float32 (what torch students and ONNX graphs take)."""
    X = np.asarray(X)
    return X.astype(np.float32) if X.dtype.kind == "f" and X.dtype != np.float32 else X


def n_parameters(module: nn.Module) -> int:
    """How many numbers the module's parameters hold."""
    return sum(p.numel() for p in module.parameters())
