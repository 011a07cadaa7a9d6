"""Rich progress bars that stay quiet in CI and non-interactive shells."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def progress_enabled(requested: bool | None = None) -> bool:
    """Whether to draw a bar: an explicit request wins; otherwise only on a TTY outside CI."""
    if requested is not None:
        return requested
    return sys.stderr.isatty() and not os.environ.get("CI") and not os.environ.get("MODELFUSION_QUIET")


@contextmanager
def progress_bar(enabled: bool | None = None):
    """A :class:`rich.progress.Progress` that is disabled when not interactive."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not progress_enabled(enabled),
        transient=True,
    )
    with bar:
        yield bar
