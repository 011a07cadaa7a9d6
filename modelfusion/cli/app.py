"""The typer application: global options, and each command module registered through its ``register(app)``.

Imports go one way: the command modules use :mod:`modelfusion.cli.console`, this module imports
them. Each command imports what it runs inside its body, so ``modelfusion --help`` stays light.
"""

from __future__ import annotations

import os
import sys
import warnings

import typer

from modelfusion.cli import (
    bundle_commands,
    convert_commands,
    deploy_commands,
    run_commands,
    serve_commands,
    train_commands,
)
from modelfusion.cli.console import State, _show_warning, cli_phrasing, console
from modelfusion.files import terminate_as_interrupt

__all__ = ["app", "cli_phrasing", "main"]

app = typer.Typer(
    name="modelfusion",
    help="Fuse trained models into one predictor that is more accurate, better calibrated and cheaper to run.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from modelfusion import __version__

        console.print(f"modelfusion {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only print results and errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks and library messages."),
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
    ),
) -> None:
    State.quiet, State.verbose = quiet, verbose
    if quiet:
        os.environ["MODELFUSION_QUIET"] = "1"
    if not verbose:  # libraries' own progress bars and advisories are noise here; -v shows them
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def _register() -> None:
    """Add every command to :data:`app` (once)."""
    if not app.registered_commands:
        for module in (
            run_commands,
            bundle_commands,
            deploy_commands,
            train_commands,
            serve_commands,
            convert_commands,
        ):
            module.register(app)


def main() -> None:
    """Entry point of the ``modelfusion`` script."""
    terminate_as_interrupt()  # `kill` unwinds like Ctrl-C: nothing half-written is left
    warnings.showwarning = _show_warning
    _register()
    app(prog_name="modelfusion")


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
