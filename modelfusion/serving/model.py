"""A fused bundle loaded for serving: verified, warmed up on its fastest engine, described.

Loading verifies the whole bundle first (manifest digest and every file's checksum, see
:func:`~modelfusion.bundle.load_bundle`), so a damaged bundle stops the server before it
listens. :meth:`ServedModel.warm_up` picks the engine once (the fused ONNX graph where the
bundle has one, checked against the members) and runs it, after which ``/health`` reports ready.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modelfusion.serving.payload import InputSchema, finite_or_none


class ServedModel:
    """A bundle behind ``__call__(rows) -> scores``, with its input schema and metadata.

    Parameters
    ----------
    bundle : a bundle folder (``modelfusion run`` / ``FusedModel.save``)
    trust : allow what only a trusted bundle may run (as ``FusedModel.load``)
    engine : ``"auto"`` (fastest that matches the members), ``"onnx"``, ``"torch"`` or ``"members"``
    allow_nan : let NaN / null values reach the model (members that handle missing values)
    expected_digest : refuse a bundle whose manifest sha256 differs
    threads : ONNX Runtime intra-op threads (default one per core; idle threads never spin)

    Examples
    --------
    >>> served = ServedModel("runs/demo/results/bundle").warm_up()
    >>> served.engine, served.schema.shape
    ('onnx', (64,))
    >>> served(np.zeros((2, 64), np.float32)).shape
    (2, 10)
    """

    def __init__(
        self,
        bundle: str | Path,
        *,
        trust: bool = False,
        engine: str = "auto",
        allow_nan: bool = False,
        expected_digest: str | None = None,
        threads: int | None = None,
    ):
        from modelfusion.fused import FusedModel
        from modelfusion.manifest import manifest_digest

        self.path = Path(bundle)
        self.model = FusedModel.load(self.path, trust=trust, expected_digest=expected_digest)
        self.digest = manifest_digest(self.path)
        inputs = self.model.metadata.get("inputs") or {}
        names = inputs.get("feature_names")
        self.schema = InputSchema(
            shape=tuple(int(d) for d in inputs["shape"]) if inputs.get("shape") else None,
            feature_names=tuple(names) if names else None,
            takes_text=bool(self.model.members)
            and all(getattr(m, "tokenizer", None) is not None for m in self.model.members),
            allow_nan=allow_nan,
        )
        self.preference, self.threads = engine, threads
        self.engine = "members" if self.schema.takes_text else engine
        self._executor: Any = None
        self.ready = False

    def warm_up(self) -> ServedModel:
        """Choose the engine on zeros of the recorded shape and run it once; returns self."""
        from modelfusion.runtime.engine import select_engine
        from modelfusion.runtime.executors import OnnxExecutor

        if self.schema.shape is not None and not self.schema.takes_text:
            example = np.zeros((2, *self.schema.shape), dtype=np.float32)
            executor = select_engine(self.model, self.preference, example_input=example)
            if isinstance(executor, OnnxExecutor):  # the event loop needs a core between calls
                executor = OnnxExecutor(executor.source, threads=self.threads, spinning=False)
            self._executor = executor
            self._executor.run(example)
            self.engine = self._executor.name
        self.ready = True
        return self

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """Fused scores [n, outputs] of checked rows (float32 [n, *shape], or strings [n])."""
        if self._executor is not None:
            return self._executor.run(rows, batch_size=max(len(rows), 1))
        batch: Any = list(rows) if rows.dtype == object else rows
        return self.model.predict_scores(batch, batch_size=max(len(rows), 1), engine=self.engine)

    def answer(self, scores: np.ndarray, *, proba: bool) -> dict[str, Any]:
        """The JSON body for ``scores``: ``predictions`` and, with ``proba``, ``probabilities``."""
        from modelfusion.runtime.engine import labels_from_scores

        labels = labels_from_scores(scores, self.model.task, self.model.classes)
        body: dict[str, Any] = {"predictions": finite_or_none(np.asarray(labels).tolist())}
        if proba and self.model.task != "regression":
            body["probabilities"] = (
                scores.tolist() if np.isfinite(scores).all() else finite_or_none(scores.tolist())
            )
        return body

    def metadata(self) -> dict[str, Any]:
        """What ``GET /metadata`` shows: members, classes, strategy, input schema, versions, checksum."""
        from modelfusion.bundle import read_manifest
        from modelfusion.version import __version__

        manifest, _ = read_manifest(self.path)
        classes = self.model.classes
        return {
            "bundle": str(self.path),
            "sha256": self.digest,
            "task": self.model.task,
            "classes": None if classes is None else np.asarray(classes).tolist(),
            "strategy": type(self.model.strategy).__name__,
            "members": [
                {"name": m.name, "framework": getattr(m, "framework", None), "output_kind": m.output_kind}
                for m in self.model.members
            ],
            "input": self.schema.describe(),
            "engine": self.engine,
            "versions": {"modelfusion": __version__, **(manifest.get("versions") or {})},
        }


__all__ = ["ServedModel"]
