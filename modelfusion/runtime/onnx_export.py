"""A fused model as ONE ONNX graph: shared input → every member → probabilities → the strategy's rule.

Layout of the graph (``[batch]`` is dynamic)::

    input [batch, *shape] ─┬─ m0: preprocess → member 0 → softmax/sigmoid → column order ─┐
                           ├─ m1: ...                                                     ├─ stack [members, batch, classes]
                           └─ mK: ...                                                     ┘        │
                                                                        rule_: strategy.to_torch() → scores [batch, classes]

Torch members go through the TorchScript exporter, scikit-learn members through skl2onnx,
Keras members through ``model.export(format="onnx")``; ONNX members are cut to their chosen
output, aligned to one opset (``onnx.version_converter``) and prefixed
(``onnx.compose.add_prefix``); the rule is joined with ``onnx.compose.merge_models``. Every
member's subgraph is checked against the member itself on example rows at two batch sizes
before it is merged, so a graph that bakes in a batch size or drifts numerically fails here,
naming the member, rather than at prediction time.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from modelfusion.errors import StrategyError
from modelfusion.files import atomic_path
from modelfusion.runtime.errors import ExportError
from modelfusion.runtime.graph import GraphBuilder
from modelfusion.runtime.member_graph import INPUT, OUTPUT, member_pipeline, reference_classes
from modelfusion.runtime.member_onnx import merged_opsets

DEFAULT_OPSET = 17
MIN_OPSET = 13  # Softmax over one axis and Unsqueeze/ReduceSum with axes as inputs


def export_fused_onnx(
    model: Any, path: str | Path, *, opset: int | None = None, example_input: Any = None
) -> Path:
    """Write ``model`` (a :class:`~modelfusion.FusedModel`) as one ONNX file with a dynamic batch axis.

    Parameters
    ----------
    model : the fused model
    path : the ``.onnx`` file to write (atomically)
    opset : default-domain opset of the graph; default 17, or the highest opset of an ONNX
        member if that is higher. ONNX members at another opset are converted.
    example_input : a few rows of what the fused model takes, [rows, *shape]; default: the
        shape is read from the members (scikit-learn ``n_features_in_``, a torch member's
        example input, an ONNX member's static input shape) and random rows are used.

    Returns the path. The graph takes ``input`` [batch, *shape] and returns ``scores``
    [batch, outputs]: probabilities (classification) or values (regression).

    Raises
    ------
    ExportError
        naming the member (and why) when one cannot be converted, its preprocessing has no
        ONNX form, it has a fixed batch size, or its opset cannot be converted; naming the
        strategy when it has no tensor form.

    Examples
    --------
    >>> export_fused_onnx(fused, "fused.onnx")
    >>> onnxruntime.InferenceSession("fused.onnx").run(["scores"], {"input": X_test})[0].shape
    (450, 10)
    """

    proto = build_fused_onnx(model, opset=opset, example_input=example_input)
    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(proto.SerializeToString())
    return path


def build_fused_onnx(model: Any, *, opset: int | None = None, example_input: Any = None) -> Any:
    """The fused graph as an ``onnx.ModelProto`` (see :func:`export_fused_onnx`)."""
    import onnx
    from onnx import helper

    try:
        rule = model.strategy.to_torch()
    except StrategyError as exc:
        raise ExportError(f"cannot export the fused model: {exc}") from exc
    example = example_rows(model, example_input)
    opset = _choose_opset(model, opset)
    ref_classes = reference_classes(model.members)
    pipes = [member_pipeline(m, example, opset, ref_classes) for m in model.members]
    width = pipes[0][1]

    fan_out, stack = GraphBuilder("fan_"), GraphBuilder("stack_")
    nodes, initializers, value_infos, functions, stacked = [], [], [], [], []
    for i, (pipe, _) in enumerate(pipes):
        p = onnx.compose.add_prefix(pipe, f"m{i}_")
        fan_out.rename_output(INPUT, f"m{i}_{INPUT}")
        nodes.extend(p.graph.node)
        initializers.extend(p.graph.initializer)
        value_infos.extend(p.graph.value_info)
        functions.extend(p.functions)
        stacked.append(stack.op("Unsqueeze", f"m{i}_{OUTPUT}", stack.const("axes", np.array([0], np.int64))))
    stack.rename_output(stack.op("Concat", *stacked, axis=0), "member_scores")
    elem = helper.np_dtype_to_tensor_dtype(example.dtype)
    graph = helper.make_graph(
        fan_out.nodes + nodes + stack.nodes,
        "modelfusion_members",
        [helper.make_tensor_value_info(INPUT, elem, ["batch", *example.shape[1:]])],
        [
            helper.make_tensor_value_info(
                "member_scores", onnx.TensorProto.FLOAT, [len(pipes), "batch", width]
            )
        ],
        initializer=initializers + stack.initializers,
        value_info=value_infos,
    )
    opsets = merged_opsets([p for p, _ in pipes], opset)
    ir_version = max([_min_ir_version(opsets), *(p.ir_version for p, _ in pipes)])
    members_model = helper.make_model(graph, opset_imports=opsets, ir_version=ir_version, functions=functions)

    rule_model = _rule_graph(rule, model, len(pipes), width, opset)
    rule_model = onnx.compose.add_prefix(rule_model, "rule_", rename_outputs=False)
    rule_model.ir_version = ir_version
    del rule_model.opset_import[:]
    rule_model.opset_import.extend(opsets)
    fused = onnx.compose.merge_models(members_model, rule_model, io_map=[("member_scores", "rule_in")])
    del fused.opset_import[:]
    fused.opset_import.extend(opsets)
    fused.producer_name = "modelfusion"
    helper.set_model_props(
        fused,
        {
            "modelfusion.members": json.dumps(model.names),
            "modelfusion.frameworks": json.dumps([getattr(m, "framework", "?") for m in model.members]),
            "modelfusion.task": model.task,
            "modelfusion.classes": json.dumps(
                None if model.classes is None else np.asarray(model.classes).tolist()
            ),
            "modelfusion.strategy": repr(model.strategy),
            "modelfusion.input_shape": json.dumps(list(example.shape[1:])),
        },
    )
    return fused


def example_rows(model: Any, example_input: Any = None) -> np.ndarray:
    """Rows of the shared input [rows, *shape]: ``example_input``, or random rows of the inferred shape."""
    if example_input is not None:
        x = (
            example_input.detach().cpu().numpy()
            if hasattr(example_input, "detach")
            else np.asarray(example_input)
        )
        if x.dtype == object or x.dtype.kind in "USV" or x.ndim < 2 or len(x) == 0:
            raise ExportError(
                f"example_input must be a numeric array [rows, features...], got {x.dtype} shaped {x.shape}"
            )
        x = x[:8]
        return x.astype(np.int64) if x.dtype.kind in "iu" and x.dtype != np.uint8 else x.astype(np.float32)
    shapes = {}
    for m in model.members:
        if getattr(m, "preprocess", None) is None:
            shape = m.sample_shape()
            if shape is not None:
                shapes[m.name] = shape
    if not shapes:
        raise ExportError(
            "cannot tell the shape of the fused model's input from its members; pass example_input= "
            "(a few rows of what predict() takes)"
        )
    if len(set(shapes.values())) > 1:
        raise ExportError(
            f"members expect different input shapes ({shapes}); pass example_input= with rows of the "
            "shared input"
        )
    shape = next(iter(shapes.values()))
    return np.random.default_rng(0).random((8, *shape), dtype=np.float32)


def _choose_opset(model: Any, opset: int | None) -> int:
    if opset is not None:
        if int(opset) < MIN_OPSET:
            raise ExportError(f"opset={opset} is too old; the fused graph needs opset {MIN_OPSET} or newer")
        return int(opset)
    found = [DEFAULT_OPSET]
    found += [own for m in model.members if (own := m.onnx_opset()) is not None]
    return max(found)


def _min_ir_version(opsets: list[Any]) -> int:
    """The IR version the standard domains need (onnx's table does not know contrib domains)."""
    from onnx import helper

    standard = [o for o in opsets if o.domain in ("", "ai.onnx", "ai.onnx.ml")]
    return helper.find_min_ir_version_for(standard)


# -- the rule ---------------------------------------------------------------------------------


def _rule_graph(rule: Any, model: Any, n_members: int, width: int, opset: int) -> Any:
    """``strategy.to_torch()`` exported on scores [members, batch, outputs] → ``scores`` [batch, outputs]."""
    import onnx
    import torch

    gen = torch.Generator().manual_seed(0)
    example = torch.rand(n_members, 3, width, generator=gen)
    if model.task == "classification":
        example = example / example.sum(dim=-1, keepdim=True)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                rule.eval(),
                (example,),
                buffer,  # type: ignore[arg-type]  # a file object works; torch's hint names paths only
                dynamo=False,
                opset_version=opset,
                input_names=["in"],
                output_names=[OUTPUT],
                dynamic_axes={"in": {1: "batch"}, OUTPUT: {0: "batch"}},
            )
    except Exception as exc:
        raise ExportError(
            f"the rule of strategy {type(model.strategy).__name__} could not be exported to ONNX "
            f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r})"
        ) from exc
    return onnx.load_from_string(buffer.getvalue())
