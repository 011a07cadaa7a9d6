"""One member as an ONNX graph: torch (TorchScript exporter), ONNX files, scikit-learn (skl2onnx), Keras.

Each converter returns a :class:`MemberGraph`: a model with one input (the member's own,
already preprocessed input) and one output (its raw scores, of the member's ``output_kind``).
:mod:`modelfusion.runtime.onnx_export` wires these into the fused graph.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelfusion.dependencies import require
from modelfusion.members.torch import eval_mode
from modelfusion.runtime.errors import ExportError, ExportWarning
from modelfusion.runtime.trees import compact_tree_ensembles


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
    """Convert ``member`` given an example of its (preprocessed) input [batch, ...]; ExportError if it cannot."""
    framework = getattr(member, "framework", type(member).__name__)
    converters = {"torch": _torch, "onnx": _onnx, "sklearn": _sklearn, "keras": _keras}
    if framework not in converters:
        raise ExportError(
            f"member {member.name!r} ({framework}) has no ONNX converter here; Hugging Face members are run by "
            "the member executor (engine='members'), or export them with optimum and load the .onnx file "
            "as an ONNX member"
        )
    return converters[framework](member, example, opset)


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


# -- torch ------------------------------------------------------------------------------------


def _torch(member: Any, example: np.ndarray, opset: int) -> MemberGraph:
    import torch

    x = torch.as_tensor(_at_least_two(example))
    if x.is_floating_point() or x.dtype == torch.uint8:  # as TorchMember.predict casts batches
        dtype = next((p.dtype for p in member.parameters() if p.is_floating_point()), torch.float32)
        x = x.to(dtype)
    else:
        x = x.long()
    x = x.to(member.device)
    buffer = io.BytesIO()
    try:
        # The TorchScript exporter needs no onnxscript; its deprecation notice is not the user's concern.
        # PRESERVE because torch.export modules refuse eval(); eval_mode has set eval mode already.
        with warnings.catch_warnings(), eval_mode(member), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message="It is recommended that constant folding be turned off")
            warnings.filterwarnings("ignore", message="no signature found for <torch.ScriptMethod")
            # Shape asserts of torch.export modules trace as constants; the batch-size check in
            # onnx_export catches a graph that really depends on them.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                _exportable(member),
                (x,),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                training=torch.onnx.TrainingMode.PRESERVE,
            )
    except Exception as exc:
        raise ExportError(
            f"member {member.name!r}: torch.onnx.export could not trace it ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r})"
        ) from exc
    import onnx

    proto = onnx.load_from_string(buffer.getvalue())
    del proto.graph.output[1:]  # a TorchScript module returning a tuple: the member's scores come first
    return MemberGraph(proto)


def _exportable(member: Any) -> Any:
    """What torch.onnx.export is given: the ScriptModule itself for TorchScript members.

    A ScriptModule cannot be traced from inside an eager wrapper (the tracer sees it as an
    unregistered module), but the exporter takes it directly and converts its graph.
    """
    import torch

    module = getattr(member, "module", None)
    return module if isinstance(module, torch.jit.ScriptModule) else member


# -- ONNX files -------------------------------------------------------------------------------


def _onnx(member: Any, example: np.ndarray, opset: int) -> MemberGraph:
    proto = member._proto(load_weights=True)
    if proto is None:
        raise ExportError(
            f"member {member.name!r} wraps an InferenceSession whose model bytes are unknown; load it from the "
            ".onnx file so it can be merged"
        )
    return onnx_member_graph(proto, member.output_name, member.name, opset)


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


# -- scikit-learn -----------------------------------------------------------------------------


def _sklearn(member: Any, example: np.ndarray, opset: int) -> MemberGraph:
    import onnxruntime as ort

    to_onnx = require("skl2onnx", purpose=f"member {member.name!r}: converting scikit-learn members").to_onnx
    X = np.asarray(example)
    if X.ndim != 2:
        raise ExportError(
            f"member {member.name!r}: scikit-learn members take [samples, features] input, got samples "
            f"shaped {list(X.shape[1:])}; add preprocess 'flatten'"
        )
    # SklearnMember scores float batches in float64 (GaussianNB's log-likelihoods lose ~1e-3 in
    # float32), so the graph does too; float32 where a converter or kernel has no double form.
    dtypes = (np.float64, np.float32) if X.dtype.kind in "fb" or X.dtype == np.uint8 else (np.int64,)
    final = member.estimator
    while hasattr(final, "steps"):  # options go to the pipeline's last step
        final = final.steps[-1][1]
    options: dict[str, Any] = {}
    if type(final).__name__.startswith("KNeighbors"):
        options["optim"] = "cdist"  # ORT's CDist kernel: ~15x faster than the default Scan loop
    if member.task != "regression":
        options["zipmap"] = False
        if member.method == "decision_function":
            options["raw_scores"] = True
        elif member.method != "predict_proba":
            raise ExportError(
                f"member {member.name!r} scores with {member.method}() (one-hot labels), which has no "
                "probability output in ONNX; use an estimator with predict_proba or decision_function"
            )
    failure: Exception | None = None
    for dtype in dtypes:
        try:
            with _int_attributes():
                proto = to_onnx(
                    member.estimator, X[:1].astype(dtype), options={id(final): options}, target_opset=opset
                )
            ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
            break
        except Exception as exc:
            failure = exc
    else:
        raise ExportError(
            f"member {member.name!r}: skl2onnx cannot convert {type(member.estimator).__name__} "
            f"({type(failure).__name__}: {_first_line(failure)})"
        ) from failure
    compact_tree_ensembles(proto)
    outputs = [o.name for o in proto.graph.output]
    # Classifiers emit (label, probabilities or raw scores); regressors emit (variable,).
    chosen = outputs[0] if member.task == "regression" else outputs[-1]
    return onnx_member_graph(proto, chosen, member.name, opset)


@contextlib.contextmanager
def _int_attributes() -> Iterator[None]:
    """skl2onnx 1.20 passes numpy bools/uint32 in integer attributes, which protobuf 5+ rejects.

    Seen converting HistGradientBoostingClassifier (``nodes_missing_value_tracks_true``);
    the values are cast to int while skl2onnx builds nodes.
    """
    import skl2onnx.common._container as container

    original = container.make_node

    def fix(value: Any) -> Any:
        if isinstance(value, (list, tuple)) and any(
            isinstance(v, (bool, np.bool_, np.integer)) for v in value
        ):
            return [int(v) if isinstance(v, (bool, np.bool_, np.integer)) else v for v in value]
        return int(value) if isinstance(value, np.bool_) else value

    def make_node(*args: Any, **attrs: Any) -> Any:
        return original(*args, **{k: fix(v) for k, v in attrs.items()})

    container.make_node = make_node
    try:
        yield
    finally:
        container.make_node = original


# -- Keras ------------------------------------------------------------------------------------


def _keras(member: Any, example: np.ndarray, opset: int) -> MemberGraph:
    import onnx

    member.model.predict_on_batch(np.asarray(example, np.float32))  # keras exports called models only
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                member.model.export(str(path), format="onnx")
            proto = onnx.load(str(path))
        except Exception as exc:
            raise ExportError(
                f"member {member.name!r} (keras): model.export(format='onnx') failed ({type(exc).__name__}: "
                f"{exc}); on the TensorFlow backend this needs tf2onnx (pip install tf2onnx)"
            ) from exc
    output = proto.graph.output[0].name
    return onnx_member_graph(proto, output, member.name, opset)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else repr(exc)


def _at_least_two(x: np.ndarray) -> np.ndarray:
    """Tracing specialises dimensions of size 1; an example batch of two keeps the batch axis general."""
    x = np.asarray(x)
    return np.concatenate([x, x]) if len(x) < 2 else x[:2]
