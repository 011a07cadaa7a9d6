"""The main job: plan -> members -> cached predictions -> strategy search -> fused bundle -> report.

``modelfusion run CONFIG`` and ``modelfusion demo`` both call :func:`run_fusion`: it makes the
:class:`~modelfusion.plan.RunPlan` (every config error is found there), then runs the stages of
:mod:`modelfusion.stages` under the bundle's lock, stages their files in one hidden folder and
publishes them together (:mod:`modelfusion.publish`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelfusion import stages
from modelfusion.bundle import check_bundle_target
from modelfusion.config import RunConfig, dump_config
from modelfusion.data.dataset import Dataset
from modelfusion.files import write_text_atomic
from modelfusion.members.base import Member
from modelfusion.phases import Phases
from modelfusion.plan import RunPlan, plan_run
from modelfusion.publish import (
    PUBLISHED,
    RUN_RECORD,
    check_output_dir,
    check_writable,
    figures_folder,
    publish_run,
)
from modelfusion.recovery import bundle_lock, recover_folder
from modelfusion.report import write_report
from modelfusion.rows import DeploymentRow, MemberRow, StrategyRow

__all__ = ["RunResult", "load_run_data", "load_run_members", "run_fusion"]


@dataclass
class RunResult:
    """What a run produced: the rows of every table, the chosen strategy and where the files are.

    Examples
    --------
    >>> result = run_fusion(load_config("fusion.yaml"))
    >>> result.chosen, result.chosen_row.metrics["accuracy"]
    ('stacking', 0.9777)
    """

    output_dir: Path
    bundle_dir: Path
    chosen: str
    members: list[MemberRow]
    strategies: list[StrategyRow]
    files: dict[str, Path] = field(default_factory=dict)
    #: the ``deploy:`` section's graphs, one row each
    deployment: list[DeploymentRow] = field(default_factory=list)
    #: what went wrong without failing the run (a deploy step that could not write its graph)
    warnings: list[str] = field(default_factory=list)
    task: str = "classification"
    #: set when a single member beat every strategy on validation CV (see ``fusion.fallback``)
    notice: str | None = None
    #: (phase, seconds) in the order they ran
    phases: list[tuple[str, float]] = field(default_factory=list)
    #: the metric strategies were ranked by (how the CV columns print)
    metric: str = "nll"

    @property
    def best_member(self) -> MemberRow:
        """The member with the best test accuracy."""
        return max(self.members, key=lambda r: r.metrics.get("accuracy", float("-inf")))

    @property
    def chosen_row(self) -> StrategyRow:
        """The row of the model the bundle holds."""
        return next(r for r in self.strategies if r.name == self.chosen)


def load_run_data(config: RunConfig | RunPlan) -> tuple[Dataset, Dataset]:
    """The validation and test datasets a config (or its plan) describes."""
    return stages.load_data(config if isinstance(config, RunPlan) else plan_run(config))


def load_run_members(config: RunConfig | RunPlan) -> list[Member]:
    """Every member a config (or its plan) lists, loaded with its preprocessing."""
    return stages.load_members(config if isinstance(config, RunPlan) else plan_run(config))


def run_fusion(
    config: RunConfig | RunPlan,
    *,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] | None = None,
) -> RunResult:
    """Run the whole job a config (or its plan) describes and write bundle, report and metrics.

    The plan is made first, so every config error is raised before any data or model is
    loaded. ``log`` receives progress messages, ``warn`` (default: ``log``) what went wrong
    without failing the run (a graph the ``deploy:`` section could not write); both are also in
    :attr:`RunResult.warnings` and the report. The bundle, report and config are staged and
    moved into ``output_dir`` together at the end, so an interrupted run leaves the previous
    run's files as they were. Raises ModelFusionError subclasses for user errors.
    """
    warn = log if warn is None else warn
    plan = config if isinstance(config, RunPlan) else plan_run(config)
    out = plan.output_dir
    check_writable(out)
    figures_folder(out)  # fail before the work, not when the results move into place
    with bundle_lock(out / "bundle"):  # one run (or export, quantize) writes this bundle at a time
        for action in recover_folder(out, (*PUBLISHED, RUN_RECORD)):
            warn(action)
        check_output_dir(out, plan.config.config_file)
        phases = Phases(log)
        with phases.collect_warnings(warn):
            result = _run_stages(plan, phases, progress=progress, log=log, warn=warn)
        log(phases.summary())
        result.phases = phases.times
        return result


def _run_stages(plan: RunPlan, phases: Phases, *, progress: bool | None, log, warn) -> RunResult:
    phases.start("loading data")
    val, test = stages.load_data(plan)
    phases.start("loading members")
    members = stages.load_members(plan)
    phases.start("scoring", f"{len(members)} members on {len(val)} validation and {len(test)} test samples")
    scored = stages.score(plan, members, val, test, progress=progress)
    for message in scored.warnings:
        warn(message)
    member_rows = stages.evaluate_members(scored)
    fusion = plan.config.fusion
    phases.start("searching", f"fusion strategies by {fusion.cv}-fold CV on validation ({fusion.metric})")
    result = stages.search(plan, scored, member_rows, progress=progress)
    phases.start("evaluating", "each strategy fitted on validation, scored on test")
    evaluated = stages.evaluate_strategies(result, scored, member_rows)
    choice = stages.choose(plan, result, scored, member_rows, evaluated, members)
    if choice.notice is not None:
        warn(choice.notice)
    if choice.pruned:
        log(choice.pruned)
    model = stages.build_model(plan, choice, scored, evaluated)
    check_bundle_target(plan.output_dir / "bundle")
    run = _Staged(plan, phases, scored, member_rows, evaluated, choice, result)
    files, deployment = run.write(model, warn)
    model.bundle_dir = plan.output_dir / "bundle"
    return RunResult(
        plan.output_dir,
        model.bundle_dir,
        choice.name,
        member_rows,
        evaluated.rows,
        files,
        deployment.rows,
        [*scored.warnings, *deployment.warnings],
        scored.test_preds.task,
        choice.notice,
        metric=plan.metric,
    )


@dataclass
class _Staged:
    """The writing half of a run: everything goes into one hidden folder, then into ``output_dir`` at once."""

    plan: RunPlan
    phases: Phases
    scored: stages.Scored
    member_rows: list[MemberRow]
    evaluated: stages.Evaluated
    choice: stages.Choice
    result: Any

    def write(self, model: Any, warn: Callable[[str], None]) -> tuple[dict[str, Path], stages.Deployment]:
        """Save, export, report and publish; returns the published files and the deployment rows."""
        out, config, phases = self.plan.output_dir, self.plan.config, self.phases
        stage = Path(tempfile.mkdtemp(prefix=".run-", suffix=".tmp", dir=out))
        try:
            phases.start("saving", "the bundle")
            model.save(stage / "bundle")
            if self.plan.deploy_steps:
                phases.start("exporting", ", ".join(self.plan.deploy_steps))
            deployment = stages.export(self.plan, model, stage / "bundle", self.scored)
            for message in deployment.warnings:
                warn(message)
            engine = stages.latency_on_bundle_engine(self.evaluated.rows, self.choice.name, deployment.rows)
            write_text_atomic(stage / "config.yaml", dump_config(config))
            staged = {"bundle": stage / "bundle", "config": stage / "config.yaml"}
            if config.report.enabled:
                phases.start("report")
                staged.update(self._report(stage, deployment, engine))
            phases.start("publishing")
            publish_run(stage, out)
            phases.stop()
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        return {key: out / path.relative_to(stage) for key, path in staged.items()}, deployment

    def _report(self, stage: Path, deployment: stages.Deployment, engine: str | None) -> dict[str, Path]:
        n_val, n_test, cv = len(self.scored.val), len(self.scored.test), self.plan.config.fusion.cv
        warnings = [*self.scored.warnings, *deployment.warnings]
        notes = [
            *([engine] if engine else []),
            f"{n_val} validation / {n_test} test samples; strategies ranked by {cv}-fold CV on validation, "
            "evaluated once on test.",
            *deployment.notes,
            *[w for w in warnings if w != self.choice.notice],
            *[w for w in self.phases.warnings if w not in warnings],
        ]
        report = stages.build_report(
            self.plan,
            self.scored,
            self.member_rows,
            self.evaluated,
            self.choice,
            self.result,
            deployment,
            notes,
        )
        return write_report(report, stage)
