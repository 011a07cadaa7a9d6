"""TensorRT engines from a fused bundle, an ONNX file, a ``torch.export`` archive or TorchScript.

Everything goes through ONNX first (the fused graph for a bundle), then TensorRT's ONNX
parser and builder. Without the ``tensorrt`` package or a CUDA GPU, :meth:`convert` raises
one :class:`TensorRTUnavailableError` saying what is missing and what to use instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modelfusion.bundle import cached_bundle_graph, read_manifest
from modelfusion.errors import ParameterError
from modelfusion.files import write_bytes_atomic
from modelfusion.fused import FusedModel
from modelfusion.manifest import inside
from modelfusion.members.base import sha256_file
from modelfusion.members.torch import TorchMember, archive_kind, load_exported, load_torchscript
from modelfusion.runtime.errors import ExportError, QuantizationError, TensorRTUnavailableError
from modelfusion.runtime.member_onnx import member_to_onnx
from modelfusion.runtime.onnx_export import DEFAULT_OPSET, build_fused_onnx

PRECISIONS = ("fp32", "fp16", "int8")
_QDQ = ("QuantizeLinear", "DequantizeLinear")


class TensorRTConverter:
    """Build a serialized TensorRT engine (``.engine``/``.plan``) with a dynamic batch axis.

    Parameters
    ----------
    model_path : a bundle folder, an ``.onnx`` file, a ``torch.export`` ``.pt2`` archive or a
        TorchScript ``.pt``/``.pth``/``.ts`` file (a state-dict ``.pth`` is refused: it has no
        network in it)
    output_path : where the engine is written (atomically)
    precision : ``"fp16"``, ``"fp32"`` or ``"int8"``; int8 needs a statically quantized (QDQ)
        graph, e.g. ``fused.int8.onnx`` from ``modelfusion quantize BUNDLE --mode static``
    input_shape : shape of one sample; needed for TorchScript, optional otherwise
    max_batch, opt_batch : the optimisation profile's largest and tuned-for batch sizes
    workspace_gb : TensorRT's builder workspace
    trust : load bundle members whose architecture is imported from ``module:factory``

    Examples
    --------
    >>> TensorRTConverter(model_path="runs/demo/results/bundle", output_path="fused.engine",
    ...                   precision="fp16").convert()
    PosixPath('fused.engine')
    """

    def __init__(
        self,
        model_path: str | Path,
        output_path: str | Path,
        precision: str = "fp16",
        *,
        input_shape: tuple[int, ...] | None = None,
        max_batch: int = 256,
        opt_batch: int = 32,
        workspace_gb: float = 2.0,
        trust: bool = False,
    ):
        self.model_path = Path(model_path)
        self.output_path = Path(output_path)
        self.precision = precision
        self.input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self.max_batch = int(max_batch)
        self.opt_batch = int(opt_batch)
        self.workspace_gb = float(workspace_gb)
        self.trust = trust

    def convert(self) -> Path:
        """Write the engine to ``output_path`` and return it.

        Raises
        ------
        FileNotFoundError, ExportError
            the input does not exist, is not a supported kind, is only a state dict, or
            TensorRT's parser rejects the graph (ONNX-ML operators of scikit-learn members).
        TensorRTUnavailableError
            ``tensorrt`` is not importable or there is no CUDA GPU.
        """
        if self.precision not in PRECISIONS:
            raise ParameterError(f"precision={self.precision!r} is not one of {', '.join(PRECISIONS)}")
        kind = self._input_kind()
        trt = require_tensorrt()
        onnx_bytes = self._onnx_bytes(kind)
        if self.precision == "int8" and not _has_qdq(onnx_bytes):
            raise QuantizationError(
                "an int8 TensorRT engine needs a statically quantized graph (QuantizeLinear/DequantizeLinear "
                "nodes): run `modelfusion quantize BUNDLE --mode static --data ...` and convert the bundle "
                "(it then uses fused.int8.onnx), or use precision='fp16'"
            )
        engine = self._build(trt, onnx_bytes)
        write_bytes_atomic(self.output_path, bytes(engine))
        return self.output_path

    # -- the input ------------------------------------------------------------------------
    def _input_kind(self) -> str:
        """'bundle', 'onnx', 'export' or 'torchscript'; clear errors for anything else."""

        path = self.model_path
        if not path.exists():
            raise FileNotFoundError(f"model_path '{path}' does not exist")
        if path.is_dir():
            if not (path / "manifest.json").is_file():
                raise ExportError(f"'{path}' is a folder but not a modelfusion bundle (no manifest.json)")
            return "bundle"
        if path.suffix == ".onnx":
            return "onnx"
        kind = archive_kind(path) if path.suffix in (".pt2", ".pt", ".pth", ".ts") else None
        if kind is not None:
            if kind == "torchscript" and self.input_shape is None:
                raise ExportError(
                    f"'{path}' is TorchScript, which does not record its input shape; pass input_shape= "
                    "(one sample, e.g. (1, 28, 28))"
                )
            return kind
        if path.suffix in (".pt", ".pth", ".bin", ".safetensors"):
            raise ExportError(
                f"'{path}' holds only weights (a state dict) or a pickled module, not a network TensorRT can "
                "read; load it with its architecture (load_member(path, architecture='package.module:factory'))"
                " and save a bundle, or save the network with torch.export (.pt2) or torch.jit.script"
            )
        raise ExportError(
            f"'{path}': TensorRTConverter takes a bundle folder, an .onnx file, a torch.export .pt2 or a "
            "TorchScript .pt/.pth/.ts file"
        )

    def _onnx_bytes(self, kind: str) -> bytes:
        if kind == "onnx":
            return self.model_path.read_bytes()
        if kind == "bundle":
            return self._bundle_graph()
        return self._torch_graph(kind)

    def _bundle_graph(self) -> bytes:
        if self.precision == "int8":
            manifest, _ = read_manifest(self.model_path)
            quantized = (manifest.get("metadata") or {}).get("runtime", {}).get("quantized", {})
            record = quantized.get("int8-static") or quantized.get("int8", {})  # "int8": bundles before 0.2
            rel = record.get("file") if isinstance(record, dict) else None
            if record.get("mode") == "static" and isinstance(rel, str):
                graph = inside(self.model_path, rel, "metadata.runtime.quantized.int8.file")
                if graph.is_file() and manifest["checksums"].get(rel) == sha256_file(graph):
                    return graph.read_bytes()
        cached = cached_bundle_graph(self.model_path)
        if cached is not None:
            return cached.read_bytes()
        model = FusedModel.load(self.model_path, trust=self.trust)
        example = None if self.input_shape is None else _random_rows(self.input_shape)
        return build_fused_onnx(model, example_input=example).SerializeToString()

    def _torch_graph(self, kind: str) -> bytes:
        module = (
            load_exported(self.model_path, trust=self.trust)
            if kind == "export"
            else load_torchscript(self.model_path, trust=self.trust)
        )
        if self.input_shape is not None:
            example = _random_rows(self.input_shape)
        else:
            recorded = getattr(module, "example_input_", None)
            if recorded is None:
                raise ExportError(f"'{self.model_path}' records no example input; pass input_shape=")
            example = recorded.detach().cpu().numpy()
        member = TorchMember(module, name=self.model_path.stem)
        return member_to_onnx(member, example, DEFAULT_OPSET).model.SerializeToString()

    # -- the build ------------------------------------------------------------------------
    def _build(self, trt: Any, onnx_bytes: bytes) -> Any:
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)  # implicit in TRT 10
        network = builder.create_network(0 if explicit is None else 1 << int(explicit))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_bytes):
            errors = "; ".join(str(parser.get_error(i)) for i in range(min(parser.num_errors, 3)))
            raise ExportError(
                f"TensorRT's ONNX parser rejected the graph ({errors}). scikit-learn members (ONNX-ML "
                "operators) have no TensorRT kernels: run the fused graph on ONNX Runtime with "
                "OnnxExecutor(path, providers=['tensorrt', 'cuda', 'cpu']) so those nodes fall back to CPU"
            )
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(self.workspace_gb * 2**30))
        if self.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif self.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            rest = tuple(int(d) for d in tuple(tensor.shape)[1:])
            if any(d < 0 for d in rest):
                raise ExportError(
                    f"input {tensor.name!r} has dynamic dimensions besides the batch: {tuple(tensor.shape)}"
                )
            opt = min(self.opt_batch, self.max_batch)
            profile.set_shape(tensor.name, (1, *rest), (opt, *rest), (self.max_batch, *rest))
        config.add_optimization_profile(profile)
        engine = builder.build_serialized_network(network, config)
        if engine is None:
            raise ExportError("TensorRT could not build an engine from the graph (see TensorRT's log above)")
        return engine


def require_tensorrt() -> Any:
    """The ``tensorrt`` module, or one TensorRTUnavailableError naming everything that is missing."""
    import torch

    missing = []
    try:
        import tensorrt as trt
    except ImportError:
        trt = None
        missing.append("the tensorrt Python package (pip install tensorrt)")
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU (torch.cuda.is_available() is False)")
    if missing:
        raise TensorRTUnavailableError(
            f"cannot build a TensorRT engine here: missing {' and '.join(missing)}. Without "
            f"{'it' if len(missing) == 1 else 'them'}, run the "
            "fused graph on ONNX Runtime: `modelfusion export BUNDLE --format onnx`, and make it smaller and "
            "faster with `modelfusion quantize BUNDLE --mode dynamic --data SRC`."
        )
    return trt


def _has_qdq(onnx_bytes: bytes) -> bool:
    import onnx

    return any(n.op_type in _QDQ for n in onnx.load_from_string(onnx_bytes).graph.node)


def _random_rows(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).random((8, *shape), dtype=np.float32)
