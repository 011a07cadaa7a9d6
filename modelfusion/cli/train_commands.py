"""``modelfusion distill``: the run, then the fused ensemble distilled into one small student."""

from __future__ import annotations

from pathlib import Path

import typer

from modelfusion.cli.console import console, err_console, handle_errors, log, warn


@handle_errors
def distill(
    config: Path = typer.Argument(..., help="A fusion.yaml file; its distill: section says how."),
    output_dir: Path = typer.Option(
        None, "--output-dir", "-o", help="Write here instead of the config's output_dir."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Score every member again; no prediction cache."),
    nproc: int = typer.Option(1, "--nproc", help="Training processes on this machine (torchrun, DDP)."),
    nnodes: int = typer.Option(1, "--nnodes", help="Machines taking part (run the same command on each)."),
    node_rank: int = typer.Option(
        0, "--node-rank", help="This machine's rank, 0 to nnodes-1; 0 writes results."
    ),
    rdzv_endpoint: str = typer.Option(
        None, "--rdzv-endpoint", help="HOST:PORT of node 0, for torchrun's rendezvous when --nnodes > 1."
    ),
    force: bool = typer.Option(False, "--force", help="Allow --nproc above this machine's CPU count."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Check the config and print the plan; run nothing."
    ),
) -> None:
    """Run the fusion job, then distil the fused model into a small student (labels-only, distilled,
    pruned and int8 variants side by side), published as OUTPUT_DIR/student."""
    from modelfusion.config import load_config, with_overrides
    from modelfusion.distill_stages import Launch, plan_distill, resume_hint
    from modelfusion.plan import plan_run
    from modelfusion.workflow import run_fusion

    changes: dict = {}
    if output_dir is not None:
        changes["output_dir"] = str(output_dir.resolve())
    if no_cache:
        changes["cache_dir"] = None
    plan = plan_run(with_overrides(load_config(config), changes, source="command line"))
    launch = Launch(nproc, nnodes, node_rank, rdzv_endpoint)
    dplan = plan_distill(plan, launch, force=force)
    if dry_run:
        lines = [*plan.describe(), *dplan.describe()]
        console.print("\n".join(lines), highlight=False, markup=False, soft_wrap=True)
        return
    try:
        result = run_fusion(plan, log=log, warn=warn, distill=dplan)
    except KeyboardInterrupt:
        err_console.print(f"[red]interrupted[/red]: {resume_hint(dplan)}", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    if node_rank > 0:
        console.print(f"node {node_rank} trained its share; node 0 writes the student and the report")
        return
    _print(result)


@handle_errors
def train(
    config: Path = typer.Argument(..., help="A train.yaml: data, model (encoders, fusion, head), training."),
    output_dir: Path = typer.Option(
        None, "--output-dir", "-o", help="Write here instead of the config's output_dir."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Check the config and print the plan; train nothing."
    ),
) -> None:
    """Train a feature-level fusion model end to end: every fusion operator listed in model.fusion and
    each modality alone, compared in OUTPUT_DIR/report.html and metrics.json; the best fused model
    saved to OUTPUT_DIR/model (safetensors, ONNX)."""
    from modelfusion.multimodal.train_config import load_train_config
    from modelfusion.multimodal.train_job import plan_training, run_training

    settings = load_train_config(config)
    if output_dir is not None:
        settings = settings.model_copy(update={"output_dir": str(output_dir.resolve())})
    plan = plan_training(settings)
    if dry_run:
        console.print("\n".join(plan.describe()), highlight=False, markup=False, soft_wrap=True)
        return
    result = run_training(plan, log=log)
    from modelfusion.cli.tables import training_table

    console.print(training_table(result.rows, best=result.best.model))
    for name in ("report", "metrics", "model"):
        if name in result.files:
            console.print(f"{name}: {result.files[name]}", highlight=False, soft_wrap=True)


def _print(result) -> None:
    from modelfusion.cli.run_commands import print_outputs
    from modelfusion.cli.tables import deployment_table, variant_table

    console.print(variant_table(result.distillation))
    if result.student_deployment:
        console.print(deployment_table(result.student_deployment))
    console.print(f"student: {result.files.get('student')} (a bundle: predict, evaluate, or fuse its member)")
    print_outputs(result)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command()(distill)
    app.command()(train)
