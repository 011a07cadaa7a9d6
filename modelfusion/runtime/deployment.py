"""Serving files for a fitted fused model: its ONNX graph and int8/fp16 variants, measured side by side.

:func:`iter_deployment` is what ``modelfusion run`` does when the config has a ``deploy:``
section; the rows it yields are the report's "Deployment" table.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from modelfusion.bundle import record_bundle_graph
from modelfusion.errors import ParameterError
from modelfusion.runtime.executors import OnnxExecutor
from modelfusion.runtime.onnx_export import build_fused_onnx
from modelfusion.runtime.profile import graph_breakdown
from modelfusion.runtime.quantize import _split_data, check_request, graph_quality, quantize_bundle


def deployment_steps(quantize: str | None = None, fp16: bool = False) -> list[str]:
    """The rows :func:`prepare_deployment` makes, in order, by name.

    Examples
    --------
    >>> deployment_steps("dynamic", fp16=True)
    ['ONNX fp32', 'int8 (dynamic)', 'fp16']
    """
    return ["ONNX fp32"] + ([f"int8 ({quantize})"] if quantize else []) + (["fp16"] if fp16 else [])


def prepare_deployment(
    model: Any, bundle_dir: str | Path, validation: Any, test: Any = None, **options: Any
) -> list[dict[str, Any]]:
    """Every row of :func:`iter_deployment` (same arguments), in a list.

    Examples
    --------
    >>> rows = prepare_deployment(fused, "runs/demo/bundle", (X_val, y_val), (X_test, y_test), quantize="dynamic")
    >>> [(r["name"], round(r["size_ratio"], 2)) for r in rows]
    [('ONNX fp32', 1.0), ('int8 (dynamic)', 2.45)]
    """
    return list(iter_deployment(model, bundle_dir, validation, test, **options))


def iter_deployment(
    model: Any,
    bundle_dir: str | Path,
    validation: Any,
    test: Any = None,
    *,
    quantize: str | None = None,
    fp16: bool = False,
    batch_size: int = 256,
    repeats: int = 5,
) -> Iterator[dict[str, Any]]:
    """Export ``model`` (a saved :class:`~modelfusion.FusedModel`) into its bundle and measure each graph.

    Writes ``fused.onnx``, then ``fused.int8.onnx`` (``quantize="dynamic"|"static"``) and
    ``fused.fp16.onnx`` (``fp16=True``), each recorded in the manifest with its accuracy change
    on ``validation`` against the fp32 graph (see :func:`~modelfusion.runtime.quantize_bundle`),
    which also calibrates static int8. Both data arguments are ``(X, y)``.

    Returns one row per graph (:func:`deployment_steps` names them), measured on ``test``
    (``validation`` when there is none — a strategy fitted on validation scores it
    in-sample): ``name``, ``file``, ``file_size``, ``size_ratio`` (fp32 size / this size:
    below 1 when the graph got bigger), ``accuracy`` and ``nll`` (``rmse`` for regression),
    ``delta_pp`` (accuracy change vs the fp32 graph, percentage points),
    ``delta_pp_validation`` (the manifest's), ``latency_ms`` (per sample, at ``batch_size``,
    median of ``repeats`` calls on ONNX Runtime CPU), ``speedup`` (fp32 latency / this) and
    ``breakdown`` (each member's bytes and kernel time in this graph, see
    :func:`~modelfusion.runtime.profile.graph_breakdown`). Rows come one by one, each graph
    written and recorded before its row, so a caller keeps the rows made before a later step
    fails; :func:`prepare_deployment` collects them in a list.

    Raises
    ------
    ExportError
        when a member cannot be written as ONNX (naming it and why).
    QuantizationError
        for an unknown mode, or data that is not numeric.

    Examples
    --------
    >>> for row in iter_deployment(fused, bundle, (X_val, y_val), (X_test, y_test), quantize="static"):
    ...     print(row["name"], row["file"], f"{row['speedup']:.2f}x")
    ONNX fp32 fused.onnx 1.00x
    int8 (static) fused.int8.onnx 0.84x
    """

    X, y = _split_data(validation)
    if X is None:
        raise ParameterError(
            "deployment needs validation=(X, y): the data that calibrates and measures the graphs"
        )
    X_eval, y_eval = (X, y) if test is None else _split_data(test)
    if X_eval is None:  # a test pair without inputs: measure on validation, as without one
        X_eval, y_eval = X, y
    if quantize is not None:
        check_request(quantize, "int8", has_calibration=True)
    bundle = Path(bundle_dir)
    proto = build_fused_onnx(model, example_input=X[:8])
    fp32 = record_bundle_graph(bundle, proto.SerializeToString(), proto)
    base = _measure(fp32, X_eval, y_eval, batch_size, repeats)
    yield {"name": "ONNX fp32", "file": fp32.name, **base, "size_ratio": 1.0, "speedup": 1.0}
    variants = ([("int8", quantize)] if quantize else []) + ([("fp16", "dynamic")] if fp16 else [])
    for precision, mode in variants:
        record = quantize_bundle(bundle, mode=mode, precision=precision, data=(X, y))
        row = _measure(bundle / record["file"], X_eval, y_eval, batch_size, repeats)
        if "accuracy" in row:
            row["delta_pp"] = 100.0 * (row["accuracy"] - base["accuracy"])
            row["delta_pp_validation"] = record.get("delta_pp")
        name = f"int8 ({mode})" if precision == "int8" else "fp16"
        row["size_ratio"] = base["file_size"] / row["file_size"]
        row["speedup"] = base["latency_ms"] / row["latency_ms"]
        yield {"name": name, "file": record["file"], **row}


def _measure(graph: Path, X: np.ndarray, y: Any, batch_size: int, repeats: int) -> dict[str, Any]:
    executor = OnnxExecutor(graph, providers=["cpu"])
    scores = executor.run(X, batch_size=batch_size)
    batch = np.ascontiguousarray(X[:batch_size])
    times = []
    for _ in range(repeats + 1):  # the first call warms up
        start = time.perf_counter()
        executor.run(batch, batch_size=None)
        times.append(time.perf_counter() - start)
    row: dict[str, Any] = {"file_size": graph.stat().st_size}
    row.update(graph_quality(graph, y, scores) if y is not None else {})
    row["latency_ms"] = 1000.0 * float(np.median(times[1:])) / len(batch)
    try:
        row["breakdown"] = graph_breakdown(graph, batch, runs=repeats)
    except Exception as exc:  # a diagnostic: its failure must not discard the row measured above
        row["breakdown_error"] = f"{type(exc).__name__}: {exc}"
    return row
