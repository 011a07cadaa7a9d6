"""Smaller, faster fused graphs: int8 (ONNX Runtime quantization) and fp16, with the accuracy change measured.

Only the members' heavy operators are quantized: member probabilities, the stacking of members
and the strategy's rule stay float, so the fused probabilities keep their resolution.

- **dynamic**: MatMul and Gemm compute in int8 (activations quantized on the fly); Conv
  weights are *stored* in int8 (one scale per output channel) and dequantized once when the
  session loads, because ONNX Runtime's ``ConvInteger`` ran 3.5x slower than float Conv on a
  2-core AVX2 CPU. The file shrinks like a fully quantized one; convolutions run at float speed.
- **static**: Conv, MatMul and Gemm compute in int8 with calibrated activation ranges, and int8
  flows on through Relu and MaxPool. Convolutions with a shallow reduction (fewer than
  :data:`MIN_INT8_CONV_DEPTH` values: a first layer over 1-3 channels) stay float: their int8
  kernels cost 5x the float ones here. ONNX Runtime's Q/DQ propagation is switched off for
  these graphs (recorded in the file, see :mod:`modelfusion.runtime.session`): it moved the
  quantization of a pooled tensor in front of the pooling and ran the pooling in slow NCHW
  float.

The subgraphs of scikit-learn members keep their precision too (see :func:`float_nodes`): they
run in double like the library scores them, ONNX-ML operators have no half-precision kernels,
and naive Bayes log-likelihoods overflow half precision. In both int8 modes, their large tensors
whose values lie on a grid of at most 256 points (k-NN's stored training set of pixel
intensities, class indices) are stored in one byte per value and restored when the session
loads: lossless, see :func:`store_grid_tensors_uint8`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from modelfusion.bundle import cached_bundle_graph, read_manifest, record_bundle_graph, staged_bundle_file
from modelfusion.dependencies import require
from modelfusion.evaluation import evaluate
from modelfusion.files import atomic_path
from modelfusion.fused import FusedModel
from modelfusion.outputs import OutputKind, check_task
from modelfusion.predictions import PredictionSet
from modelfusion.runtime.errors import QuantizationError
from modelfusion.runtime.executors import OnnxExecutor
from modelfusion.runtime.onnx_export import build_fused_onnx
from modelfusion.runtime.session import write_settings

MODES = ("dynamic", "static")
PRECISIONS = ("int8", "fp16")
#: Operators that compute in int8, per mode (dynamic mode stores Conv weights in int8 instead).
QUANTIZED_OPS = {"dynamic": ("MatMul", "Gemm"), "static": ("Conv", "MatMul", "Gemm")}
#: Static mode: int8 flows on through these when their input is int8.
PASS_THROUGH_OPS = ("Relu", "MaxPool")
#: Static mode: convolutions reducing over fewer values (input channels / groups x kernel area)
#: stay float.
MIN_INT8_CONV_DEPTH = 64
#: Tensors with fewer values are not worth a Cast node (see :func:`store_grid_tensors_uint8`).
MIN_GRID_TENSOR_SIZE = 1024
#: Session settings recorded in quantized graphs (see the module docstring).
DYNAMIC_SESSION: dict[str, Any] = {"config": {"session.disable_quant_qdq": "1"}}
STATIC_SESSION: dict[str, Any] = {"disabled_optimizers": ["QDQPropagationTransformer"]}


def quantize_onnx(
    src: str | Path,
    dst: str | Path,
    mode: str = "dynamic",
    calibration: Any = None,
    precision: str = "int8",
    *,
    op_types: Iterable[str] | None = None,
    per_channel: bool = False,
    min_conv_depth: int = MIN_INT8_CONV_DEPTH,
) -> Path:
    """Quantize an ONNX graph (``int8``) or cast it to half precision (``fp16``); writes ``dst`` atomically.

    Parameters
    ----------
    src, dst : input and output ``.onnx`` files
    mode : ``"dynamic"`` (int8 weights, activations quantized on the fly; no data needed) or
        ``"static"`` (activations too, with ranges calibrated on ``calibration``)
    calibration : for static mode: an array [samples, *input shape] (used in batches of 32)
        or an iterable of such batches, typically validation inputs
    precision : ``"int8"`` or ``"fp16"`` (a cast with float inputs/outputs kept; mode must be
        dynamic)
    op_types : operators that compute in int8; default :data:`QUANTIZED_OPS` for the mode. In
        dynamic mode, Conv weights are stored in int8 unless Conv is listed here (then it
        runs as ``ConvInteger``).
    per_channel : one scale per output channel of the weights
    min_conv_depth : static mode: convolutions summing fewer values stay float (0: none do)

    Raises
    ------
    QuantizationError
        for an unknown mode or precision, static mode without calibration data, or fp16 with
        static mode.

    Examples
    --------
    >>> quantize_onnx("fused.onnx", "fused.int8.onnx", mode="dynamic")
    >>> quantize_onnx("fused.onnx", "fused.int8.onnx", mode="static", calibration=X_val)
    """
    check_request(mode, precision, has_calibration=calibration is not None)
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(
            f"{src} does not exist; export the fused graph first (FusedModel.export_onnx)"
        )
    if precision == "fp16":
        return _atomic(dst, lambda tmp: _to_fp16(src, tmp))
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    source = onnx.load(str(src), load_external_data=False)
    exclude = full_precision = float_nodes(source)
    ops = list(QUANTIZED_OPS[mode] if op_types is None else op_types)
    if mode == "dynamic":

        def write_dynamic(tmp: str) -> None:
            quantize_dynamic(
                src,
                tmp,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=ops,
                nodes_to_exclude=exclude,
                per_channel=per_channel,
            )
            model = onnx.load(tmp)
            if "Conv" not in ops and store_conv_weights_int8(model, exclude):
                write_settings(model, **DYNAMIC_SESSION)
            store_grid_tensors_uint8(model, full_precision)
            onnx.save(model, tmp)

        with _no_preprocessing_hint():
            return _atomic(dst, write_dynamic)
    reader = _CalibrationReader(src, calibration)
    ops, exclude = static_selection(source, ops, exclude, min_conv_depth=min_conv_depth)

    def write_static(tmp: str) -> None:
        quantize_static(
            src,
            tmp,
            reader,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=ops,
            nodes_to_exclude=exclude,
            per_channel=per_channel,
        )
        model = onnx.load(tmp)
        write_settings(model, **STATIC_SESSION)
        store_grid_tensors_uint8(model, full_precision)
        onnx.save(model, tmp)

    with _no_preprocessing_hint():
        return _atomic(dst, write_static)


def static_selection(
    model: Any, op_types: Iterable[str], exclude: Iterable[str], *, min_conv_depth: int = MIN_INT8_CONV_DEPTH
) -> tuple[list[str], list[str]]:
    """The operator types and the excluded nodes to hand ONNX Runtime's static quantizer.

    Adds :data:`PASS_THROUGH_OPS`, excluding each such node whose input does not come from a
    quantized node, and excludes convolutions shallower than ``min_conv_depth``. The graph's
    nodes are in topological order (an ONNX requirement), so one pass suffices.
    """
    op_types = list(op_types)
    excluded = set(exclude)
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    quantized_outputs: set[str] = set()
    for node in model.graph.node:
        if node.name in excluded:
            continue
        if node.op_type in PASS_THROUGH_OPS:
            if node.input and node.input[0] in quantized_outputs:
                quantized_outputs.update(node.output)
            else:
                excluded.add(node.name)
            continue
        if node.op_type == "Conv" and _conv_depth(node, weights) < min_conv_depth:
            excluded.add(node.name)
            continue
        if node.op_type in op_types:
            quantized_outputs.update(node.output)
    extra = [op for op in PASS_THROUGH_OPS if op not in op_types]
    return op_types + extra, sorted(excluded)


def store_conv_weights_int8(model: Any, exclude: Iterable[str] = ()) -> int:
    """Store float Conv weights as int8 with one scale per output channel (symmetric), in place.

    Each weight initializer is replaced by its int8 values, their scales and a
    ``DequantizeLinear`` node: the arithmetic stays float (ONNX Runtime folds the node once the
    session config ``session.disable_quant_qdq`` is set, see :data:`DYNAMIC_SESSION`), only the
    file shrinks. Weights shared with other operators are left alone. Returns how many weights
    were converted.
    """
    from onnx import TensorProto, helper, numpy_helper

    skip = set(exclude)
    inits = {init.name: init for init in model.graph.initializer}
    users: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, set()).add(node.op_type)
    done: set[str] = set()
    dequantize = []
    for node in model.graph.node:
        if node.op_type != "Conv" or node.name in skip or len(node.input) < 2:
            continue
        name = node.input[1]
        init = inits.get(name)
        if name in done or init is None or init.data_type != TensorProto.FLOAT or users[name] != {"Conv"}:
            continue
        w = numpy_helper.to_array(init)
        scale = np.abs(w.reshape(len(w), -1)).max(axis=1) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(w / scale.reshape(-1, *([1] * (w.ndim - 1)))), -127, 127).astype(np.int8)
        model.graph.initializer.remove(init)
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(q, f"{name}_int8"),
                numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale"),
            ]
        )
        dequantize.append(
            helper.make_node(
                "DequantizeLinear",
                [f"{name}_int8", f"{name}_scale"],
                [name],
                name=f"{name}_dequantize",
                axis=0,
            )
        )
        done.add(name)
    if dequantize:
        _prepend(model, dequantize)
        _require_opset(model, 13)  # DequantizeLinear with a per-axis scale
    return len(dequantize)


def store_grid_tensors_uint8(model: Any, nodes: Iterable[str], min_size: int = MIN_GRID_TENSOR_SIZE) -> int:
    """Store the initializers of ``nodes`` whose values lie on a grid of at most 256 points in one byte per value, in place.

    For the subgraphs int8 arithmetic leaves alone (``nodes``: :func:`float_nodes`, the
    scikit-learn members and the rule), only initializers read by nothing else are touched.
    Lossless: a float32, float64, int32 or int64 tensor of at least ``min_size`` values that
    is exactly ``low + k * step`` (whole ``k`` in 0..255, ``step`` the smallest gap between
    its values, or their greatest common divisor for integers; bit for bit, signed zeros
    included) becomes uint8 codes and ``Cast`` (``Mul``, ``Add``) nodes that rebuild it in its
    own precision; ONNX Runtime folds them into a constant when the session loads (graph
    optimizations on, the default). Typical hits: a k-NN member's stored training set (pixel
    intensities, counts, one-hot features) and class-index tables. Returns how many tensors
    were converted; graphs below opset 13 are left as they are.
    """
    from onnx import TensorProto, helper, numpy_helper

    if _default_opset(model) < 13:
        return 0
    allowed = set(nodes)
    wide = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64, TensorProto.INT32)
    readers: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.name)
    outputs = {o.name for o in model.graph.output}
    names = _all_names(model.graph)
    added: list[Any] = []
    for init in list(model.graph.initializer):
        if (
            init.data_type not in wide
            or int(np.prod(init.dims)) < min_size
            or init.data_location == TensorProto.EXTERNAL
            or init.name in outputs
            or not readers.get(init.name)
            or not readers[init.name] <= allowed
        ):
            continue
        values = numpy_helper.to_array(init)
        grid = _grid(values)
        if grid is None:
            continue
        codes, low, step = grid

        def fresh(suffix: str, base: str = init.name) -> str:
            name, i = f"{base}_{suffix}", 1
            while name in names:
                name, i = f"{base}_{suffix}{i}", i + 1
            names.add(name)
            return name

        model.graph.initializer.remove(init)
        code_name = fresh("uint8")
        model.graph.initializer.append(numpy_helper.from_array(codes, code_name))
        ops = [("Cast", None)] + ([("Mul", step)] if step != 1 else []) + ([("Add", low)] if low != 0 else [])
        source = code_name
        for i, (op, constant) in enumerate(ops):
            target = init.name if i == len(ops) - 1 else fresh(op.lower())
            if op == "Cast":
                added.append(
                    helper.make_node("Cast", [source], [target], name=fresh("cast"), to=init.data_type)
                )
            else:
                k = fresh(f"{op.lower()}_k")
                model.graph.initializer.append(numpy_helper.from_array(np.asarray(constant, values.dtype), k))
                added.append(helper.make_node(op, [source, k], [target], name=fresh(op.lower())))
            source = target
    _prepend(model, added)
    return sum(node.op_type == "Cast" for node in added)


def _grid(values: np.ndarray) -> tuple[np.ndarray, Any, Any] | None:
    """``(codes, low, step)`` with ``low + codes * step`` bit-identical to ``values``, codes uint8; else None."""
    if values.size == 0 or (values.dtype.kind == "f" and not np.all(np.isfinite(values))):
        return None
    points = np.unique(values)
    if len(points) > 256:
        return None
    low = points[0]
    with np.errstate(all="ignore"):
        if len(points) == 1:
            step = values.dtype.type(1)
        elif values.dtype.kind == "f":
            step = np.diff(points).min()
        else:
            step = np.gcd.reduce(np.diff(points))
        if not step > 0:  # integer overflow of the gaps
            return None
        codes = np.rint((values - low) / step)
        if codes.max() > 255:
            return None
        codes = codes.astype(np.uint8)
        rebuilt = codes.astype(values.dtype) * step + low
    bits = f"u{values.dtype.itemsize}"  # bitwise: -0.0 must stay -0.0
    if not np.array_equal(rebuilt.view(bits), values.view(bits)):
        return None
    return codes, low, step


def _prepend(model: Any, nodes: list[Any]) -> None:
    """Put ``nodes`` first in the graph: they read only initializers, and ONNX wants topological order."""
    if nodes:
        ordered = nodes + list(model.graph.node)
        del model.graph.node[:]
        model.graph.node.extend(ordered)


def _default_opset(model: Any) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _all_names(graph: Any) -> set[str]:
    """Every tensor and node name in a graph and its subgraphs."""
    from onnx import AttributeProto

    names = {t.name for t in graph.initializer} | {
        v.name for v in (*graph.input, *graph.output, *graph.value_info)
    }
    for node in graph.node:
        names.update([node.name, *node.input, *node.output])
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                names |= _all_names(attr.g)
            for sub in attr.graphs:
                names |= _all_names(sub)
    return names


def _conv_depth(node: Any, weights: dict[str, list[int]]) -> int:
    """Values a Conv sums per output (in_channels / groups x kernel area), from its weight's shape."""
    dims = weights.get(node.input[1]) if len(node.input) > 1 else None
    return int(np.prod(dims[1:])) if dims else 0


