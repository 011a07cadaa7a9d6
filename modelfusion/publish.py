"""The output folder of a run: what may be replaced there, and moving a staged run into it all at once.

A run writes ``bundle/``, ``config.yaml``, the report files and its figures into
``output_dir``. :func:`check_output_dir` refuses a folder holding files of those names that
modelfusion did not write; :func:`publish_run` moves a staged run into place, all or none,
and records what it wrote in ``.modelfusion-run.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from modelfusion.bundle import is_bundle
from modelfusion.errors import ConfigError
from modelfusion.files import defer_interrupts, replace_all, write_text_atomic
from modelfusion.members.base import sha256_file
from modelfusion.report.render import FIGURES, REPORT_FILES

#: What a run writes into ``output_dir`` (the leftovers of an interrupted run are only these).
PUBLISHED = ("bundle", "student", "config.yaml", "report.html", "report.md", "metrics.json", "figures")
#: Bundles a run publishes: the fused model, and the distilled student (``modelfusion distill``).
BUNDLES = ("bundle", "student")


def check_output_dir(out: Path, config_file: Path | None = None) -> None:
    """Refuse an ``output_dir`` whose files a run would overwrite or delete but did not write.

    A run replaces ``bundle/``, ``config.yaml``, the report files and its figures. Each must be
    absent or recorded, unchanged, in ``.modelfusion-run.json`` (written by the previous run;
    a folder from before that record existed counts as a run's when its ``bundle/`` is a
    bundle). Other files of yours in ``output_dir`` stay; the config file must not be there.
    """
    if config_file is not None and config_file.resolve().parent == out.resolve():
        raise ConfigError(
            f"output_dir: {out} is the folder of the config file {config_file.name}; a run writes "
            "config.yaml and its report there. Choose another output_dir (e.g. runs/fusion)",
            ["output_dir: holds the config file"],
        )
    recorded = _run_record(out)
    legacy = recorded is None and is_bundle(out / "bundle")
    foreign = []
    for name in PUBLISHED:
        entry = out / name
        if not (entry.exists() or entry.is_symlink()) or legacy:
            continue
        if name == "figures":
            ours = {f"{key}.png" for key, _ in FIGURES}
            files = [p for p in entry.iterdir() if p.name in ours] if entry.is_dir() else []
            foreign += [
                f"figures/{p.name}" for p in files if (recorded or {}).get(f"figures/{p.name}") != _digest(p)
            ]
        elif name in BUNDLES:
            if not is_bundle(entry):
                foreign.append(name)
        elif (recorded or {}).get(name) != _digest(entry):
            foreign.append(name)
    if foreign:
        raise ConfigError(
            f"output_dir: {out} holds {', '.join(foreign)}, which this run would replace but modelfusion did "
            "not write (or which changed since); move them or choose another output_dir",
            [f"output_dir: {f} was not written by modelfusion" for f in foreign],
        )


RUN_RECORD = ".modelfusion-run.json"


def _run_record(out: Path) -> dict[str, str] | None:
    try:
        record = json.loads((out / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = record.get("files") if isinstance(record, dict) else None
    return files if isinstance(files, dict) else None


def _digest(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() and not path.is_symlink() else None


def publish_run(stage: Path, out: Path) -> None:
    """Move what ``stage`` holds (bundle, config, report files, figures) into ``out``, all or none.

    ``bundle/`` replaces the old bundle whole; report figures replace their namesakes one by
    one and the figures of a previous report that this run lacks are removed, so other files
    a user keeps in ``out/figures`` stay. Without a new report, the previous run's report
    files are removed rather than left beside a bundle they do not describe. Ctrl-C is held
    while the entries move (see :func:`~modelfusion.files.replace_all`).
    """

    figures = figures_folder(out)
    moves: list[tuple[Path | None, Path]] = []
    for entry in sorted(stage.iterdir()):
        if entry.name != "figures" and not entry.name.startswith("."):  # not the staged bundle's lock
            moves.append((entry, out / entry.name))
    staged_figures = (
        {p.name: p for p in (stage / "figures").iterdir()} if (stage / "figures").is_dir() else {}
    )
    report_written = (stage / "report.html").exists()
    if not report_written:  # the previous report describes a bundle that is being replaced
        moves += [(None, out / name) for name in REPORT_FILES if (out / name).exists()]
    if not (stage / "student").exists() and is_bundle(out / "student"):  # distilled from the old bundle
        moves.append((None, out / "student"))
    for key, _ in FIGURES:
        name = f"{key}.png"
        if name in staged_figures:
            moves.append((staged_figures[name], figures / name))
        elif (figures / name).exists():
            moves.append((None, figures / name))
    if staged_figures:
        figures.mkdir(exist_ok=True)
    published = {
        dst.relative_to(out).as_posix(): _digest(src)
        for src, dst in moves
        if src is not None and src.is_file()
    }
    write_text_atomic(stage / RUN_RECORD, json.dumps({"files": published}, indent=2))
    moves.append((stage / RUN_RECORD, out / RUN_RECORD))
    with defer_interrupts():
        replace_all(moves)


def figures_folder(out: Path) -> Path:
    """``out/figures``, with a clear error when a file stands there."""
    figures = out / "figures"
    if figures.exists() and not figures.is_dir():
        raise ConfigError(
            f"output_dir: {figures} is a file; the report writes its figures into a folder there "
            "(move the file or choose another output_dir)",
            [f"output_dir: {figures} is not a folder"],
        )
    return figures


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"output_dir: cannot write to {out} ({e.strerror})", [f"output_dir: {out} is not writable"]
        ) from None
