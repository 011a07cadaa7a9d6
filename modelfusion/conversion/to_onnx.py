"""Any member as one standalone ONNX graph, through the converter its adapter already has.

Keras members go through ``model.export(format="onnx")``, PyTorch members through torch's
exporter, scikit-learn members through skl2onnx (see each adapter's ``Member.to_onnx``).

Examples
--------
>>> proto = member_onnx_model(load_member("logreg.skops"), X[:16], opset=17)
>>> [i.name for i in proto.graph.input]
['X']
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from modelfusion.errors import ExportError

#: The opset a graph is written at when neither ``opset=`` nor the model says otherwise.
DEFAULT_OPSET = 17


def member_onnx_model(member: Any, rows: np.ndarray, opset: int) -> Any:
    """``member`` as an ``onnx.ModelProto`` with one input (its input) and one output (its scores).

    Parameters
    ----------
    member : a loaded :class:`~modelfusion.members.base.Member` (not Hugging Face: no converter)
    rows : example rows of its input [rows, *shape]; they fix the shape the exporter traces
    opset : the default-domain opset of the graph

    The batch axis stays dynamic. The graph records where it came from in its metadata
    (``modelfusion.source_framework``, ``modelfusion.classes``). Raises ExportError naming
    the member when its adapter cannot convert it.

    Examples
    --------
    >>> onnx.save(member_onnx_model(member, member.example_input(), 17), "member.onnx")
    """
    from onnx import helper

    graph = member.to_onnx(np.asarray(rows), opset)
    proto = graph.model
    inputs = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    if len(inputs) != 1 or len(proto.graph.output) != 1:
        raise ExportError(
            f"member {member.name!r}: its ONNX graph has {len(inputs)} inputs and {len(proto.graph.output)} "
            "outputs; conversion writes single-input, single-output graphs"
        )
    classes = graph.columns if graph.columns is not None else member.classes
    kept = {p.key: p.value for p in proto.metadata_props}
    kept.update(
        {
            "modelfusion.source_framework": member.framework,
            "modelfusion.classes": json.dumps(None if classes is None else np.asarray(classes).tolist()),
        }
    )
    helper.set_model_props(proto, kept)
    return proto
