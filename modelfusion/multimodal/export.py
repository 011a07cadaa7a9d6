"""A feature-level fusion model as one ONNX graph with several inputs, and running that graph.

Each encoder's :meth:`~modelfusion.multimodal.encoders.Encoder.prepare` stays outside the graph
(tokenizing is string work); everything after it (every encoder's ``encode``, the fusion, the
head) is one graph whose inputs are named ``<modality>.<tensor>``: ``image.pixels``,
``text.input_ids``, ``text.attention_mask``... Batch size and token counts are dynamic.

Examples
--------
>>> export_multimodal_onnx(model, "fused.onnx", {"image": x[:4], "text": texts[:4]})
>>> MultimodalGraph("fused.onnx", model).predict_proba({"image": x, "text": texts}).shape
(500, 10)
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from modelfusion.errors import ExportError
from modelfusion.files import write_bytes_atomic

if TYPE_CHECKING:
    from modelfusion.multimodal.fusion import MultimodalFusion

DEFAULT_OPSET = 17
#: The graph input ``<modality>.present`` of a model with missing-modality embeddings.
PRESENT = "present"
#: Largest difference between the graph's and the eager model's logits an export accepts.
PARITY_TOLERANCE = 1e-4


class _Encoded(nn.Module):
    """The model after ``prepare``: flat named tensors in, logits out (what ONNX traces)."""

    def __init__(self, model: MultimodalFusion, names: list[tuple[str, str]]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        grouped: dict[str, dict[str, torch.Tensor]] = {}
        for (modality, key), tensor in zip(self.names, tensors):
            grouped.setdefault(modality, {})[key] = tensor
        present = {name: grouped[name].pop(PRESENT) for name in grouped if PRESENT in grouped[name]}
        encoders = self.model.encoders
        features = {name: cast(Any, encoders[name]).encode(**grouped[name]) for name in encoders}
        return self.model.fuse_features(features, present or None)


def prepared_inputs(model: MultimodalFusion, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """``{"<modality>.<tensor>": tensor}``: every encoder's ``prepare`` of ``batch``, in graph-input order."""
    missing = [n for n in model.encoders if n not in batch]
    if missing:
        raise ExportError(f"the model fuses {list(model.encoders)}; the batch has no {missing}")
    flat: dict[str, torch.Tensor] = {}
    for name, encoder in model.encoders.items():
        for key, tensor in cast(Any, encoder).prepare(batch[name]).items():
            if not isinstance(tensor, torch.Tensor):
                raise ExportError(
                    f"encoder {name!r}: prepare() gives {key!r} as {type(tensor).__name__}, not a tensor; "
                    "only tensor inputs can enter an ONNX graph"
                )
            flat[f"{name}.{key}"] = tensor
        if "missing" in model._modules:  # 1 where the modality is there, 0 where its stand-in is used
            rows = len(next(iter(flat.values())))
            given = (batch.get("present") or {}).get(name)
            flat[f"{name}.{PRESENT}"] = (
                torch.ones(rows) if given is None else torch.as_tensor(given).to(torch.float32).reshape(rows)
            )
    return flat


def export_multimodal_onnx(
    model: MultimodalFusion, path: str | Path, example: Mapping[str, Any], *, opset: int = DEFAULT_OPSET
) -> Path:
    """Export ``model`` (built with ``encoders=``) as one ONNX graph; checks it against eager.

    ``example`` is a raw batch of at least two rows. Raises ExportError when the model cannot
    be traced or the graph's logits differ from eager by more than :data:`PARITY_TOLERANCE`.
    """
    if "encoders" not in model._modules:
        raise ExportError(
            f"{type(model).__name__} was not built with MultimodalFusion(encoders=...); export a subclass "
            "with torch.onnx.export and its own forward's inputs"
        )
    inputs = prepared_inputs(model, example)
    names = [tuple(k.split(".", 1)) for k in inputs]
    graph = _Encoded(model, names).eval()  # type: ignore[arg-type]
    axes = {k: {0: "batch", **({1: f"{k}.length"} if _has_length(k, t) else {})} for k, t in inputs.items()}
    buffer = io.BytesIO()
    was = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                graph,
                tuple(inputs.values()),
                buffer,  # type: ignore[arg-type]  # a file object works; torch's hint names paths only
                dynamo=False,
                opset_version=opset,
                input_names=list(inputs),
                output_names=["logits"],
                dynamic_axes={**axes, "logits": {0: "batch"}},
            )
    except Exception as exc:
        raise ExportError(
            f"torch.onnx.export could not trace the fusion model ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r})"
        ) from exc
    finally:
        model.train(was)
    data = buffer.getvalue()
    _check_parity(model, data, example)
    return write_bytes_atomic(path, data)


def _has_length(key: str, tensor: torch.Tensor) -> bool:
    """Token inputs (ids, masks) vary in length from batch to batch; pixels and columns do not."""
    return tensor.dim() == 2 and (not tensor.is_floating_point() or key.endswith("mask"))


def _check_parity(model: MultimodalFusion, graph: bytes, example: Mapping[str, Any]) -> None:
    from modelfusion.runtime.session import open_session

    session = open_session(graph, ["CPUExecutionProvider"])
    got = _run(session, prepared_inputs(model, example))
    with torch.no_grad():
        want = model.eval()(example).numpy()
    gap = float(np.abs(got - want).max())
    if not gap <= PARITY_TOLERANCE:
        raise ExportError(
            f"the exported graph's logits differ from the eager model's by {gap:.2e} (tolerance "
            f"{PARITY_TOLERANCE:.0e}); the model has an operation ONNX does not reproduce"
        )


def _run(session: Any, inputs: Mapping[str, torch.Tensor]) -> np.ndarray:
    wanted = {i.name for i in session.get_inputs()}  # the exporter drops inputs the graph never reads
    feed = {k: v.numpy() for k, v in inputs.items() if k in wanted}
    return session.run(None, feed)[0]


class MultimodalGraph:
    """An exported fusion graph run by ONNX Runtime, fed by the model's own ``prepare`` steps.

    ``model`` supplies the tokenizers (its weights are not used); ``threads`` caps ONNX
    Runtime's threads (default 1: small graphs do not gain from spreading over a busy machine).

    Examples
    --------
    >>> graph = MultimodalGraph("model/fused.int8.onnx", MultimodalFusion.load("model"))
    >>> graph.predict_proba({"image": pixels, "text": ["add two", "minus one"]}).shape
    (2, 10)
    """

    def __init__(self, path: str | Path, model: MultimodalFusion, *, threads: int | None = 1):
        from modelfusion.runtime.session import open_session

        self.path, self.model = Path(path), model
        self.session = open_session(self.path, ["CPUExecutionProvider"], threads=threads)

    def logits(self, batch: Mapping[str, Any]) -> np.ndarray:
        """Raw batch ``{modality: values}`` -> logits float32 [batch, classes]."""
        return _run(self.session, prepared_inputs(self.model, batch))

    def predict_proba(self, batch: Mapping[str, Any]) -> np.ndarray:
        z = self.logits(batch)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)


__all__ = ["PARITY_TOLERANCE", "MultimodalGraph", "export_multimodal_onnx", "prepared_inputs"]
