"""A small helper for writing ONNX nodes by hand: unique names, constants, one call per node."""

from __future__ import annotations

from typing import Any

import numpy as np


class GraphBuilder:
    """Collects nodes and initializers under a name prefix.

    Examples
    --------
    >>> b = GraphBuilder("pre")
    >>> y = b.op("Reshape", "input", b.const("shape", np.array([-1, 1, 8, 8])))
    >>> graph = onnx.helper.make_graph(b.nodes, "g", inputs, outputs, b.initializers)
    """

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def const(self, hint: str, value: Any) -> str:
        """Add an initializer holding ``value`` (float arrays become float32); return its name."""
        from onnx import numpy_helper

        arr = np.asarray(value)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        """Add one node with a single output; return the output's name."""
        from onnx import helper

        out = self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def rename_output(self, value: str, name: str) -> str:
        """Expose ``value`` under ``name`` (an Identity node, removed by ONNX Runtime's optimiser)."""
        from onnx import helper

        self.nodes.append(helper.make_node("Identity", [value], [name], name=self._name("out")))
        return name
