"""The named phases of a run: a line as each starts, its time for the summary, and the warnings raised.

A run is a sequence of phases (loading data, scoring, searching, exporting, writing the
report). Each prints one line when it starts, so a long run is never silent, and the summary
at the end says where the time went. modelfusion's own warnings raised during the run are
passed to the caller's ``warn`` as they happen and kept for the report's notes.

Examples
--------
>>> phases = Phases(print)
>>> phases.start("scoring members")
scoring members ...
>>> phases.stop(); phases.summary()
'phases: scoring members 0.0 s'
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator

from modelfusion.errors import ModelFusionWarning


class Phases:
    """Start, time and summarise the phases of one run; collect its warnings.

    Parameters
    ----------
    log : callable taking one message (the CLI's dimmed progress line, or ``print``)
    """

    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self.times: list[tuple[str, float]] = []
        self.warnings: list[str] = []
        self._current: tuple[str, float] | None = None

    def start(self, name: str, detail: str | None = None) -> None:
        """End the phase under way (if any) and start ``name``, printing a line (with ``detail``)."""
        self.stop()
        self.log(f"{name}: {detail} ..." if detail else f"{name} ...")
        self._current = (name, time.perf_counter())

    def stop(self) -> None:
        """End the phase under way and record its time."""
        if self._current is not None:
            name, started = self._current
            self.times.append((name, time.perf_counter() - started))
            self._current = None

    def summary(self) -> str:
        """``phases: loading data 0.2 s, scoring 3.1 s, ...; total 9.1 s``."""
        self.stop()
        parts = [f"{name} {seconds:.1f} s" for name, seconds in self.times]
        return "phases: " + ", ".join(parts) + f"; total {sum(s for _, s in self.times):.1f} s"

    @contextlib.contextmanager
    def collect_warnings(self, warn: Callable[[str], None]) -> Iterator[None]:
        """Inside the block, modelfusion's warnings go to ``warn`` at once and into :attr:`warnings`.

        Other libraries' warnings keep the handler that was installed (the CLI shows them with -v).
        """
        with warnings.catch_warnings():
            previous = warnings.showwarning

            def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
                if issubclass(category, ModelFusionWarning):
                    text = str(message)
                    if text not in self.warnings:
                        self.warnings.append(text)
                        warn(text)
                else:
                    previous(message, category, filename, lineno, file, line)

            warnings.showwarning = show
            yield
