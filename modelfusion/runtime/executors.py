"""Executors that run a fused model: one ONNX graph on ONNX Runtime, eager torch, or members side by side.

Every executor has ``run(X, batch_size=...) -> scores [samples, outputs]`` and returns the
same fused scores; :func:`modelfusion.runtime.select_engine` picks one.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from modelfusion.members.onnx import onnxruntime_errors
from modelfusion.predictions import assemble_predictions, inputs_per_member, score_each
from modelfusion.runtime.errors import ExecutionProviderError
from modelfusion.runtime.session import open_session

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_PROVIDER_ALIASES = {
    "tensorrt": PREFERRED_PROVIDERS[0],
    "cuda": PREFERRED_PROVIDERS[1],
    "cpu": PREFERRED_PROVIDERS[2],
}


class Executor(Protocol):
    """What runs a fused model: ``run(X) -> fused scores [samples, outputs]``, named for reports.

    :class:`OnnxExecutor`, :class:`TorchExecutor` and :class:`MemberExecutor` implement it and
    return the same scores for the same model; :func:`modelfusion.runtime.select_engine` picks one.

    Examples
    --------
    >>> executor: Executor = select_engine(fused)
    >>> executor.name, executor.run(X_test).shape
    ('onnx', (450, 10))
    """

    name: str

    def run(self, X: Any, *, batch_size: int = 256) -> np.ndarray: ...


# Frameworks whose predict() is safe to call from several threads at once (and releases the GIL).
_THREAD_SAFE = ("torch", "onnx", "sklearn")


class OnnxExecutor:
    """A fused ONNX graph on an ONNX Runtime session.

    Parameters
    ----------
    model : path to a ``.onnx`` file, its bytes, or an ``onnx.ModelProto``
    providers : execution providers in order of preference (``"cuda"``, ``"cpu"``,
        ``"tensorrt"`` or ORT's full names). Default: those available among TensorRT, CUDA, CPU.
    threads : ONNX Runtime's intra-op threads (default: one per physical core). On small
        machines with hyper-threads, ``threads=1`` can be faster for graphs of many small
        operators; measure (``benchmarks/inference.py``).

    Raises
    ------
    ExecutionProviderError
        naming the providers asked for that this onnxruntime build lacks, and listing those it has.

    Examples
    --------
    >>> OnnxExecutor("bundle/fused.onnx", providers=["cpu"]).run(X_test).shape
    (450, 10)
    """

    name = "onnx"

    def __init__(
        self,
        model: str | Path | bytes | Any,
        providers: list[str] | None = None,
        *,
        threads: int | None = None,
        spinning: bool = True,
    ):
        self.providers_requested = resolve_providers(providers)
        self.source = model  # what the session was opened from (a server reopens it with its own threads)
        self.session = open_session(model, self.providers_requested, threads=threads, spinning=spinning)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.int64 if inp.type == "tensor(int64)" else np.float32
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = "scores" if "scores" in outputs else outputs[0]

    @property
    def providers(self) -> list[str]:
        """The providers the session actually uses."""
        return self.session.get_providers()

    def run(self, X: Any, *, batch_size: int | None = 256) -> np.ndarray:
        """Fused scores [samples, outputs] for inputs [samples, *shape], ``batch_size`` rows per call."""
        x = X.detach().cpu().numpy() if hasattr(X, "detach") else X
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        step = len(x) if not batch_size else int(batch_size)
        with onnxruntime_errors(f"the fused graph (input {self.input_name!r}, {self._expected()})"):
            if len(x) <= step:
                return self.session.run([self.output_name], {self.input_name: x})[0]
            parts = [
                self.session.run([self.output_name], {self.input_name: x[lo : lo + step]})[0]
                for lo in range(0, len(x), step)
            ]
        return np.concatenate(parts)

    def _expected(self) -> str:
        shape = self.session.get_inputs()[0].shape
        return "shape [" + ", ".join(str(d) if isinstance(d, int) else "n" for d in shape) + "]"


def resolve_providers(providers: list[str] | None) -> list[str]:
    """ORT provider names for ``providers`` (default: the available ones among TensorRT, CUDA, CPU)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if providers is None:
        return [p for p in PREFERRED_PROVIDERS if p in available] or available
    names = [_PROVIDER_ALIASES.get(str(p).lower(), p) for p in providers]
    missing = [p for p in names if p not in available]
    if missing:
        raise ExecutionProviderError(
            f"execution provider(s) {', '.join(missing)} not available in this onnxruntime build; available: "
            f"{', '.join(available)}. CUDA and TensorRT need the onnxruntime-gpu package and a GPU."
        )
    return names


class TorchExecutor:
    """The fused model as one ``nn.Module`` (:class:`~modelfusion.FusedModule`), eval mode, no autograd.

    Needs every member to be a torch module and the strategy to have a tensor form.

    Examples
    --------
    >>> TorchExecutor(fused, device="cuda").run(X_test).shape
    (450, 10)
    """

    name = "torch"

    def __init__(self, model: Any, device: str | None = None):
        import copy

        import torch

        module = model.to_torch() if hasattr(model, "to_torch") else model
        current = next((p.device for p in module.parameters()), torch.device("cpu"))
        self.device = torch.device(device) if device is not None else current
        if self.device != current:  # move a copy: the fused model's members stay where they are
            module = copy.deepcopy(module).to(self.device)
        self.module = module.eval()

    def run(self, X: Any, *, batch_size: int | None = 256) -> np.ndarray:
        """Fused scores [samples, outputs]."""
        import torch

        x = X if isinstance(X, torch.Tensor) else torch.as_tensor(np.asarray(X, dtype=np.float32))
        x = x.float() if x.is_floating_point() or x.dtype == torch.uint8 else x
        step = len(x) if not batch_size else int(batch_size)
        parts = []
        with torch.inference_mode():
            for lo in range(0, len(x), max(step, 1)):
                parts.append(self.module(x[lo : lo + step].to(self.device)).float().cpu().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


class MemberExecutor:
    """Runs the members concurrently in a thread pool, then combines with the strategy.

    ONNX Runtime, torch and scikit-learn's numeric kernels release the GIL, so members
    overlap. Results equal the serial ``FusedModel.member_predictions`` path exactly: each
    member sees the same batches, and the outputs go through the same prediction store.
    Members of other frameworks (Keras, Hugging Face) run one at a time unless
    ``max_workers`` is given.

    Examples
    --------
    >>> with MemberExecutor(fused, max_workers=4) as ex:
    ...     scores = ex.run(X_test)
    """

    name = "members"

    def __init__(self, model: Any, max_workers: int | None = None):
        self.model = model
        if max_workers is None:
            safe = all(getattr(m, "framework", None) in _THREAD_SAFE for m in model.members)
            max_workers = min(len(model.members), os.cpu_count() or 1) if safe else 1
        self.max_workers = max(1, int(max_workers))
        self.reason = ""  # why engine="auto" fell back to this executor, if it did
        self._pool: ThreadPoolExecutor | None = None

    def member_predictions(self, X: Any, *, batch_size: int = 256) -> Any:
        """Every member's outputs as a :class:`~modelfusion.PredictionSet` (same as the serial path)."""

        members = self.model.members
        jobs = [([m], x) for m, x in zip(members, inputs_per_member([m.name for m in members], X))]
        if self.max_workers == 1:
            done = [score_each(ms, x, batch_size=batch_size, progress=False) for ms, x in jobs]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="modelfusion-member")
            futures = [
                self._pool.submit(score_each, ms, x, batch_size=batch_size, progress=False) for ms, x in jobs
            ]
            done = [f.result() for f in futures]
        outputs = [out for (out,), _ in done]
        metadata = {name: meta for _, one in done for name, meta in one.items()}
        return assemble_predictions(members, outputs, metadata=metadata)

    def run(self, X: Any, *, batch_size: int = 256) -> np.ndarray:
        """Fused scores [samples, outputs]."""
        return self.model.strategy.combine(self.member_predictions(X, batch_size=batch_size))

    def close(self) -> None:
        """Stop the worker threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> MemberExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
