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

from modelfusion import distill_stages, stages
from modelfusion.bundle import check_bundle_target
from modelfusion.config import RunConfig, dump_config
from modelfusion.data.dataset import Dataset
from modelfusion.distill_stages import DistillPlan
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
from modelfusion.rows import DeploymentRow, MemberRow, StrategyRow, VariantRow

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
    #: ``modelfusion distill``: one row per model of the variant table
    distillation: list[VariantRow] = field(default_factory=list)
    #: ``modelfusion distill``: the student bundle's graphs (fp32 ONNX, int8)
    student_deployment: list[DeploymentRow] = field(default_factory=list)

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
    distill: DistillPlan | None = None,
) -> RunResult:
    """Run the whole job a config (or its plan) describes and write bundle, report and metrics.

    With ``distill`` (a :func:`~modelfusion.distill_stages.plan_distill` of the same plan: what
    ``modelfusion distill`` passes), the fused model is then distilled into a student published
    as ``output_dir/student`` and reported beside the ensemble.

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
            result = _run_stages(plan, phases, progress=progress, log=log, warn=warn, distill=distill)
        log(phases.summary())
        result.phases = phases.times
    if distill is not None and distill.launch.node_rank == 0:
        distill_stages.remove_workdir(distill)  # published: nothing left to resume
    return result


@dataclass
class _Fused:
    """The fusion half of a run: scored members, the search, the choice and the fused model."""

    members: list[Member]
    scored: stages.Scored
    member_rows: list[MemberRow]
    result: Any
    evaluated: stages.Evaluated
    choice: stages.Choice
    model: Any


def _fuse(plan: RunPlan, phases: Phases, *, progress: bool | None, log, warn) -> _Fused:
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
    return _Fused(members, scored, member_rows, result, evaluated, choice, model)


def _run_stages(
    plan: RunPlan, phases: Phases, *, progress: bool | None, log, warn, distill: DistillPlan | None
) -> RunResult:
    fused = _fuse(plan, phases, progress=progress, log=log, warn=warn)
    model, choice, job = fused.model, fused.choice, None
    if distill is not None:
        phases.start("distilling", f"{choice.name} into a {distill.config.student} student")
        job = distill_stages.prepare(plan, distill, model, fused.scored.val, fused.members)
        distill_stages.train(distill, job, progress=progress)
    check_bundle_target(plan.output_dir / "bundle")
    result = RunResult(
        plan.output_dir,
        plan.output_dir / "bundle",
        choice.name,
        fused.member_rows,
        fused.evaluated.rows,
        task=fused.scored.test_preds.task,
        notice=choice.notice,
        metric=plan.metric,
    )
    if distill is not None and distill.launch.node_rank > 0:  # node 0 writes the results
        return result
    run = _Staged(plan, phases, fused, distill, job)
    result.files, deployment, distilled = run.write(model, warn)
    model.bundle_dir = result.bundle_dir
    result.deployment, result.warnings = deployment.rows, [*fused.scored.warnings, *deployment.warnings]
    if distilled is not None:
        result.distillation, result.student_deployment = distilled.rows, distilled.deployment
    return result


@dataclass
class _Staged:
    """The writing half of a run: everything goes into one hidden folder, then into ``output_dir`` at once."""

    plan: RunPlan
    phases: Phases
    fused: _Fused
    distill: DistillPlan | None = None
    #: the distillation job's folder (its trained students)
    job: Path | None = None

    def write(
        self, model: Any, warn: Callable[[str], None]
    ) -> tuple[dict[str, Path], stages.Deployment, distill_stages.Distilled | None]:
        """Save, export, report and publish; returns the published files, the deployment rows and
        what distillation added."""
        out, config, phases, scored = self.plan.output_dir, self.plan.config, self.phases, self.fused.scored
        stage = Path(tempfile.mkdtemp(prefix=".run-", suffix=".tmp", dir=out))
        try:
            phases.start("saving", "the bundle")
            model.save(stage / "bundle")
            if self.plan.deploy_steps:
                phases.start("exporting", ", ".join(self.plan.deploy_steps))
            deployment = stages.export(self.plan, model, stage / "bundle", scored)
            for message in deployment.warnings:
                warn(message)
            distilled = self._student(model, stage)
            write_text_atomic(stage / "config.yaml", dump_config(config))
            staged = {"bundle": stage / "bundle", "config": stage / "config.yaml"}
            if distilled is not None:
                staged["student"] = stage / "student"
            if config.report.enabled:
                phases.start("report")
                staged.update(self._report(stage, deployment, distilled))
            phases.start("publishing")
            publish_run(stage, out)
            phases.stop()
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        return {key: out / path.relative_to(stage) for key, path in staged.items()}, deployment, distilled

    def _student(self, model: Any, stage: Path) -> distill_stages.Distilled | None:
        if self.distill is None or self.job is None:
            return None
        self.phases.start("measuring", "the ensemble and every student at batch 1 and 256")
        f = self.fused
        return distill_stages.write_student(
            self.plan, self.distill, self.job, model, f.members, f.scored, stage
        )

    def _report(
        self, stage: Path, deployment: stages.Deployment, distilled: distill_stages.Distilled | None
    ) -> dict[str, Path]:
        f = self.fused
        engine = stages.latency_on_bundle_engine(f.evaluated.rows, f.choice.name, deployment.rows)
        n_val, n_test, cv = len(f.scored.val), len(f.scored.test), self.plan.config.fusion.cv
        warnings = [*f.scored.warnings, *deployment.warnings]
        notes = [
            *([engine] if engine else []),
            f"{n_val} validation / {n_test} test samples; strategies ranked by {cv}-fold CV on validation, "
            "evaluated once on test.",
            *deployment.notes,
            *(distilled.notes if distilled is not None else []),
            *[w for w in warnings if w != f.choice.notice],
            *[w for w in self.phases.warnings if w not in warnings],
        ]
        report = stages.build_report(
            self.plan, f.scored, f.member_rows, f.evaluated, f.choice, f.result, deployment, notes
        )
        if distilled is not None:
            report.distillation = [r.record() for r in distilled.rows]
            report.student_deployment = [dict(r) for r in distilled.deployment]
        return write_report(report, stage)
