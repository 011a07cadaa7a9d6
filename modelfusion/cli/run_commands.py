"""``modelfusion init``, ``run`` and ``demo``."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml

from modelfusion.cli.console import State, console, handle_errors, log, warn
from modelfusion.cli.tables import deployment_table, results_table
from modelfusion.errors import ConfigError

_SCAFFOLD_README = """# {name}

A modelfusion project.

- `configs/fusion.yaml` — what to fuse and how; it runs as is on the built-in digits example.
- `models/` — your trained members (torch, ONNX, scikit-learn, Hugging Face, Keras files).
- `pipelines/` — preprocessing code your members need (`module:function` factories).
- `utils/` — anything else the project needs.

Run it:

    modelfusion run configs/fusion.yaml

then open `runs/fusion/report.html`. Point `members:` at your own models and `data:` at
your own labelled validation data when you are ready.
"""

_SCAFFOLD_README_EMPTY = """# {name}

A modelfusion project without members yet.

- `configs/fusion.yaml` — what to fuse and how: list your models under `members:` (the
  commented entry shows the shape), then run it.
- `models/` — your trained members (torch, ONNX, scikit-learn, Hugging Face, Keras files).
- `pipelines/` — preprocessing code your members need (`module:function` factories).
- `utils/` — anything else the project needs.

    modelfusion run configs/fusion.yaml
"""

_MEMBERS_PLACEHOLDER = """members:
  # one entry per trained model; paths are relative to this file
  # - {name: mymodel, path: ../models/mymodel.onnx}
  # - {name: forest, path: ../models/forest.skops}
"""

_CONFIG_HEADER = """\
# modelfusion run config. Paths are relative to this file; ${{VAR}} and ${{VAR:-default}}
# are read from the environment. Every key is documented in the modelfusion README.
#
# name:        a label for tables and the report
# seed:        every stochastic step (data split, CV folds, seeded strategies) uses it
# output_dir:  where the bundle, report.html, report.md and metrics.json go
# cache_dir:   member outputs are cached here, keyed by model and data hash
# data:        builtin:NAME | a CSV/Parquet/.npz/.npy file | an image folder | module:function;
#              split into validation (fits the fusion) and test (the final report)
# members:     one entry per model: path, framework (optional), preprocess, options
# fusion:      strategies: auto | [mean, weighted, greedy, optimized, stacking, ...];
#              metric picks the winner by cross-validation on the validation split
# deploy:      onnx: true writes bundle/fused.onnx; quantize: dynamic|static adds an int8
#              graph, fp16: true a half-precision one; each measured in the report
"""


@handle_errors
def init(
    name: Path = typer.Argument(..., help="Folder to create."),
    force: bool = typer.Option(False, "--force", help="Write into an existing non-empty folder."),
    example: bool = typer.Option(
        True,
        "--example/--no-example",
        help="Train the digits example members into models/ so the config runs as is.",
    ),
) -> None:
    """Scaffold a project: configs/fusion.yaml, models/, pipelines/, utils/ and a README."""
    from modelfusion.examples.digits import build_digits_members, digits_config

    if name.exists() and (not name.is_dir() or any(name.iterdir())) and not force:
        raise ConfigError(
            f"{name} exists and is not empty; pass --force to write into it", [f"{name}: not empty"]
        )
    for sub in ("configs", "models", "pipelines", "utils"):
        (name / sub).mkdir(parents=True, exist_ok=True)
    (name / "README.md").write_text(_SCAFFOLD_README.format(name=name.name))
    members = []
    if example:
        log("training the digits example members into models/ ...")
        members = [{**m, "path": f"../{m['path']}"} for m in build_digits_members(name / "models")]
    config = digits_config(members, output_dir="../runs/fusion")
    config["cache_dir"] = "../.modelfusion-cache"
    config["name"] = name.name
    config["report"] = {"title": f"{name.name}: fused model report"}
    text = _CONFIG_HEADER.format() + "\n" + yaml.safe_dump(config, sort_keys=False)
    if not example:  # no member to list yet: a commented entry shows the shape
        text = text.replace("members: []\n", _MEMBERS_PLACEHOLDER)
        (name / "README.md").write_text(_SCAFFOLD_README_EMPTY.format(name=name.name))
    (name / "configs" / "fusion.yaml").write_text(text)
    nxt = (
        f"modelfusion run {name / 'configs' / 'fusion.yaml'}"
        if example
        else f"list your models under members: in {name / 'configs' / 'fusion.yaml'}, then modelfusion run it"
    )
    console.print(f"created [bold]{name}[/bold]; next: {nxt}")


@handle_errors
def run(
    config: Path = typer.Argument(..., help="A fusion.yaml file."),
    output_dir: Path = typer.Option(
        None, "--output-dir", "-o", help="Write here instead of the config's output_dir."
    ),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Score every member again; read and write no cache."
    ),
    strategies: str = typer.Option(
        None,
        "--strategies",
        help="Comma-separated strategies to try instead of the config's (e.g. mean,greedy).",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Check the config and print the plan (data, members, strategies, outputs); run nothing.",
    ),
) -> None:
    """The main job: load members, score them (cached), search strategies, save the fused bundle and report."""
    from modelfusion.config import load_config, with_overrides
    from modelfusion.plan import plan_run
    from modelfusion.workflow import run_fusion

    changes: dict = {}
    if output_dir is not None:
        changes["output_dir"] = str(output_dir.resolve())
    if no_cache:
        changes["cache_dir"] = None
    if strategies is not None:
        changes["fusion.strategies"] = [s.strip() for s in strategies.split(",") if s.strip()]
    cfg = with_overrides(load_config(config), changes, source="command line")
    plan = plan_run(cfg)
    if dry_run:
        console.print("\n".join(plan.describe()), highlight=False, markup=False, soft_wrap=True)
        return
    result = run_fusion(plan, log=log, warn=warn)
    _print_result(result)


@handle_errors
def demo(
    output: Path = typer.Option(Path("runs/demo"), "--output", "-o", help="Folder for models and results."),
) -> None:
    """The main job on a built-in example: seven members on digits, three frameworks, then fused."""
    from modelfusion.config import parse_config
    from modelfusion.examples.digits import build_digits_members, digits_config
    from modelfusion.workflow import run_fusion

    log("training seven example members on the digits train split ...")
    members = build_digits_members(output / "models")
    raw = digits_config(members, output_dir="results")
    output.mkdir(parents=True, exist_ok=True)
    (output / "fusion.yaml").write_text(_CONFIG_HEADER.format() + "\n" + yaml.safe_dump(raw, sort_keys=False))
    log(f"wrote {output / 'fusion.yaml'} (copy it to start your own)")
    result = run_fusion(
        parse_config(raw, base_dir=output.resolve(), source=str(output / "fusion.yaml")),
        log=log,
        warn=warn,
    )
    _print_result(result)


def _print_result(result) -> None:
    from modelfusion.evaluation.comparison import comparison_sentence

    console.print(results_table(result.members, result.strategies, result.chosen, task=result.task))
    console.print(
        comparison_sentence(result.task, result.chosen, result.chosen_row, result.members), highlight=False
    )
    if result.deployment:
        console.print(deployment_table(result.deployment))
    from modelfusion.manifest import manifest_digest

    console.print(
        f"bundle: {result.bundle_dir} (sha256 {manifest_digest(result.bundle_dir)}, for --expect-sha256)"
    )
    print_outputs(result)


def print_outputs(result) -> None:
    """The report's path; with ``--verbose``, every published file."""
    if "html" in result.files:
        console.print(f"report: {result.files['html']}")
    if State.verbose:
        console.print(result.files)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command()(init)
    app.command()(run)
    app.command()(demo)
