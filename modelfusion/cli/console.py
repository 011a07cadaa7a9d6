"""What every command shares: the consoles, --quiet/--verbose state, warnings, and the one place user
errors become exit code 2."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from modelfusion.errors import ConfigError, ModelFusionError, ModelFusionWarning

console = Console()
err_console = Console(stderr=True)

TRUST_HELP = "Allow what runs code from the bundle: unlisted architectures, pickles, SavedModels."
EXPECT_HELP = "Refuse the bundle unless its manifest's sha256 is this (see bundle/bundle.sha256)."

#: What becomes one red line and exit code 2: errors modelfusion raised on purpose, and the
#: operating system's (a missing file, a full disk, no permission). Anything else is a bug of
#: ours and keeps its traceback (exit 1), so it is never mistaken for the user's mistake.
USER_ERRORS = (ModelFusionError, OSError)


class State:
    quiet = False
    verbose = False


def log(message: str) -> None:
    """Progress messages, silenced by --quiet."""
    if not State.quiet:
        err_console.print(f"[dim]{escape(message)}[/dim]")  # messages quote user text: no markup


def warn(message: str) -> None:
    """What went wrong without failing the command; printed even with --quiet."""
    err_console.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False, soft_wrap=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings in the CLI: ours as a yellow ``warning:`` line, other libraries' only with -v."""
    if issubclass(category, ModelFusionWarning):
        warn(str(message))
    elif State.verbose:
        err_console.print(f"[dim]{escape(f'{category.__name__}: {message} ({filename}:{lineno})')}[/dim]")


#: Library phrasing in messages -> what to type: command-line flags for commands that take a
#: bundle or data, config keys for the commands driven by a YAML file.
_FLAG_PHRASES = [
    (re.compile(r"trust=True \(CLI(/config)?: (--)?trust\)"), "--trust"),
    (re.compile(r"trust=True"), "--trust"),
    (re.compile(r"label='<column>'"), "--label COLUMN"),
    (re.compile(r"\blabel=(?=\S)"), "--label "),
    (re.compile(r"\btext_column="), "--text-column "),
]
_CONFIG_PHRASES = [
    (re.compile(r"trust=True \(CLI(/config)?: (--)?trust\)"), "trust: true in the member's entry"),
    (re.compile(r"trust=True"), "trust: true in the member's entry"),
    (re.compile(r"label='<column>'"), "data.label: COLUMN"),
    (re.compile(r"\btext_column=(?=\s|$|[;,.])"), "data.options.text_column"),
]
_CONFIG_COMMANDS = ("run", "demo", "init")


def cli_phrasing(message: str, command: str) -> str:
    """``message`` with Python argument names replaced by the flag or config key of ``command``."""
    for pattern, text in _CONFIG_PHRASES if command in _CONFIG_COMMANDS else _FLAG_PHRASES:
        message = pattern.sub(text, message)
    return message


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user errors into one red line and exit code 2 (tracebacks only with --verbose)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            err_console.print("[red]interrupted[/red]: nothing half-written was left behind")
            raise typer.Exit(130) from None
        except ConfigError as e:
            if State.verbose:
                err_console.print_exception()
            first, *rest = str(e).splitlines()
            err_console.print(f"[red]error:[/red] {escape(first)}", highlight=False, soft_wrap=True)
            for line in rest:
                err_console.print(escape(line), highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except USER_ERRORS as e:
            if State.verbose:
                err_console.print_exception()
            message = cli_phrasing(str(e), fn.__name__)
            err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper
