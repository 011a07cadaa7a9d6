"""One member's subgraph inside the fused graph: shared input → preprocessing → member → probabilities.

:func:`member_pipeline` converts the member (:mod:`modelfusion.runtime.member_onnx`), bakes
in its preprocessing spec, turns its raw scores into what fusion works on (as
:func:`modelfusion.outputs.to_proba` and the prediction store do) and puts the columns in the
fused model's class order; then it runs the subgraph at two batch sizes and compares it with
the member itself, so a graph that bakes in a batch size or drifts numerically is refused
here, naming the member.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelfusion.outputs import to_proba
from modelfusion.predictions import task_classes
from modelfusion.runtime.errors import ExportError
from modelfusion.runtime.graph import GraphBuilder
from modelfusion.runtime.member_onnx import align_opset, member_to_onnx, merged_opsets
from modelfusion.runtime.preprocess import member_preprocess_spec, preprocess_to_onnx

INPUT, OUTPUT = "input", "scores"
CHECK_TOLERANCE = 1e-4


def reference_classes(members: list[Any]) -> list[Any] | None:
    """The class order of the fused outputs: the sorted union of the declared classes (as align_classes)."""
    ref = task_classes(members)
    return None if ref is None else ref.tolist()


def member_pipeline(
    member: Any, example: np.ndarray, opset: int, ref_classes: list[Any] | None
) -> tuple[Any, int]:
    """input → preprocess → member → probabilities in the reference class order → ``scores``; and its width."""
    import onnx
    from onnx import helper

    rows = np.concatenate([example] * 3)[: max(3, len(example))]  # at least three rows
    try:
        raw = np.asarray(member.predict(rows))
    except Exception as exc:
        raise ExportError(
            f"member {member.name!r} fails on the example input shaped {list(rows.shape)} "
            f"({type(exc).__name__}: {exc}); pass example_input= with rows it accepts"
        ) from exc
    b = GraphBuilder("pre_")
    spec = member_preprocess_spec(member)
    x, _ = preprocess_to_onnx(spec, b, INPUT, example.shape[1:], member=member.name, dtype=example.dtype)
    prepared = member.preprocess(example) if member.preprocess is not None else example
    converted = member_to_onnx(member, np.asarray(prepared), opset)
    core = align_opset(converted.model, opset, member.name)
    for node in core.graph.node:  # every node named, so later passes can select a member's nodes
        node.name = node.name or f"node_{node.output[0]}"
    core = onnx.compose.add_prefix(core, "core_")
    core_in, core_out = core.graph.input[0], core.graph.output[0]
    if core_in.type.tensor_type.elem_type != helper.np_dtype_to_tensor_dtype(example.dtype):
        x = b.op("Cast", x, to=core_in.type.tensor_type.elem_type)
    b.rename_output(x, core_in.name)
    post = GraphBuilder("post_")
    y = core_out.name
    if core_out.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        y = post.op("Cast", y, to=onnx.TensorProto.FLOAT)
    perm = column_order(member, converted.columns, ref_classes)
    y = _probabilities(post, y, member, raw.shape[1])
    if perm is not None:
        y = post.op("Gather", y, post.const("columns", np.array(perm, np.int64)), axis=1)
    post.rename_output(y, OUTPUT)
    width = raw.shape[1] if member.task != "classification" or raw.shape[1] > 1 else 2
    graph = helper.make_graph(
        b.nodes + list(core.graph.node) + post.nodes,
        f"member_{member.name}",
        [
            helper.make_tensor_value_info(
                INPUT, helper.np_dtype_to_tensor_dtype(example.dtype), ["batch", *example.shape[1:]]
            )
        ],
        [helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, ["batch", width])],
        initializer=b.initializers + list(core.graph.initializer) + post.initializers,
        value_info=list(core.graph.value_info),
    )
    pipe = helper.make_model(
        graph,
        opset_imports=merged_opsets([core], opset),
        ir_version=core.ir_version,
        functions=list(core.functions),
    )
    expected = _library_scores(member, raw, ref_classes)
    _check_member(pipe, member, rows, expected, converted.fixed_batch)
    return pipe, width


def _probabilities(b: GraphBuilder, y: str, member: Any, width: int) -> str:
    """Raw scores → what fusion works on, as :func:`modelfusion.outputs.to_proba` and PredictionSet do."""
    kind, task = member.output_kind, member.task
    if task == "regression":
        return y
    if task == "multilabel":
        return b.op("Sigmoid", y) if kind == "logits" else y
    if width == 1:  # binary, positive class only: [1 - p, p]
        p = b.op("Sigmoid", y) if kind == "logits" else y
        return b.op("Concat", b.op("Sub", b.const("one", np.ones((1, 1), np.float32)), p), p, axis=1)
    if kind == "logits":
        return b.op("Softmax", y, axis=-1)
    # PredictionSet renormalises probability rows (members may be off by float rounding).
    total = b.op("ReduceSum", y, b.const("axis", np.array([1], np.int64)), keepdims=1)
    return b.op("Div", y, total)


def column_order(member: Any, columns: list[Any] | None, ref: list[Any] | None) -> list[int] | None:
    labels = columns if columns is not None else (None if member.classes is None else member.classes.tolist())
    if member.task != "classification" or ref is None or labels is None:
        return None
    if len(labels) < len(ref) and set(map(str, labels)) < set(map(str, ref)):
        raise ExportError(
            f"member {member.name!r} was trained without class(es) "
            f"{[c for c in ref if str(c) not in set(map(str, labels))]}; the fused graph cannot give it zero "
            "columns yet, so it runs on the member executor"
        )
    if set(map(str, labels)) != set(map(str, ref)):
        raise ExportError(f"member {member.name!r} predicts classes {labels} but the fused model's are {ref}")
    order = {str(c): i for i, c in enumerate(labels)}
    perm = [order[str(c)] for c in ref]
    return None if perm == list(range(len(perm))) else perm


def _library_scores(member: Any, raw: np.ndarray, ref: list[Any] | None) -> np.ndarray:
    """What the prediction store makes of the member's raw outputs: the reference for the check."""
    if member.task == "regression":
        return raw
    p = to_proba(raw, member.output_kind, member.task)
    if member.task == "classification" and member.output_kind == "proba":
        p = p / p.sum(axis=1, keepdims=True)
    perm = column_order(member, None, ref)
    return p if perm is None else p[:, perm]


