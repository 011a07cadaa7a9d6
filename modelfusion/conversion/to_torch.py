"""An ONNX graph as a PyTorch module (through onnx2torch), saved as a ``torch.export`` program (``.pt2``).

onnx2torch converts the standard ONNX operators; the ONNX-ML operators scikit-learn graphs
use (``LinearClassifier``, ``TreeEnsembleClassifier``, ...) have no converter there, and
:func:`onnx_to_torch` refuses them by name. Two things are prepared so that the module
exports with a dynamic batch axis: every intermediate value gets its rank (onnx2torch's
pooling converters need it, and shape inference loses it after a computed ``Reshape``), and
every ``Reshape`` whose target shape only depends on the batch size gets a fixed shape
(``-1`` for the batch), run by :class:`StaticReshape` instead of onnx2torch's reshape, whose
data-dependent branch ``torch.export`` cannot trace.

Examples
--------
>>> module = onnx_to_torch(onnx.load("cnn.onnx"), X[:16])
>>> torch.export.save(export_program(module, X[:16]), "cnn.pt2")
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from modelfusion.dependencies import require
from modelfusion.errors import ExportError
from modelfusion.runtime.member_onnx import first_line

#: Two batch sizes the graph is probed at: what differs between them follows the batch.
_PROBE_BATCHES = (2, 3)


class StaticReshape(nn.Module):
    """``torch.reshape`` to a fixed target shape, ONNX-style: a 0 copies the input's dimension.

    Examples
    --------
    >>> StaticReshape((-1, 1, 8, 8))(torch.zeros(4, 64)).shape
    torch.Size([4, 1, 8, 8])
    """

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(int(d) for d in shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` reshaped to :attr:`shape` [*shape]."""
        return torch.reshape(x, [x.shape[i] if d == 0 else d for i, d in enumerate(self.shape)])


