"""Choosing how a fused model runs: ``engine="auto" | "onnx" | "torch" | "members"``, and the bundle's graph cache.

``FusedModel.predict`` calls :func:`fused_scores`. ``auto`` checks an exported graph against
the members on the first rows before trusting it, and falls back to the member executor
when the model does not export; a bundle's ``fused.onnx`` is used when its checksum holds,
and only ``modelfusion export`` / ``quantize`` / ``run`` write graphs into a bundle.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from modelfusion.bundle import cached_bundle_graph
from modelfusion.errors import ModelFusionError, ParameterError, StrategyError
from modelfusion.members.onnx import check_onnx_allocations
from modelfusion.runtime.errors import ExportError
from modelfusion.runtime.executors import Executor, MemberExecutor, OnnxExecutor, TorchExecutor
from modelfusion.runtime.member_graph import column_order, reference_classes
from modelfusion.runtime.module import FusedModule
from modelfusion.runtime.onnx_export import build_fused_onnx
from modelfusion.runtime.preprocess import PreprocessModule, member_preprocess_spec

ENGINES = ("auto", "onnx", "torch", "members")
AUTO_TOLERANCE = 1e-5


def select_engine(model: Any, preference: str = "auto", *, example_input: Any = None) -> Executor:
    """The executor to run ``model`` with.

    ``"auto"``: the fused ONNX graph when the model exports (a bundle's recorded
    ``fused.onnx`` when its checksum holds, else built in memory and cached on the model,
    never written into the bundle); else :class:`TorchExecutor` when every member is torch;
    else :class:`MemberExecutor`. All-torch models go to torch on CUDA first when there is a
    GPU that onnxruntime (a CPU build) cannot use. ``"onnx"``, ``"torch"`` and ``"members"`` force one and
    raise when it cannot run the model. ``example_input``: rows of the input, used for the
    export and, in ``auto``, to check the graph against the members before it is trusted.
    """
    if preference not in ENGINES:
        raise ParameterError(f"engine={preference!r} is not one of {', '.join(ENGINES)}")
    cache = model.__dict__.setdefault("_executors", {})
    if preference not in cache:
        if preference == "auto":
            cache["auto"] = _auto_executor(model, example_input)
        elif preference == "members":
            cache["members"] = MemberExecutor(model)
        elif preference == "torch":
            cache["torch"] = TorchExecutor(model)
        else:
            cache["onnx"] = _onnx_executor(model, example_input)
    return cache[preference]


def _auto_executor(model: Any, example_input: Any) -> Executor:
    import onnxruntime as ort
    import torch

    members = select_engine(model, "members")
    assert isinstance(members, MemberExecutor)
    candidates = [lambda: select_engine(model, "onnx", example_input=example_input)]
    if all(getattr(m, "framework", None) == "torch" for m in model.members):
        candidates.append(lambda: select_engine(model, "torch"))
        if torch.cuda.is_available() and "CUDAExecutionProvider" not in ort.get_available_providers():
            # A GPU that onnxruntime (a CPU build) cannot use, but torch can: try it first.
            candidates.insert(0, lambda: TorchExecutor(model, device="cuda"))
    reasons = []
    for build in candidates:
        try:
            executor = build()
            if example_input is not None:
                rows = example_input[:8]
                diff = float(np.abs(executor.run(rows) - members.run(rows)).max(initial=0.0))
                if not diff <= AUTO_TOLERANCE:
                    reasons.append(
                        f"{executor.name}: differs from the members by {diff:.3g} on the first rows"
                    )
                    continue
            return executor
        except (ModelFusionError, ValueError, TypeError, RuntimeError) as exc:
            reasons.append(str(exc))
    members.reason = "; ".join(reasons)
    return members


def _onnx_executor(model: Any, example_input: Any) -> OnnxExecutor:
    bundle = getattr(model, "bundle_dir", None)
    cached = None if bundle is None else cached_bundle_graph(bundle)
    if cached is not None:
        if not getattr(model, "trusted", True):  # a downloaded bundle's graph: same checks as its members'
            check_onnx_allocations(cached, owner=f"bundle {bundle}")
        return OnnxExecutor(cached)
    # Built in memory only: predicting never writes into a bundle (`modelfusion export` does).
    return OnnxExecutor(build_fused_onnx(model, example_input=example_input).SerializeToString())


def fused_scores(model: Any, X: Any, *, engine: str = "auto", batch_size: int = 256) -> np.ndarray:
    """Fused scores of ``model`` on ``X`` with the chosen engine (see :func:`select_engine`)."""
    if engine == "auto" and not _array_input(X):  # dicts, strings, records: only members understand them
        return select_engine(model, "members").run(X, batch_size=batch_size)
    executor = select_engine(model, engine, example_input=X if _array_input(X) else None)
    if engine != "auto" or executor.name == "members":
        return executor.run(X, batch_size=batch_size)
    try:
        return executor.run(X, batch_size=batch_size)
    except Exception:  # e.g. an input shape the cached graph was not exported for
        return select_engine(model, "members").run(X, batch_size=batch_size)


def labels_from_scores(scores: np.ndarray, task: str, classes: np.ndarray | None) -> np.ndarray:
    """Hard predictions from fused scores, as ``Strategy.predict`` makes them."""
    if task == "regression":
        return scores[:, 0] if scores.shape[1] == 1 else scores
    if task == "multilabel":
        return (scores >= 0.5).astype(np.int64)
    idx = scores.argmax(axis=1)
    return idx if classes is None else np.asarray(classes)[idx]


def _array_input(X: Any) -> bool:
    if hasattr(X, "detach") and hasattr(X, "shape"):
        return X.ndim >= 2
    return isinstance(X, np.ndarray) and X.ndim >= 2 and X.dtype.kind in "fiub"


def build_fused_module(model: Any) -> Any:
    """``FusedModel.to_torch()``: members with their preprocessing, columns aligned, then the rule."""
    not_torch = [m.name for m in model.members if not isinstance(m, nn.Module)]
    if not_torch:
        raise StrategyError(
            f"members {not_torch} are not torch modules; export the whole ensemble to ONNX instead "
            "(FusedModel.export_onnx)"
        )
    try:
        preprocess = [PreprocessModule(member_preprocess_spec(m), m.name) for m in model.members]
    except ExportError as exc:
        raise StrategyError(str(exc)) from exc
    ref = reference_classes(model.members)
    columns = [column_order(m, None, ref) for m in model.members]
    return FusedModule(model.members, model.strategy.to_torch(), preprocess=preprocess, columns=columns)