def _require_opset(model: Any, version: int) -> None:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < version:
            raise QuantizationError(
                f"the graph uses ONNX opset {opset.version}; storing int8 weights needs opset >= {version} "
                "(re-export the fused graph with a newer opset)"
            )


def quantize_bundle(
    bundle_dir: str | Path,
    mode: str = "dynamic",
    precision: str = "int8",
    data: Any = None,
    *,
    calibration_size: int = 512,
    trust: bool = False,
) -> dict[str, Any]:
    """Quantize a bundle's fused graph to ``fused.int8.onnx`` (dynamic), ``fused.int8-static.onnx`` or
    ``fused.fp16.onnx`` and measure what it costs; each mode has its own file, so one never overwrites another.

    Exports ``fused.onnx`` first if the bundle has none. ``data`` — ``(X, y)`` or an object with
    ``.X`` and ``.y`` (a :class:`~modelfusion.data.Dataset`), normally the validation split —
    calibrates static mode (its first ``calibration_size`` rows) and measures accuracy and NLL
    (RMSE for regression) of both graphs. The record below is stored in the manifest under
    ``metadata.runtime.quantized.<key>`` (:func:`graph_key`) with the file's checksum, and returned:
    ``{file, mode, precision, size_bytes, size_bytes_fp32, accuracy_fp32, accuracy_quantized,
    delta_pp, nll_fp32, nll_quantized, max_abs_diff, samples}``.

    Examples
    --------
    >>> quantize_bundle("runs/demo/results/bundle", "dynamic", data=(X_val, y_val))["delta_pp"]
    -0.22
    """

    X, y = _split_data(data)
    check_request(mode, precision, has_calibration=X is not None)
    bundle = Path(bundle_dir)
    fp32 = _bundle_graph(bundle, X, trust)
    key = graph_key(precision, mode)
    name = f"fused.{key}.onnx"
    calibration = None if X is None else X[:calibration_size]
    with staged_bundle_file(bundle, name) as staged:
        quantize_onnx(fp32, staged.path, mode=mode, calibration=calibration, precision=precision)
        record: dict[str, Any] = {
            "file": name,
            "mode": mode,
            "precision": precision,
            "size_bytes": staged.path.stat().st_size,
            "size_bytes_fp32": fp32.stat().st_size,
        }
        if X is not None:
            before = OnnxExecutor(fp32, providers=["cpu"])
            after = OnnxExecutor(staged.path, providers=["cpu"])
            s32, sq = before.run(X), after.run(X)
            record["max_abs_diff"] = float(np.abs(s32 - sq).max())
            record["samples"] = len(X)
            if y is not None:
                record.update(_quality(fp32, y, s32, sq))
        manifest, _ = read_manifest(bundle)
        metadata = dict(manifest.get("metadata") or {})
        runtime = dict(metadata.get("runtime") or {})
        runtime["quantized"] = {**dict(runtime.get("quantized") or {}), key: record}
        metadata["runtime"] = runtime
        staged.metadata = metadata
    return record


