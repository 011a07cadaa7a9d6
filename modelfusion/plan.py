"""What a run will do, worked out before it does anything expensive: :func:`plan_run` -> :class:`RunPlan`.

A validated config says *what* to do; the plan resolves it: every path, every data source
(format, options, builtin name, factory import), every member (framework, preprocessing,
architecture factory), every strategy built with its params, the metric, the deploy steps
and the output folder. Every problem is collected and raised at once as a
:class:`~modelfusion.errors.ConfigError` naming its YAML path, so a config error never
surfaces after minutes of scoring. ``modelfusion run --dry-run CONFIG`` prints the plan.

Examples
--------
>>> plan = plan_run(load_config("configs/fusion.yaml"))
>>> print("\\n".join(plan.describe()))
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelfusion.config import DataSourceConfig, MemberConfig, RunConfig
from modelfusion.data.datasets import SourcePlan, plan_source
from modelfusion.data.preprocessing import build_preprocessor
from modelfusion.errors import ConfigError, ModelFusionError
from modelfusion.evaluation.metrics import get_metric
from modelfusion.importpath import importable_from, is_import_path
from modelfusion.members.loading import framework_for_path, normalize_framework
from modelfusion.members.torch import import_factory
from modelfusion.runtime.deployment import deployment_steps
from modelfusion.strategies import get_strategy


@dataclass(frozen=True)
class DataStep:
    """One data source of the run: where it is in the config, and what :func:`plan_source` found."""

    where: str
    config: DataSourceConfig
    source: SourcePlan


@dataclass(frozen=True)
class MemberStep:
    """One member to load: its config entry, resolved source, framework and built preprocessing."""

    index: int
    config: MemberConfig
    #: the resolved file or folder, or the hub id as written
    source: str
    framework: str | None
    preprocess: Callable[[Any], Any] | None
    options: dict[str, Any]
    #: the member's name: ``name:`` in the config, else what ``load_member`` will call it
    name: str = ""

    @property
    def label(self) -> str:
        """How messages name this member: ``members[2] (cnn)``."""
        return f"members[{self.index}] ({self.config.name or self.config.path})"


@dataclass
class RunPlan:
    """Everything a run needs, checked: built by :func:`plan_run`, carried out by ``run_fusion``.

    Examples
    --------
    >>> plan = plan_run(config)
    >>> [m.framework for m in plan.members]
    ['torch', 'onnx', 'sklearn']
    """

    config: RunConfig
    output_dir: Path
    cache_dir: Path | None
    data: list[DataStep]
    members: list[MemberStep]
    #: the strategies to search, built with their params; ``"auto"`` for the built-in set
    strategies: list[Any] | str
    metric: str
    deploy_steps: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        """The plan as lines of text (what ``run --dry-run`` prints)."""
        c = self.config
        lines = [f"plan for {c.name!r}" + (f" ({c.config_file})" if c.config_file else "")]
        for step in self.data:
            where = f" -> {step.source.path}" if step.source.path is not None else ""
            lines.append(f"  {step.where}: {step.source.text} [{step.source.format}]{where}")
        if c.data.source is not None:
            s = c.data.split
            lines.append(
                f"  split: validation {s.validation:g}, test {s.test:g}, seed {c.seed if s.seed is None else s.seed}"
            )
        for m in self.members:
            lines.append(
                f"  members[{m.index}] {m.name}: {m.framework or 'inferred'} from {m.source}"
                + (" (trusted)" if m.config.trust else "")
                + (" + preprocess" if m.preprocess is not None else "")
            )
        names = "auto" if self.strategies == "auto" else ", ".join(type(s).__name__ for s in self.strategies)
        lines.append(
            f"  strategies: {names}; {c.fusion.cv}-fold CV on validation by {self.metric}; fallback {c.fusion.fallback}"
        )
        lines.append(f"  deploy: {', '.join(self.deploy_steps) if self.deploy_steps else 'nothing'}")
        lines.append(f"  report: {'yes' if c.report.enabled else 'no'}; cache: {self.cache_dir or 'off'}")
        lines.append(f"  output: {self.output_dir}")
        return lines


def plan_run(config: RunConfig) -> RunPlan:
    """Resolve and check everything ``config`` asks for, without loading data or models.

    Imports data and architecture factories (they are the user's code, named in the config)
    but calls none; builds every strategy and each member's preprocessing. Raises one
    :class:`ConfigError` listing every problem with its YAML path.
    """
    problems: list[str] = []
    output_dir = config.resolve(config.output_dir)
    assert output_dir is not None
    data = _plan_data(config, problems)
    members = _plan_members(config, problems)
    strategies = _plan_strategies(config, problems)
    metric = _plan_metric(config, problems)

    deploy = deployment_steps(config.deploy.quantize, config.deploy.fp16) if config.deploy.wanted else []
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        source = config.config_file or "config"
        raise ConfigError(f"{source} has {len(problems)} problem(s):\n{lines}", problems)
    cache = config.resolve(config.cache_dir) if config.cache_dir else None
    return RunPlan(config, output_dir, cache, data, members, strategies, metric, deploy)


@contextlib.contextmanager
def _problem(problems: list[str], where: str) -> Iterator[None]:
    """Record a ModelFusionError raised inside the block as ``where: message``."""
    try:
        yield
    except ModelFusionError as exc:
        problems.append(f"{where}: {exc}")


def _plan_data(config: RunConfig, problems: list[str]) -> list[DataStep]:
    d = config.data
    sections = (
        [("data", d.as_source())]
        if d.source is not None
        else [("data.validation", d.validation), ("data.test", d.test)]
    )
    steps = []
    for where, section in sections:
        assert section is not None
        with _problem(problems, where):
            found = plan_source(
                section.source,
                format=section.format,
                label=section.label,
                base_dir=config.base_dir,
                options=section.options,
            )
            steps.append(DataStep(where, section, found))
    return steps


def _plan_members(config: RunConfig, problems: list[str]) -> list[MemberStep]:
    steps: list[MemberStep] = []
    names: dict[str, int] = {}
    for i, m in enumerate(config.members):
        where = f"members[{i}]"
        local = config.resolve(m.path)
        found = local if local is not None and local.exists() else None
        source = str(found) if found is not None else m.path
        framework = preprocess = None
        with _problem(problems, f"{where}.framework"):
            framework = normalize_framework(m.framework) or (framework_for_path(found) if found else None)
        with _problem(problems, f"{where}.preprocess"):
            preprocess = build_preprocessor(m.preprocess, base_dir=config.base_dir) if m.preprocess else None
        options = dict(m.options)
        if config.task is not None:  # the run's task is every member's unless the member says otherwise
            options.setdefault("task", config.task)
        if "architecture" in options:
            with _problem(problems, f"{where}.options.architecture"), importable_from(config.base_dir):
                _check_architecture(options["architecture"])
        name = m.name or _default_name(m.path, found)
        if name in names:
            problems.append(
                f"{where}.name: {name!r} is also the name of members[{names[name]}]; give each member its own name"
            )
        names.setdefault(name, i)
        steps.append(MemberStep(i, m, source, framework, preprocess, options, name))
    return steps


def _default_name(path: str, local: Path | None) -> str:
    """The name ``load_member`` gives a member loaded from ``path`` without ``name:``."""
    if local is not None:
        return local.name if local.is_dir() else local.stem
    if is_import_path(path):
        return path.rpartition(":")[2].rpartition(".")[2].lower()
    return path.rstrip("/").split("/")[-1]  # a hub id


def _check_architecture(architecture: Any) -> None:
    """Whether an architecture factory named in the config imports (the config is the user's own: no
    allow-list, unlike a bundle's, see :func:`~modelfusion.members.architectures.check_architecture`)."""

    if isinstance(architecture, str) and is_import_path(architecture, allow_file=False):
        import_factory(architecture)


def _plan_strategies(config: RunConfig, problems: list[str]) -> list[Any] | str:
    if config.fusion.strategies == "auto":
        return "auto"
    built = []
    for i, s in enumerate(config.fusion.strategies):
        with _problem(problems, f"fusion.strategies[{i}]"):
            built.append(get_strategy(s) if isinstance(s, str) else get_strategy(s.name, **s.params))
    return built


def _plan_metric(config: RunConfig, problems: list[str]) -> str:
    name = config.fusion.metric
    with _problem(problems, "fusion.metric"):
        metric = get_metric(name)
        if config.task is not None and config.task not in metric.tasks:
            problems.append(
                f"fusion.metric: {name!r} is not defined for {config.task}; it applies to {', '.join(metric.tasks)}"
            )
    return name
