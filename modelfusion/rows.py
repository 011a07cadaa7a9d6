"""The typed rows a run produces: one per member, per strategy, per exported graph.

The stages of ``modelfusion run`` return these; the CLI tables, the report and
``metrics.json`` all read them (through :mod:`modelfusion.columns` for the text of each
cell). A row is also a read-only mapping of its flat record (``row["accuracy"]``,
``dict(row)``), which is what JSON and the report's tables take.

Examples
--------
>>> row = MemberRow("knn", "sklearn", {"accuracy": 0.9666, "nll": 0.2604}, latency_ms=0.054)
>>> row.metrics["accuracy"], row["accuracy"], dict(row)["framework"]
(0.9666, 0.9666, 'sklearn')
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any


class _Record(Mapping[str, Any]):
    """A dataclass row read as one flat mapping: its fields, with ``metrics`` spread out (None fields left out)."""

    metrics: dict[str, float]

    def record(self) -> dict[str, Any]:
        """The flat record of this row, as the report and ``metrics.json`` store it."""
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name == "metrics":
                out.update(value)
            elif f.name == "extra":
                out.update({k: v for k, v in value.items() if k not in out})
            elif value is not None:
                out[f.name] = value
        return out

    def __getitem__(self, key: str) -> Any:
        return self.record()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.record())

    def __len__(self) -> int:
        return len(self.record())


@dataclass(eq=False)
class MemberRow(_Record):
    """One member on the test split: its metrics, cost, and (after the search) its validation CV score."""

    name: str
    framework: str | None
    metrics: dict[str, float]
    latency_ms: float | None = None
    n_parameters: int | None = None
    file_size: int | None = None
    cv_mean: float | None = None
    cv_std: float | None = None
    kind: str = "member"


@dataclass(eq=False)
class StrategyRow(_Record):
    """One fusion strategy (or the best member shipped alone) fitted on validation, scored on test.

    ``engine`` names what ``latency_ms`` was measured on when it is not the eager path
    (``"onnx"``: the bundle's fused graph).
    """

    name: str
    cv_mean: float | None
    cv_std: float | None
    metrics: dict[str, float]
    latency_ms: float | None = None
    n_members_used: int | None = None
    kind: str = "strategy"
    engine: str | None = None


@dataclass(eq=False)
class DeploymentRow(_Record):
    """One exported graph measured on test (see :func:`~modelfusion.runtime.deployment.iter_deployment`)."""

    name: str
    file: str
    file_size: int
    metrics: dict[str, float]
    latency_ms: float | None = None
    size_ratio: float = 1.0
    speedup: float = 1.0
    delta_pp: float | None = None
    delta_pp_validation: float | None = None
    #: each member's bytes and kernel time in this graph, and what went wrong measuring it
    breakdown: list[dict[str, Any]] | None = None
    breakdown_error: str | None = None
    #: any other measurement the deployment step reported
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> DeploymentRow:
        """A row from the dict :func:`~modelfusion.runtime.deployment.iter_deployment` yields."""
        known = {f.name for f in fields(cls)} - {"metrics", "extra"}
        metric_keys = ("accuracy", "nll", "ece", "brier", "macro_f1", "top5", "rmse", "mae", "r2")
        return cls(
            **{k: v for k, v in record.items() if k in known},
            metrics={k: record[k] for k in metric_keys if k in record},
            extra={k: v for k, v in record.items() if k not in known and k not in metric_keys},
        )


@dataclass(eq=False)
class VariantRow(_Record):
    """One model of the distillation table (best member, ensemble, students) on the test split.

    Latencies are per sample at batch 1 and 256 on ``engine``, the fastest of the engines tried
    at batch 256; ``pareto`` marks a row no other row beats on both accuracy and batch-256 latency.
    """

    name: str
    metrics: dict[str, float]
    latency_b1_ms: float | None = None
    latency_b256_ms: float | None = None
    engine: str | None = None
    n_parameters: int | None = None
    file_size: int | None = None
    kind: str = "student"
    pareto: bool | None = None