class CastInput(nn.Module):
    """Run ``module`` on its input cast to ``dtype``, and return float32 scores.

    A float64 graph (what skl2onnx writes for estimators scored in double precision) then
    takes the float32 batches a :class:`~modelfusion.members.torch.TorchMember` passes.

    Examples
    --------
    >>> CastInput(module, torch.float64)(torch.zeros(2, 64)).dtype
    torch.float32
    """

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.module = module
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores [batch, outputs] of ``module`` on ``x`` [batch, *shape] as ``dtype``."""
        return self.module(x.to(self.dtype)).float()


def onnx_to_torch(model: Any, rows: np.ndarray) -> nn.Module:
    """A PyTorch module computing what the single-input ONNX ``model`` computes.

    Parameters
    ----------
    model : ``onnx.ModelProto`` with one input (batch first) and its scores as first output
    rows : example rows of its input [rows, *shape], at least three; the graph is run on
        them by ONNX Runtime to learn the ranks and reshape targets

    Raises
    ------
    MissingDependencyError
        onnx2torch is not installed (``pip install "modelfusion[convert]"``).
    ExportError
        the graph uses operators outside the standard domain (ONNX-ML), or onnx2torch has no
        converter for one of its operators (named).

    Examples
    --------
    >>> onnx_to_torch(onnx.load("mlp.onnx"), X[:16])(torch.from_numpy(X[:2])).shape
    torch.Size([2, 10])
    """
    import onnx
    from onnx import helper

    onnx2torch = require("onnx2torch", purpose="converting ONNX graphs to PyTorch", extra="convert")
    foreign = sorted({f"{n.domain}.{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        raise ExportError(
            f"the ONNX graph uses operators outside the standard ONNX domain ({', '.join(foreign)}), which "
            "onnx2torch cannot convert; scikit-learn graphs (ONNX-ML) stay ONNX: load the .onnx (or .skops) "
            "file as a member instead"
        )
    prepared = prepare_graph(model, rows)
    try:
        module = onnx2torch.convert(prepared)
    except Exception as exc:
        raise ExportError(
            f"onnx2torch cannot convert the ONNX graph ({type(exc).__name__}: {first_line(exc)})"
        ) from exc
    module = static_reshapes(module)
    first = next(i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer})
    elem = first.type.tensor_type.elem_type
    if elem != onnx.TensorProto.FLOAT:
        return CastInput(module, torch.from_numpy(np.zeros(0, helper.tensor_dtype_to_np_dtype(elem))).dtype)
    return module


def prepare_graph(model: Any, rows: np.ndarray) -> Any:
    """``model`` with fixed ``Reshape`` targets where they only follow the batch, and a rank on every value.

    Runs the graph at two batch sizes with every intermediate value as an output. A
    ``Reshape`` target equal at both becomes a constant; one that differs in exactly one
    entry gets ``-1`` there. The shape computations left unused are pruned.

    Examples
    --------
    >>> prepare_graph(onnx.load("cnn.onnx"), X[:16]).graph.value_info[0].type.tensor_type.shape
    """
    import onnx
    from onnx import helper, numpy_helper

    if len(rows) < max(_PROBE_BATCHES):  # one or two check rows: repeat them, the batch sizes must differ
        rows = np.resize(rows, (max(_PROBE_BATCHES), *rows.shape[1:]))
    runs = [_every_value(model, rows[:n]) for n in _PROBE_BATCHES]
    out = copy.deepcopy(model)
    initializers = {t.name for t in out.graph.initializer}
    changed = False
    for node in out.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] in initializers:
            continue
        target = _fixed_target(*(r.get(node.input[1]) for r in runs))
        if target is None:
            continue
        name = f"{node.input[1]}__fixed"
        out.graph.initializer.append(numpy_helper.from_array(target, name))
        initializers.add(name)
        node.input[1] = name
        changed = True
    if changed:  # drop the shape computations no Reshape reads any more
        graph_in = [i.name for i in out.graph.input if i.name not in initializers]
        out = onnx.utils.Extractor(out).extract_model(graph_in, [o.name for o in out.graph.output])
    typed = {
        v.name
        for v in onnx.shape_inference.infer_shapes(out).graph.value_info
        if v.type.tensor_type.HasField("shape")
    }
    produced = {o for n in out.graph.node for o in n.output}
    for name, value in runs[0].items():
        if name in produced and name not in typed and isinstance(value, np.ndarray):
            elem = helper.np_dtype_to_tensor_dtype(value.dtype)
            out.graph.value_info.append(helper.make_tensor_value_info(name, elem, [None] * value.ndim))
    return out


def static_reshapes(module: Any) -> Any:
    """Swap each onnx2torch reshape whose target is a constant for a :class:`StaticReshape` (fx graph, in place).

    Examples
    --------
    >>> module = static_reshapes(onnx2torch.convert(proto))
    """
    from onnx2torch.node_converters.reshape import OnnxReshape

    graph = module.graph
    for node in list(graph.nodes):
        if node.op != "call_module" or len(node.args) != 2:
            continue
        if not isinstance(module.get_submodule(node.target), OnnxReshape):
            continue
        target = _constant(module, node.args[1])
        if target is None:
            continue
        module.set_submodule(node.target, StaticReshape(tuple(target.tolist())))
        node.args = (node.args[0],)
    graph.eliminate_dead_code()
    module.delete_all_unused_submodules()
    module.recompile()
    return module


def export_program(module: nn.Module, rows: np.ndarray) -> Any:
    """``torch.export`` of ``module`` with a dynamic batch axis, traced on ``rows`` [rows, *shape].

    Raises ExportError (with torch's first line) when it cannot be traced that way.

    Examples
    --------
    >>> torch.export.save(export_program(module, X[:16]), "model.pt2")
    """
    x = torch.as_tensor(np.asarray(rows))
    if x.is_floating_point():
        x = x.float()
    if len(x) < 2:  # export specialises dimensions of size 0 and 1
        x = torch.cat([x, x])
    try:
        return torch.export.export(module.eval(), (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    except Exception as exc:
        raise ExportError(
            f"torch.export cannot trace the converted module with a dynamic batch axis ({type(exc).__name__}: "
            f"{first_line(exc)})"
        ) from exc


def _every_value(model: Any, rows: np.ndarray) -> dict[str, Any]:
    """``{value name: array}`` for every top-level node output of ``model`` run on ``rows``."""
    import onnx

    from modelfusion.conversion.parity import run_onnx

    probe = copy.deepcopy(model)
    have = {o.name for o in probe.graph.output}
    names = [o for n in probe.graph.node for o in n.output if o and o not in have]
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    return dict(zip(names, run_onnx(probe, rows, names)))


def _fixed_target(small: Any, large: Any) -> np.ndarray | None:
    """The Reshape target for any batch, from its values at two batch sizes; None if it is not that simple."""
    if not isinstance(small, np.ndarray) or not isinstance(large, np.ndarray) or small.shape != large.shape:
        return None
    differs = np.flatnonzero(small != large)
    if len(differs) > 1 or (len(differs) == 1 and (small == -1).any()):
        return None
    target = small.astype(np.int64).copy()
    target[differs] = -1
    return target


def _constant(module: Any, node: Any) -> torch.Tensor | None:
    """The integer tensor an fx node always yields (a parameterless constant module or attribute), or None."""
    if not isinstance(node, torch.fx.Node) or node.args or node.kwargs:
        return None
    value: Any = None
    if node.op == "get_attr":
        value = _attr(module, str(node.target))
    elif node.op == "call_module":
        sub = module.get_submodule(node.target)
        if type(sub).__name__ == "OnnxConstant":
            value = sub()
    if isinstance(value, torch.Tensor) and not value.is_floating_point() and value.ndim == 1:
        return value
    return None


def _attr(module: Any, target: str) -> Any:
    obj = module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj
