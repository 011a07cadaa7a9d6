"""The main job: members → cached predictions → strategy search → fused bundle → report.

``modelfusion run CONFIG`` and ``modelfusion demo`` both call :func:`run_fusion`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from modelfusion.bundle import check_bundle_target, is_bundle, library_versions
from modelfusion.config import RunConfig, config_record, dump_config
from modelfusion.data.datasets import source_id
from modelfusion.errors import (
    ConfigError,
    MemberFileNotFoundError,
    MemberLoadError,
    ModelFusionError,
    PredictionError,
)
from modelfusion.files import defer_interrupts, replace_all, write_text_atomic
from modelfusion.fused import FusedModel
from modelfusion.importpath import importable_from
from modelfusion.inputs import input_record
from modelfusion.members.base import Member
from modelfusion.phases import Phases
from modelfusion.predictions import PredictionSet, score_members
from modelfusion.recovery import bundle_lock, recover_folder

#: What a run writes into ``output_dir`` (the leftovers of an interrupted run are only these).
PUBLISHED = ("bundle", "config.yaml", "report.html", "report.md", "metrics.json", "figures")


@dataclass
class RunResult:
    """What a run produced: tables, the chosen strategy and where the files are."""

    output_dir: Path
    bundle_dir: Path
    chosen: str
    members: list[dict[str, Any]]
    strategies: list[dict[str, Any]]
    files: dict[str, Path] = field(default_factory=dict)
    #: the ``deploy:`` section's graphs, one row each (see :func:`~modelfusion.runtime.deployment.prepare_deployment`)
    deployment: list[dict[str, Any]] = field(default_factory=list)
    #: what went wrong without failing the run (a deploy step that could not write its graph)
    warnings: list[str] = field(default_factory=list)
    task: str = "classification"
    #: set when a single member beat every strategy on validation CV (see ``fusion.fallback``)
    notice: str | None = None
    #: (phase, seconds) in the order they ran
    phases: list[tuple[str, float]] = field(default_factory=list)

    @property
    def best_member(self) -> dict[str, Any]:
        return max(self.members, key=lambda r: r.get("accuracy", -np.inf))

    @property
    def chosen_row(self) -> dict[str, Any]:
        return next(r for r in self.strategies if r["name"] == self.chosen)


def load_run_data(config: RunConfig) -> tuple[Any, Any]:
    """The validation and test datasets a config describes."""
    from modelfusion.data import load_dataset, split_dataset

    def load(section) -> Any:
        return load_dataset(
            section.source,
            format=section.format,
            label=section.label,
            features=section.features,
            base_dir=config.base_dir,
            **section.options,
        )

    d = config.data
    if d.source is None:  # the config validator guarantees both separate sets then
        return load(d.validation), load(d.test)
    parts = split_dataset(
        load(d.as_source()),
        validation=d.split.validation,
        test=d.split.test,
        seed=_split_seed(config),
        stratify=d.split.stratify,
    )
    return parts["validation"], parts["test"]


def load_run_members(config: RunConfig) -> list[Member]:
    """Load every member a config lists, with its preprocessing."""
    from modelfusion.data import build_preprocessor
    from modelfusion.members import load_member

    members = []
    for i, m in enumerate(config.members):
        path = m.path
        local = config.resolve(path)
        source = str(local) if local is not None and local.exists() else path
        options = dict(m.options)
        if config.task is not None:  # the run's task is every member's unless the member says otherwise
            options.setdefault("task", config.task)
        try:
            with importable_from(config.base_dir):  # architecture factories next to the config (pipelines/)
                member = load_member(
                    source,
                    framework=m.framework,
                    name=m.name,
                    trust=m.trust,
                    preprocess=build_preprocessor(m.preprocess) if m.preprocess else None,
                    **options,
                )
        except ModelFusionError as e:
            raise type(e)(f"members[{i}] ({m.name or path}): {e}") from e
        except FileNotFoundError as e:
            raise MemberFileNotFoundError(f"members[{i}] ({m.name or path}): {e}") from e
        except (
            ValueError,
            TypeError,
            KeyError,
            OSError,
            ImportError,
        ) as e:  # the framework's word on the file
            raise MemberLoadError(f"members[{i}] ({m.name or path}): {type(e).__name__}: {e}") from e
        member.preprocess_spec = m.preprocess
        members.append(member)
    return members


def _strategies(config: RunConfig) -> Any:
    from modelfusion.strategies import get_strategy

    if config.fusion.strategies == "auto":
        return "auto"
    return [
        get_strategy(s) if isinstance(s, str) else get_strategy(s.name, **s.params)
        for s in config.fusion.strategies
    ]


def run_fusion(config: RunConfig, *, progress: bool | None = None, log=print, warn=None) -> RunResult:
    """Run the whole job a config describes and write bundle, report and metrics.

    ``log`` receives progress messages, ``warn`` (default: ``log``) what went wrong without
    failing the run (a graph the ``deploy:`` section could not write); both are also in
    :attr:`RunResult.warnings` and the report. The bundle, report and config are staged and
    moved into ``output_dir`` together at the end, so an interrupted run leaves the previous
    run's files as they were.

    Returns a :class:`RunResult`; raises ModelFusionError subclasses for user errors.
    """
    warn = log if warn is None else warn

    out = config.resolve(config.output_dir)
    assert out is not None
    _check_writable(out)
    _figures_folder(out)  # fail before the work, not when the results move into place
    with bundle_lock(out / "bundle"):  # one run (or export, quantize) writes this bundle at a time
        for action in recover_folder(out, (*PUBLISHED, RUN_RECORD)):
            warn(action)
        check_output_dir(out, config.config_file)
        phases = Phases(log)
        with phases.collect_warnings(warn):
            result = _run_locked(config, out, progress=progress, log=log, warn=warn, phases=phases)
        log(phases.summary())
        result.phases = phases.times
        return result


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
            from modelfusion.report.render import FIGURES

            ours = {f"{key}.png" for key, _ in FIGURES}
            files = [p for p in entry.iterdir() if p.name in ours] if entry.is_dir() else []
            foreign += [
                f"figures/{p.name}" for p in files if (recorded or {}).get(f"figures/{p.name}") != _digest(p)
            ]
        elif name == "bundle":
            if not is_bundle(entry):
                foreign.append("bundle")
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
    from modelfusion.members.base import sha256_file

    return sha256_file(path) if path.is_file() and not path.is_symlink() else None


def _run_locked(
    config: RunConfig, out: Path, *, progress: bool | None, log, warn, phases: Phases
) -> RunResult:
    from modelfusion.evaluation import evaluate
    from modelfusion.strategies import search_strategies

    cache = config.resolve(config.cache_dir) if config.cache_dir else None

    phases.start("loading data")
    val, test = load_run_data(config)
    phases.start("loading members")
    members = load_run_members(config)
    phases.start("scoring", f"{len(members)} members on {len(val)} validation and {len(test)} test samples")
    val_preds = score_members(
        members, val.X, y=val.y, batch_size=config.batch_size, cache_dir=cache, progress=progress
    )
    test_preds = score_members(
        members, test.X, y=test.y, batch_size=config.batch_size, cache_dir=cache, progress=progress
    )
    if config.task and config.task != val_preds.task:
        raise ConfigError(
            f"task: config says {config.task!r} but the members do {val_preds.task!r}",
            [f"task: members do {val_preds.task}"],
        )
    y_val = _encode(val_preds, val.y, "validation")  # fail early on missing or unknown labels
    y_test = _encode(test_preds, test.y, "test")
    data_warnings = [
        *_small_split_warnings(len(val), len(test), config.fusion.cv),
        *_unseen_class_warnings(val_preds, y_val, y_test),
    ]
    for message in data_warnings:
        warn(message)

    member_rows = []
    for i, name in enumerate(val_preds.names):
        meta = test_preds.metadata[name]
        row = {
            "name": name,
            "framework": meta.get("framework"),
            "kind": "member",
            **evaluate(y_test, test_preds.scores[i], test_preds.task),
            "latency_ms": meta.get("latency_ms_per_sample"),
            "n_parameters": meta.get("n_parameters"),
            "file_size": meta.get("file_size"),
        }
        member_rows.append(row)

    phases.start(
        "searching", f"fusion strategies by {config.fusion.cv}-fold CV on validation ({config.fusion.metric})"
    )
    # Strategies take the raw labels (they map them to the members' classes themselves);
    # y_val / y_test are the encoded indices the metrics need.
    search = search_strategies(
        val_preds,
        val.y,
        metric=config.fusion.metric,
        strategies=_strategies(config),
        cv=config.fusion.cv,
        random_state=config.seed,
        progress=progress,
    )

    phases.start("evaluating", "each strategy fitted on validation, scored on test")
    member_latency = sum(r["latency_ms"] or 0.0 for r in member_rows)
    strategy_rows, strategy_scores, fitted = [], {}, {}
    for row in search.rows:
        if row.get("kind") != "strategy" or row.get("status", "ok") != "ok":
            continue
        strategy = search.strategy(row["name"]).fit(val_preds, val.y)
        start = time.perf_counter()
        fused = strategy.combine(test_preds)
        combine_ms = 1000 * (time.perf_counter() - start) / max(len(test), 1)
        weights = getattr(strategy, "weights_", None)
        used = int(np.count_nonzero(np.asarray(weights) > 1e-9)) if weights is not None else len(members)
        strategy_rows.append(
            {
                "name": row["name"],
                "kind": "strategy",
                "cv_mean": row["mean"],
                "cv_std": row["std"],
                **evaluate(y_test, fused, test_preds.task),
                "latency_ms": member_latency + combine_ms,
                "n_members_used": used,
            }
        )
        strategy_scores[row["name"]] = fused
        fitted[row["name"]] = strategy

    chosen = search.best_name
    _add_member_cv(member_rows, search)
    notice = _member_beats_fusion(member_rows, strategy_rows, chosen, search, config)
    bundle_members = members
    if notice is not None:
        warn(notice)
        if config.fusion.fallback == "best_member":
            name = _best_cv_member(member_rows, search)["name"]
            chosen = f"{name} alone"
            bundle_members = [m for m in members if m.name == name]
            fitted[chosen] = _member_alone(name, val_preds, val.y)
            strategy_scores[chosen] = fitted[chosen].combine(test_preds.subset([name]))
            row = next(r for r in member_rows if r["name"] == name)
            strategy_rows.append(
                {
                    **{k: row[k] for k in ("cv_mean", "cv_std", "latency_ms")},
                    **evaluate(y_test, strategy_scores[chosen], test_preds.task),
                    "name": chosen,
                    "kind": "member alone",
                    "n_members_used": 1,
                }
            )
    best = fitted[chosen]
    best, bundle_members, pruned_note = _drop_zero_weight_members(
        best, bundle_members, val_preds, val.y, member_rows
    )
    if pruned_note:
        log(pruned_note)
    record = config_record(config)  # ${VAR} values unexpanded: no secret is written
    learned = fitted[chosen].member_weights(val_preds.subset(fitted[chosen].names_))  # zeros included
    weight_map, weight_meaning = learned if learned is not None else (None, None)
    metadata = {
        "config_name": config.name,
        "metric": config.fusion.metric,
        "chosen": chosen,
        "test_metrics": next(r for r in strategy_rows if r["name"] == chosen),
        # feature names and sample shape: later data is checked and reordered against them
        "inputs": input_record(val.X, getattr(val, "feature_names", None)),
        # lets `evaluate --split test` reuse exactly this split
        "data": {
            **record["data"],
            "split": {**record["data"]["split"], "seed": _split_seed(config)},
            "source_id": None
            if config.data.source is None
            else source_id(config.data.source, config.base_dir),
        },
    }
    if notice is not None:
        metadata["fallback"] = {"notice": notice, "policy": config.fusion.fallback}
    fused_model = FusedModel(bundle_members, best, metadata=metadata)
    bundle_dir = out / "bundle"
    check_bundle_target(bundle_dir)
    # Everything this run writes is staged in one hidden folder and moved into place at the
    # end: an interrupted or failed run leaves the previous run's bundle and report together.
    stage = Path(tempfile.mkdtemp(prefix=".run-", suffix=".tmp", dir=out))
    try:
        phases.start("saving", "the bundle")
        fused_model.save(stage / "bundle")
        if config.deploy.wanted:
            from modelfusion.runtime.deployment import deployment_steps

            phases.start("exporting", ", ".join(deployment_steps(config.deploy.quantize, config.deploy.fp16)))
        deployment, notes, deploy_warnings = _deploy(config, fused_model, stage / "bundle", val, test)
        for message in deploy_warnings:
            warn(message)
        engine_note = _latency_on_bundle_engine(strategy_rows, chosen, deployment)
        warnings = [*data_warnings, *deploy_warnings]
        write_text_atomic(stage / "config.yaml", dump_config(config))
        staged = {"bundle": stage / "bundle", "config": stage / "config.yaml"}
        if config.report.enabled:
            from modelfusion.report import FusionReport, write_report

            phases.start("report")
            report = FusionReport(
                title=config.report.title or f"modelfusion: {config.name}",
                task=val_preds.task,
                metric=config.fusion.metric,
                class_names=[str(c) for c in (val_preds.classes if val_preds.classes is not None else [])],
                members=member_rows,
                strategies=strategy_rows,
                chosen=chosen,
                weights=weight_map,
                y_test=y_test,
                member_scores=np.asarray(test_preds.scores),
                member_names=list(val_preds.names),
                strategy_scores=strategy_scores,
                fold_scores=search.fold_scores,
                config=record,
                deployment=deployment,
                data_summary=_data_summary(val, test),
                versions=library_versions(),
                created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                notes=[
                    *([notice] if notice else []),
                    *([pruned_note] if pruned_note else []),
                    *([f"Weights chart ({chosen}): {weight_meaning}."] if weight_meaning else []),
                    *([engine_note] if engine_note else []),
                    f"{len(val)} validation / {len(test)} test samples; strategies ranked by "
                    f"{config.fusion.cv}-fold CV on validation, evaluated once on test.",
                    *notes,
                    *[w for w in warnings if w != notice],
                    *[w for w in phases.warnings if w not in warnings],
                ],
            )
            staged.update(write_report(report, stage))
        phases.start("publishing")
        _publish(stage, out)
        phases.stop()
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    fused_model.bundle_dir = bundle_dir
    files = {key: out / path.relative_to(stage) for key, path in staged.items()}
    return RunResult(
        out,
        bundle_dir,
        chosen,
        member_rows,
        strategy_rows,
        files,
        deployment,
        warnings,
        val_preds.task,
        notice,
    )


def _publish(stage: Path, out: Path) -> None:
    """Move what ``stage`` holds (bundle, config, report files, figures) into ``out``, all or none.

    ``bundle/`` replaces the old bundle whole; report figures replace their namesakes one by
    one and the figures of a previous report that this run lacks are removed, so other files
    a user keeps in ``out/figures`` stay. Without a new report, the previous run's report
    files are removed rather than left beside a bundle they do not describe. Ctrl-C is held
    while the entries move (see :func:`~modelfusion.files.replace_all`).
    """
    from modelfusion.report.render import FIGURES, REPORT_FILES

    figures = _figures_folder(out)
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


def _figures_folder(out: Path) -> Path:
    """``out/figures``, with a clear error when a file stands there."""
    figures = out / "figures"
    if figures.exists() and not figures.is_dir():
        raise ConfigError(
            f"output_dir: {figures} is a file; the report writes its figures into a folder there "
            "(move the file or choose another output_dir)",
            [f"output_dir: {figures} is not a folder"],
        )
    return figures


def _deploy(
    config: RunConfig, model: FusedModel, bundle_dir: Path, val: Any, test: Any
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """The ``deploy:`` section: export and quantize into the bundle, measured on test (and validation).

    Returns the rows, the report's notes and warnings. A graph that cannot be written (a
    member with no ONNX form, a converter or ONNX Runtime failing) is not a failed run: the
    rows measured before it are kept and a warning says which step failed, why, and which
    graphs the bundle holds.
    """
    from modelfusion.bundle import read_manifest
    from modelfusion.runtime.deployment import deployment_steps, iter_deployment

    deploy = config.deploy
    if not deploy.wanted:
        return [], [], []
    steps = deployment_steps(deploy.quantize, deploy.fp16)
    rows: list[dict[str, Any]] = []
    try:
        for row in iter_deployment(
            model,
            bundle_dir,
            (val.X, val.y),
            (test.X, test.y),
            quantize=deploy.quantize,
            fp16=deploy.fp16,
            batch_size=config.batch_size,
        ):
            rows.append(row)
    except Exception as exc:  # a converter or ONNX Runtime failing must not fail the fusion run
        graphs = sorted(
            f for f in read_manifest(bundle_dir)[0].get("checksums", {}) if f.startswith("fused.")
        )
        held = f"the bundle holds {', '.join(graphs)}" if graphs else "no ONNX graph was written"
        reason = str(exc) if isinstance(exc, ModelFusionError) else f"{type(exc).__name__}: {exc}"
        return (
            rows,
            _deploy_notes(rows, config.batch_size, len(test)),
            [f"deploy: {steps[len(rows)]} failed: {reason}; {held}"],
        )
    return rows, _deploy_notes(rows, config.batch_size, len(test)), []


def _deploy_notes(rows: list[dict[str, Any]], batch_size: int, n_test: int) -> list[str]:
    """The report's notes on the Deployment table (none without rows)."""
    if not rows:
        return []
    notes = [
        f"Deployment: accuracy of each exported graph on the test split; the manifest records the "
        f"change on validation too. Latency on this machine's CPU with ONNX Runtime at batch "
        f"{min(batch_size, n_test)}."
    ]
    grown = [r["name"] for r in rows if r.get("size_ratio", 1.0) < 1.0]
    if grown:
        notes.append(f"Deployment: {', '.join(grown)} came out larger than the fp32 graph.")
    return notes


#: Rows per cross-validation fold below which strategy rankings are noise; and test rows likewise.
MIN_ROWS_PER_FOLD = 10
MIN_TEST_ROWS = 30


def _small_split_warnings(n_val: int, n_test: int, cv: int) -> list[str]:
    """Warnings when a split is too small to rank strategies (validation) or to measure them (test)."""
    out = []
    if n_val < MIN_ROWS_PER_FOLD * cv:
        out.append(
            f"the validation split has {n_val} rows: {cv}-fold cross-validation needs at least "
            f"{MIN_ROWS_PER_FOLD * cv} ({MIN_ROWS_PER_FOLD} per fold) to rank strategies; the ranking is unreliable"
        )
    if n_test < MIN_TEST_ROWS:
        out.append(
            f"the test split has {n_test} rows: at least {MIN_TEST_ROWS} are needed for its accuracy to mean much"
        )
    return out


def _unseen_class_warnings(val_preds: PredictionSet, y_val: np.ndarray, y_test: np.ndarray) -> list[str]:
    """A warning when test holds classes that validation lacks (strategies are fitted on validation)."""
    if val_preds.task != "classification":
        return []
    in_test = set(np.unique(y_test).tolist())
    labels = list(val_preds.classes) if val_preds.classes is not None else list(range(val_preds.n_outputs))
    missing = [labels[i] for i in sorted(in_test - set(np.unique(y_val).tolist()))]
    if not missing:
        return []
    shown = ", ".join(repr(c.item() if hasattr(c, "item") else c) for c in missing)
    return [
        f"class(es) {shown} appear in the test split but not in validation: strategies fitted on validation "
        "labels (stacking) never predict them and cross-validation cannot rank strategies on them; give the "
        "validation split samples of every class"
    ]


def _drop_zero_weight_members(
    strategy: Any, members: list[Member], val_preds: PredictionSet, y: Any, member_rows: list[dict[str, Any]]
) -> tuple[Any, list[Member], str | None]:
    """Leave out of the bundle the members a weighted-mean strategy gives zero weight.

    Greedy selection, optimised and fixed weights combine as a weighted mean, so members with
    weight 0 change nothing: the bundle keeps the others, with the same weights (stored as a
    :class:`~modelfusion.strategies.WeightedAverage`), and never runs, exports or loads the rest.
    Returns the strategy, the members and a note with what that saves (None when nothing is dropped).
    """
    from modelfusion.strategies import GreedySelection, OptimizedWeights, WeightedAverage

    weights = getattr(strategy, "weights_", None)
    if not isinstance(strategy, (GreedySelection, OptimizedWeights, WeightedAverage)) or weights is None:
        return strategy, members, None
    kept = {n: float(w) for n, w in zip(strategy.names_, np.asarray(weights)) if w > 1e-12}
    if len(kept) == len(strategy.names_):
        return strategy, members, None
    dropped = [n for n in strategy.names_ if n not in kept]
    rows = {r["name"]: r for r in member_rows}
    ms = sum(rows[n].get("latency_ms") or 0.0 for n in dropped)
    size = sum(rows[n].get("file_size") or 0 for n in dropped)
    pruned = WeightedAverage(weights=kept).fit(val_preds.subset(list(kept)), y)
    note = (
        f"{type(strategy).__name__} gives {', '.join(dropped)} zero weight, so the bundle leaves them out: it runs "
        f"{len(kept)} of {len(strategy.names_)} members, saving {ms:.3f} ms per sample"
        + (f" and {size / 1024:.0f} KB of member files" if size else "")
        + "."
    )
    return pruned, [m for m in members if m.name in kept], note


def _latency_on_bundle_engine(
    strategy_rows: list[dict[str, Any]], chosen: str, deployment: list[dict[str, Any]]
) -> str | None:
    """Give the chosen row the latency of the engine the bundle runs on (its fused ONNX graph), and say so.

    The other strategies were only run eagerly (members one by one, then the rule): their
    latency stays the eager one. Returns the report's note, or None without an exported graph.
    """
    graph = next((r for r in deployment if r.get("name") == "ONNX fp32" and r.get("latency_ms")), None)
    row = next((r for r in strategy_rows if r["name"] == chosen), None)
    if graph is None or row is None:
        return None
    eager = row.get("latency_ms")
    row["latency_ms"], row["engine"] = graph["latency_ms"], "onnx"
    return (
        f"Latency of {chosen}: {graph['latency_ms']:.3f} ms per sample on its fused ONNX graph (ONNX Runtime, the "
        f"engine the bundle uses)"
        + (f", against {eager:.3f} ms run eagerly" if eager else "")
        + "; the other strategies' latencies are eager (members one by one, then the rule)."
    )


def _data_summary(val: Any, test: Any) -> dict[str, Any]:
    """What the report's Data section says: rows, features, columns left out, class balance."""
    X = getattr(val, "X", None)
    summary: dict[str, Any] = {"validation_rows": len(val), "test_rows": len(test)}
    if isinstance(X, np.ndarray) and X.ndim == 2:
        summary["features"] = int(X.shape[1])
    dropped = (getattr(val, "meta", None) or {}).get("dropped_columns")
    if dropped:
        summary["dropped_columns"] = list(dropped)
    y = getattr(val, "y", None)
    if y is not None and np.asarray(y).ndim == 1 and np.asarray(y).dtype.kind in "iuUSb":
        labels, counts = np.unique(np.asarray(y), return_counts=True)
        summary["class_counts"] = {str(k): int(c) for k, c in zip(labels, counts)}
    return summary


def _add_member_cv(member_rows: list[dict[str, Any]], search: Any) -> None:
    """Each member's validation CV score (the search scores members as baselines), beside the strategies'."""
    scored = {
        r["name"]: r for r in search.rows if r.get("kind") == "member" and r.get("status", "ok") == "ok"
    }
    for row in member_rows:
        if row["name"] in scored:
            row["cv_mean"], row["cv_std"] = scored[row["name"]]["mean"], scored[row["name"]]["std"]


def _best_cv_member(member_rows: list[dict[str, Any]], search: Any) -> dict[str, Any]:
    scored = [r for r in member_rows if r.get("cv_mean") is not None]
    pick = max if search.greater_is_better else min
    return pick(scored, key=lambda r: r["cv_mean"])


def _member_beats_fusion(
    member_rows: list[dict[str, Any]],
    strategy_rows: list[dict[str, Any]],
    chosen: str,
    search: Any,
    config: RunConfig,
) -> str | None:
    """A plain sentence when a single member beats every strategy on validation CV, else None."""
    if not any(r.get("cv_mean") is not None for r in member_rows):
        return None
    member = _best_cv_member(member_rows, search)
    strategy = next(r for r in strategy_rows if r["name"] == chosen)
    m, s = member["cv_mean"], strategy["cv_mean"]
    if not (m > s if search.greater_is_better else m < s):
        return None
    then = (
        f"the bundle holds {member['name']!r} alone (fusion.fallback: best_member)"
        if config.fusion.fallback == "best_member"
        else f"the bundle holds {chosen!r} anyway, as fusion.fallback: strategy asks"
    )
    return (
        f"No fusion strategy beats the best single member: {member['name']!r} scores {search.metric} {m:.4f} "
        f"in {config.fusion.cv}-fold validation CV against {s:.4f} for the best strategy ({chosen}); {then}."
    )


def _member_alone(name: str, val_preds: PredictionSet, y: Any) -> Any:
    """The 'strategy' of a bundle that holds one member: its own probabilities (or values)."""
    from modelfusion.strategies import Mean

    return Mean().fit(val_preds.subset([name]), y)


def _split_seed(config: RunConfig) -> int:
    return config.seed if config.data.split.seed is None else config.data.split.seed


def _encode(preds: PredictionSet, y: Any, split: str) -> np.ndarray:
    if y is None:
        raise PredictionError(
            f"the {split} data has no labels; fusion needs a labelled validation and test set"
        )
    return preds.encode_labels(y)


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"output_dir: cannot write to {out} ({e.strerror})", [f"output_dir: {out} is not writable"]
        ) from None