def _check_member(pipe: Any, member: Any, rows: np.ndarray, expected: np.ndarray, fixed: int | None) -> None:
    """Run the member's subgraph at two batch sizes and compare with the member itself."""
    import onnxruntime as ort

    sizes = [s for s in (1, len(rows), 2) if s != fixed][:2]
    try:
        session = ort.InferenceSession(pipe.SerializeToString(), providers=["CPUExecutionProvider"])
        got = [session.run([OUTPUT], {INPUT: rows[:s]})[0] for s in sizes]
    except Exception as exc:
        if fixed is not None:
            raise ExportError(
                f"member {member.name!r} has a fixed batch size of {fixed} in its ONNX graph and does not run "
                f"at other batch sizes, so it cannot be part of a dynamic-batch graph; re-export it with a "
                f"dynamic batch axis (torch.onnx.export(..., dynamic_axes={{'input': {{0: 'batch'}}}})) "
                f"[{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}]"
            ) from exc
        raise ExportError(
            f"member {member.name!r}: its converted ONNX graph does not run ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0][:300]})"
        ) from exc
    scale = max(1.0, float(np.abs(expected).max())) if member.task == "regression" else 1.0
    for size, out in zip(sizes, got):
        want = expected[:size]
        diff = float(np.abs(out - want).max()) if out.shape == want.shape else np.inf
        if not diff <= CHECK_TOLERANCE * scale:
            what = f"a fixed batch size of {fixed} and " if fixed is not None else ""
            raise ExportError(
                f"member {member.name!r}: its ONNX graph has {what}outputs that differ from the member by "
                f"{diff:.3g} at batch size {size} (shape {out.shape} vs {want.shape}); it cannot be merged "
                "faithfully"
            )