def graph_key(precision: str, mode: str) -> str:
    """The name a quantized graph and its record go by: ``int8`` (dynamic), ``int8-static``, ``fp16``."""
    return f"{precision}-static" if mode == "static" else precision


def check_request(mode: str, precision: str, *, has_calibration: bool) -> None:
    """Raise QuantizationError for an unknown mode or precision, static without data, or static fp16."""
    if mode not in MODES:
        raise QuantizationError(f"mode={mode!r} is not one of {', '.join(MODES)}")
    if precision not in PRECISIONS:
        raise QuantizationError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and mode == "static":
        raise QuantizationError(
            "fp16 is a cast with no calibration; use mode='dynamic' with precision='fp16', or "
            "precision='int8' for static quantization"
        )
    if mode == "static" and not has_calibration:
        raise QuantizationError(
            "static quantization needs calibration data to measure activation ranges: pass calibration= "
            "(e.g. the validation inputs; CLI: --data with --split validation), or use mode='dynamic'"
        )


# -- internals --------------------------------------------------------------------------------


@contextlib.contextmanager
def _no_preprocessing_hint() -> Iterator[None]:
    """onnxruntime.quantization logs "consider pre-processing" on the root logger every call;
    its shape-inference pass made no difference to these graphs, so the hint is dropped."""

    class Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-processing before quantization" not in record.getMessage()

    root, drop = logging.getLogger(), Drop()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _atomic(dst: Path, write: Any) -> Path:
    """Run ``write(tmp)`` on a temporary ``.onnx`` path beside ``dst``, then rename it onto ``dst``."""
    with atomic_path(dst, suffix=".tmp.onnx") as tmp:
        write(tmp)
    return dst


def float_nodes(model: Any) -> list[str]:
    """Nodes kept in full precision: the strategy rule (``rule_*``) and scikit-learn members' subgraphs.

    scikit-learn members run in double precision (as the library scores them), have no
    half-precision kernels, and their small linear parts gain nothing from int8.
    """
    props = {p.key: p.value for p in model.metadata_props}
    frameworks = json.loads(props.get("modelfusion.frameworks", "[]"))
    keep = tuple(f"m{i}_" for i, fw in enumerate(frameworks) if fw == "sklearn") + ("rule_",)
    return [n.name for n in model.graph.node if n.name.startswith(keep)]


def _to_fp16(src: Path, dst: str) -> None:
    import onnx

    try:
        from onnxconverter_common.float16 import convert_float_to_float16
    except ImportError:  # the same converter ships inside onnxruntime.transformers
        convert_float_to_float16 = require(
            "onnxruntime.transformers.float16", purpose="fp16", extra="export", package="onnxconverter-common"
        ).convert_float_to_float16
    import onnxruntime as ort

    model = onnx.load(str(src))
    block = float_nodes(model)
    with warnings.catch_warnings():  # "float32 number ... will be truncated": expected for tiny weights
        warnings.simplefilter("ignore", UserWarning)
        converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=block)
    _retarget_casts(converted)
    data = converted.SerializeToString()
    try:
        ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as exc:  # a converter limit: say so instead of failing later in a measurement
        raise QuantizationError(
            f"the fp16 converter produced a graph ONNX Runtime cannot load ({type(exc).__name__}: "
            f"{str(exc).split('] ', 1)[-1][:300]}); use int8 (--mode dynamic) for this bundle"
        ) from None
    with open(dst, "wb") as fh:
        fh.write(data)


