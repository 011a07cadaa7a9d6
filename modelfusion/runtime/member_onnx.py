"""One member as an ONNX graph: what every adapter's ``to_onnx`` returns, and the helpers they share.

Each adapter's converter (:meth:`~modelfusion.members.base.Member.to_onnx`) returns a :class:`MemberGraph`: a model with one input (the member's own,
already preprocessed input) and one output (its raw scores, of the member's ``output_kind``).
:mod:`modelfusion.runtime.onnx_export` wires these into the fused graph.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelfusion.runtime.errors import ExportError, ExportWarning


@dataclass
class MemberGraph:
    """A member's model proto with a single input and output, and the labels of the output columns.

    ``columns`` is the class label of each output column when the graph itself says so (a
    ZipMap's labels), else None (then the member's ``classes`` describe the columns).
    ``fixed_batch`` is the batch size baked into the original graph, if any.
    """

    model: Any
    columns: list[Any] | None = None
    fixed_batch: int | None = None


def member_to_onnx(member: Any, example: np.ndarray, opset: int) -> MemberGraph:
    """Convert ``member`` given an example of its (preprocessed) input [batch, ...]; ExportError if it cannot.

    Each adapter converts itself (:meth:`~modelfusion.members.base.Member.to_onnx`): the torch
    exporter, the ONNX file cut to its one output, skl2onnx, Keras' own export.
    """
    return member.to_onnx(example, opset)


def default_opset(proto: Any) -> int:
    """The default-domain opset a model imports (1 when it imports none)."""
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=1)


def align_opset(proto: Any, opset: int, member: str) -> Any:
    """``proto`` converted to ``opset`` with onnx.version_converter, or ExportError naming both opsets."""
    have = default_opset(proto)
    if have == opset:
        return proto
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(proto, opset)
    except Exception as exc:
        raise ExportError(
            f"member {member!r}: its ONNX graph uses opset {have} and cannot be converted to the fused graph's "
            f"opset {opset} ({str(exc).strip().splitlines()[-1]}); export with opset={have}, or re-export "
            f"the member at opset {opset}"
        ) from exc
    warnings.warn(
        f"member {member!r}: converted its ONNX graph from opset {have} to {opset} to merge it",
        ExportWarning,
        stacklevel=3,
    )
    return converted


def merged_opsets(models: list[Any], opset: int) -> list[Any]:
    """One opset import per domain: the default domain at ``opset``, others at their highest version."""
    from onnx import helper

    versions: dict[str, int] = {"": opset}
    for m in models:
        for o in m.opset_import:
            if o.domain not in ("", "ai.onnx"):
                versions[o.domain] = max(versions.get(o.domain, 0), o.version)
    return [helper.make_opsetid(d, v) for d, v in versions.items()]


# -- ONNX files -------------------------------------------------------------------------------


def onnx_member_graph(proto: Any, output_name: str, member: str, opset: int) -> MemberGraph:
    """The part of ``proto`` from its one input to ``output_name``, at ``opset``, batch axis dynamic."""
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ExportError(
            f"member {member!r}: its ONNX graph has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
            "only single-input members share the fused graph's input"
        )
    columns = None
    zipmap = next((n for n in proto.graph.node if n.op_type == "ZipMap" and output_name in n.output), None)
    if zipmap is not None:  # take the probability tensor the ZipMap reads
        output_name = zipmap.input[0]
        for attr in zipmap.attribute:
            if attr.name == "classlabels_int64s":
                columns = list(attr.ints)
            elif attr.name == "classlabels_strings":
                columns = [s.decode() for s in attr.strings]
    proto = align_opset(proto, opset, member)
    import onnx

    try:
        proto = onnx.utils.Extractor(proto).extract_model([inputs[0].name], [output_name])
    except Exception as exc:
        raise ExportError(
            f"member {member!r}: could not cut its ONNX graph down to output {output_name!r} ({exc})"
        ) from exc
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    fixed = (
        dims[0].dim_value if len(dims) and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
    )
    if fixed is not None:  # try it as a dynamic batch; the runtime check says whether rows are independent
        for value in (*proto.graph.input, *proto.graph.output):
            shape = value.type.tensor_type.shape
            if len(shape.dim):
                shape.dim[0].dim_param = "batch"
        del proto.graph.value_info[:]
    return MemberGraph(proto, columns=columns, fixed_batch=fixed)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else repr(exc)


def at_least_two(x: np.ndarray) -> np.ndarray:
    """Tracing specialises dimensions of size 1; an example batch of two keeps the batch axis general."""
    x = np.asarray(x)
    return np.concatenate([x, x]) if len(x) < 2 else x[:2]
