"""Phases of a run: a line as each starts, times in the summary, modelfusion's warnings collected."""

from __future__ import annotations

import warnings

from modelfusion.errors import ModelFusionWarning
from modelfusion.phases import Phases


def test_each_phase_prints_a_line_and_the_summary_lists_their_times():
    lines: list[str] = []
    phases = Phases(lines.append)
    phases.start("loading data")
    phases.start("scoring", "7 members")
    summary = phases.summary()
    assert lines == ["loading data ...", "scoring: 7 members ..."]
    assert [name for name, _ in phases.times] == ["loading data", "scoring"]
    assert summary.startswith("phases: loading data ") and "; total " in summary


def test_modelfusion_warnings_reach_warn_once_and_are_kept_for_the_report():
    shown: list[str] = []
    phases = Phases(lambda _: None)
    with warnings.catch_warnings(record=True) as other, phases.collect_warnings(shown.append):
        warnings.simplefilter("always")
        warnings.warn("member 'partial' was trained without class(es) [7]", ModelFusionWarning, stacklevel=1)
        warnings.warn("member 'partial' was trained without class(es) [7]", ModelFusionWarning, stacklevel=1)
        warnings.warn("a library's own deprecation", DeprecationWarning, stacklevel=1)
    assert shown == phases.warnings == ["member 'partial' was trained without class(es) [7]"]
    assert [str(w.message) for w in other] == ["a library's own deprecation"]