def _retarget_casts(model: Any) -> int:
    """Make each ``Cast`` to float whose output the converter retyped to float16 cast to float16.

    The converter changes the declared type of a Cast's output but not its ``to`` attribute
    (Keras-exported graphs cast to float), which leaves a graph ONNX Runtime refuses to load.
    Returns how many nodes changed.
    """
    from onnx import TensorProto

    declared = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    changed = 0
    for node in model.graph.node:
        if node.op_type != "Cast" or declared.get(node.output[0]) != TensorProto.FLOAT16:
            continue
        for attr in node.attribute:
            if attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
                changed += 1
    return changed


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader over an array (in batches of 32) or an iterable of batches."""

    def __init__(self, src: Path, calibration: Any, batch_size: int = 32):
        import onnxruntime as ort

        session = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
        self.input_name = session.get_inputs()[0].name
        self.dtype = np.int64 if session.get_inputs()[0].type == "tensor(int64)" else np.float32
        if isinstance(calibration, np.ndarray) or hasattr(calibration, "detach"):
            x = np.asarray(calibration.detach().cpu() if hasattr(calibration, "detach") else calibration)
            self.batches = [x[lo : lo + batch_size] for lo in range(0, len(x), batch_size)]
        else:
            self.batches = [np.asarray(b) for b in calibration]
        if not self.batches or not len(self.batches[0]):
            raise QuantizationError("the calibration data is empty; give at least one batch of inputs")
        self._iter: Iterator[np.ndarray] = iter(self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iter, None)
        return None if batch is None else {self.input_name: np.ascontiguousarray(batch, dtype=self.dtype)}

    def rewind(self) -> None:
        self._iter = iter(self.batches)


def _split_data(data: Any) -> tuple[np.ndarray | None, Any]:
    if data is None:
        return None, None
    if isinstance(data, tuple) and len(data) == 2:
        X, y = data
    elif hasattr(data, "X"):
        X, y = data.X, getattr(data, "y", None)
    else:
        X, y = data, None
    X = X.detach().cpu().numpy() if hasattr(X, "detach") else np.asarray(X)
    if X.dtype == object or X.dtype.kind in "USV":
        raise QuantizationError(f"quantization data must be numeric arrays, got {X.dtype}")
    return X, y


def _bundle_graph(bundle: Path, X: np.ndarray | None, trust: bool) -> Path:
    """The bundle's ``fused.onnx`` (checksum verified), exported and recorded first if needed."""

    cached = cached_bundle_graph(bundle)
    if cached is not None:
        return cached
    model = FusedModel.load(bundle, trust=trust)
    proto = build_fused_onnx(model, example_input=None if X is None else X[:8])
    return record_bundle_graph(bundle, proto.SerializeToString(), proto)


