"""Where a fused graph's bytes and time go, member by member.

The fused graph prefixes every member's nodes with ``m<i>_`` (see
:mod:`modelfusion.runtime.onnx_export`) and records the members' names in its metadata, so
each initializer and each tree-ensemble attribute can be charged to the member that reads
it, and ONNX Runtime's profiler can charge each kernel's time. ONNX Runtime renames the
nodes it fuses or inserts (layout transposes, NCHWc reorders, precision casts): those are
charged by the tensors they read and write; the few it leaves unnamed (inlined functions)
go to ``"fusion"``. What belongs to no member (stacking the members' outputs, the
strategy's rule) is ``"fusion"``.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from modelfusion.runtime.session import read_settings, session_options

FUSION = "fusion"
_MEMBER = re.compile(r"(?:^|[^A-Za-z0-9])m(\d+)_")


def graph_breakdown(graph: str | Path, X: Any = None, *, runs: int = 10) -> list[dict[str, Any]]:
    """Bytes and kernel time of each member of a fused ONNX graph, largest first.

    Parameters
    ----------
    graph : a fused ``.onnx`` file (``FusedModel.export_onnx``, ``fused.int8.onnx``, ...)
    X : a batch of inputs [samples, *input shape]; without it no time is measured
    runs : calls timed (after one warm-up call); each member's time is its median over them

    Returns
    -------
    One row per member, and one for the fusion rule (``"fusion"``, or ``"fusion (rule)"``
    when a member has that name): ``member``, ``bytes`` (its initializers and node
    attributes, the serialized size it adds to the file), ``bytes_share``, and with ``X``:
    ``ms`` (its kernels' time per call on ONNX Runtime CPU, median over the calls, with the
    graph's recorded session settings) and ``time_share``.

    Examples
    --------
    >>> rows = graph_breakdown("bundle/fused.onnx", X_test[:256])
    >>> [(r["member"], r["bytes"] // 1024) for r in rows][:2]
    [('knn', 451), ('boosting', 113)]
    """
    import onnx

    path = Path(graph)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; export the fused graph first (FusedModel.export_onnx)"
        )
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    names = [str(n) for n in json.loads(props.get("modelfusion.members", "[]"))]
    owner = _owner(len(names))

    size: dict[int | None, int] = defaultdict(int)
    readers: dict[str, int | None] = {}
    for node in model.graph.node:
        size[owner(node.name)] += sum(a.ByteSize() for a in node.attribute)
        for name in node.input:
            readers.setdefault(name, owner(node.name))
    for init in model.graph.initializer:
        size[readers.get(init.name)] += init.ByteSize()
    original = {node.name for node in model.graph.node}
    busy = _kernel_times(path, X, owner, original, runs) if X is not None else {}

    rule = FUSION if FUSION not in names else f"{FUSION} (rule)"  # a member may be called "fusion"
    total_bytes, total_ms = sum(size.values()) or 1, sum(busy.values()) or 1.0
    rows = []
    for key in [*range(len(names)), None]:
        if key not in size and key not in busy:
            continue
        row: dict[str, Any] = {
            "member": rule if key is None else names[key],
            "bytes": size.get(key, 0),
            "bytes_share": size.get(key, 0) / total_bytes,
        }
        if busy:
            row["ms"] = busy.get(key, 0.0)
            row["time_share"] = busy.get(key, 0.0) / total_ms
        rows.append(row)
    return sorted(rows, key=lambda r: -r["bytes"])


def _owner(n_members: int) -> Any:
    def owner(*tensors: str) -> int | None:
        """The index ``i`` of the first ``m<i>_`` prefix among ``tensors``; None for the fusion rule."""
        for tensor in tensors:
            found = _MEMBER.search(tensor)  # ORT may prefix it: "InsertedPrecisionFreeCast_m3_..."
            if found and int(found.group(1)) < n_members:
                return int(found.group(1))
        return None

    return owner


def _kernel_times(path: Path, X: Any, owner: Any, original: set[str], runs: int) -> dict[int | None, float]:
    """Milliseconds per call of each member's kernels (median over calls), from ONNX Runtime's profiler."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="modelfusion-profile-") as tmp:
        options, disabled = session_options(read_settings(path))
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3  # the "optimized model is hardware specific" notice
        session = ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled or None
        )
        optimized = onnx.load(options.optimized_model_filepath, load_external_data=False)
        # Nodes of the exported graph are charged by their name, as their bytes are; nodes ONNX
        # Runtime fused or inserted by the tensors they touch. Unnamed nodes (inlined functions)
        # cannot be told apart in the profile and go to the rule.
        charged = {
            n.name: owner(n.name) if n.name in original else owner(n.name, *n.output, *n.input)
            for n in optimized.graph.node
            if n.name
        }
        first = session.get_inputs()[0]
        dtype = np.int64 if first.type == "tensor(int64)" else np.float32
        feed = {first.name: np.ascontiguousarray(np.asarray(X), dtype=dtype)}
        for _ in range(max(runs, 1) + 1):  # the first call warms up and is left out below
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    calls = sorted(
        (e["ts"], e["ts"] + e["dur"])
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    per_call: list[dict[int | None, float]] = [defaultdict(float) for _ in calls]
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        node = event["name"].removesuffix("_kernel_time")
        call = next((i for i, (lo, hi) in enumerate(calls) if lo <= event["ts"] <= hi), None)
        if call is not None:  # a node run several times in a call (a Loop body) adds up
            per_call[call][charged.get(node, owner(node))] += event["dur"] / 1000.0
    timed = per_call[1:] or per_call
    keys = {key for call in timed for key in call}
    return {key: float(np.median([call.get(key, 0.0) for call in timed])) for key in keys}