def graph_quality(graph: Path, y: Any, scores: np.ndarray) -> dict[str, float]:
    """Accuracy and NLL (classification) or RMSE (regression) of a fused graph's ``scores`` against ``y``.

    The task and class order are read from the graph's metadata (written at export).
    """
    import onnx

    props = {p.key: p.value for p in onnx.load(str(graph), load_external_data=False).metadata_props}
    task = check_task(props.get("modelfusion.task", "classification"))
    classes = json.loads(props.get("modelfusion.classes", "null"))
    kind: OutputKind = "values" if task == "regression" else "proba"
    y_enc = PredictionSet(scores[None], names=["fused"], classes=classes, task=task, kind=kind).encode_labels(
        y
    )
    return evaluate(y_enc, scores, task, ["rmse"] if task == "regression" else ["accuracy", "nll"])


def _quality(graph: Path, y: Any, s32: np.ndarray, sq: np.ndarray) -> dict[str, float]:
    """Both graphs' quality (see :func:`graph_quality`); the accuracy change in percentage points."""
    a, b = graph_quality(graph, y, s32), graph_quality(graph, y, sq)
    if "rmse" in a:
        return {"rmse_fp32": a["rmse"], "rmse_quantized": b["rmse"]}
    return {
        "accuracy_fp32": a["accuracy"],
        "accuracy_quantized": b["accuracy"],
        "delta_pp": 100.0 * (b["accuracy"] - a["accuracy"]),
        "nll_fp32": a["nll"],
        "nll_quantized": b["nll"],
    }
