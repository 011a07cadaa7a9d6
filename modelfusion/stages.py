"""The stages of ``modelfusion run``, in order; each takes what the one before produced and returns typed rows.

load data -> load members -> score -> evaluate members -> search -> evaluate strategies ->
choose -> build the model -> export -> report. :func:`~modelfusion.workflow.run_fusion`
runs them under one lock and one staging folder; each is usable (and tested) alone.

Examples
--------
>>> plan = plan_run(config)
>>> scored = score(plan, load_members(plan), *load_data(plan))
>>> [row.name for row in evaluate_members(scored)]
['cnn', 'mlp', 'logreg']
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from modelfusion.bundle import library_versions, read_manifest
from modelfusion.config import RunConfig, config_record
from modelfusion.data.dataset import Dataset
from modelfusion.data.datasets import load_dataset, source_id
from modelfusion.data.splits import split_dataset
from modelfusion.errors import (
    ConfigError,
    MemberFileNotFoundError,
    MemberLoadError,
    ModelFusionError,
    PredictionError,
)
from modelfusion.evaluation.metrics import evaluate
from modelfusion.fused import FusedModel
from modelfusion.importpath import importable_from
from modelfusion.inputs import input_record
from modelfusion.members.base import Member
from modelfusion.members.loading import load_member
from modelfusion.plan import MemberStep, RunPlan
from modelfusion.predictions import PredictionSet, score_members
from modelfusion.report import FusionReport
from modelfusion.rows import DeploymentRow, MemberRow, StrategyRow
from modelfusion.runtime.deployment import iter_deployment
from modelfusion.strategies import GreedySelection, Mean, OptimizedWeights, WeightedAverage
from modelfusion.strategies.base import Strategy
from modelfusion.strategies.search import SearchResult, search_strategies

#: Rows per cross-validation fold below which strategy rankings are noise; and test rows likewise.
MIN_ROWS_PER_FOLD = 10
MIN_TEST_ROWS = 30


@dataclass
class Scored:
    """The data of a run and every member's cached outputs on it, labels encoded."""

    val: Dataset
    test: Dataset
    val_preds: PredictionSet
    test_preds: PredictionSet
    y_val: np.ndarray
    y_test: np.ndarray
    warnings: list[str] = field(default_factory=list)


@dataclass
class Evaluated:
    """Each strategy that ran, fitted on validation and scored on test."""

    rows: list[StrategyRow]
    scores: dict[str, np.ndarray]
    fitted: dict[str, Strategy]


@dataclass
class Choice:
    """What the bundle holds: the chosen name, its (possibly pruned) strategy and members, and why."""

    name: str
    strategy: Strategy
    members: list[Member]
    #: set when a single member beat every strategy on validation CV
    notice: str | None = None
    #: set when zero-weight members were left out of the bundle
    pruned: str | None = None


@dataclass
class Deployment:
    """The ``deploy:`` section's graphs, the report's notes on them, and what failed."""

    rows: list[DeploymentRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# -- load -------------------------------------------------------------------------------------


def load_data(plan: RunPlan) -> tuple[Dataset, Dataset]:
    """The validation and test datasets (one source split by the config's fractions and seed, or two)."""
    d = plan.config.data
    if d.source is None:  # the config validator guarantees both separate sets then
        return load_section(plan, d.validation), load_section(plan, d.test)
    parts = _split(plan)
    return parts["validation"], parts["test"]


def load_train_data(plan: RunPlan) -> Dataset:
    """The ``train`` part of the split (what the members were trained on; validation and test excluded)."""
    if plan.config.data.source is None:
        raise ConfigError(
            "the data has separate validation and test sets, so it has no train part",
            ["data: no train part"],
        )
    return _split(plan)["train"]


def load_section(plan: RunPlan, section: Any) -> Dataset:
    """The dataset one data section of the config (``source``, ``format``, ``label``...) names."""
    return load_dataset(
        section.source,
        format=section.format,
        label=section.label,
        features=section.features,
        base_dir=plan.config.base_dir,
        **section.options,
    )


def _split(plan: RunPlan) -> dict[str, Dataset]:
    d = plan.config.data
    s = d.split
    return split_dataset(
        load_section(plan, d.as_source()),
        validation=s.validation,
        test=s.test,
        seed=split_seed(plan.config),
        stratify=s.stratify,
    )


def load_members(plan: RunPlan) -> list[Member]:
    """Every member the plan lists, with its preprocessing."""
    return [load_planned_member(step, plan.config.base_dir) for step in plan.members]


def load_planned_member(step: MemberStep, base_dir: Path) -> Member:
    """The member a plan's step describes; errors name its config entry."""
    m = step.config
    try:
        with importable_from(base_dir):  # architecture factories next to the config (pipelines/)
            member = load_member(
                step.source,
                framework=m.framework,
                name=m.name,
                trust=m.trust,
                preprocess=step.preprocess,
                **step.options,
            )
    except ModelFusionError as e:
        raise type(e)(f"{step.label}: {e}") from e
    except FileNotFoundError as e:
        raise MemberFileNotFoundError(f"{step.label}: {e}") from e
    except (ValueError, TypeError, KeyError, OSError, ImportError) as e:  # the framework's word on the file
        raise MemberLoadError(f"{step.label}: {type(e).__name__}: {e}") from e
    member.preprocess_spec = m.preprocess
    return member


# -- score and evaluate -------------------------------------------------------------------------


def score(
    plan: RunPlan, members: list[Member], val: Dataset, test: Dataset, *, progress: bool | None = None
) -> Scored:
    """Every member on both splits, through the cache; labels checked and encoded, small splits warned about."""
    config = plan.config
    preds = [
        score_members(
            members, d.X, y=d.y, batch_size=config.batch_size, cache_dir=plan.cache_dir, progress=progress
        )
        for d in (val, test)
    ]
    if config.task and config.task != preds[0].task:
        raise ConfigError(
            f"task: config says {config.task!r} but the members do {preds[0].task!r}",
            [f"task: members do {preds[0].task}"],
        )
    y_val = _encode(preds[0], val.y, "validation")  # fail early on missing or unknown labels
    y_test = _encode(preds[1], test.y, "test")
    warnings = [
        *small_split_warnings(len(val), len(test), config.fusion.cv),
        *unseen_class_warnings(preds[0], y_val, y_test),
    ]
    return Scored(val, test, preds[0], preds[1], y_val, y_test, warnings)


def evaluate_members(scored: Scored) -> list[MemberRow]:
    """Each member on the test split, with its latency, size and parameter count."""
    preds = scored.test_preds
    rows = []
    for i, name in enumerate(preds.names):
        meta = preds.metadata[name]
        rows.append(
            MemberRow(
                name,
                meta.get("framework"),
                evaluate(scored.y_test, preds.scores[i], preds.task),
                latency_ms=meta.get("latency_ms_per_sample"),
                n_parameters=meta.get("n_parameters"),
                file_size=meta.get("file_size"),
            )
        )
    return rows


def search(
    plan: RunPlan, scored: Scored, member_rows: list[MemberRow], *, progress: bool | None = None
) -> SearchResult:
    """Strategies ranked by K-fold CV on validation; each member's CV score is added to its row."""
    fusion = plan.config.fusion
    # Strategies take the raw labels (they map them to the members' classes themselves).
    result = search_strategies(
        scored.val_preds,
        scored.val.y,
        metric=plan.metric,
        strategies=plan.strategies,
        cv=fusion.cv,
        random_state=plan.config.seed,
        progress=progress,
    )
    cv = {r["name"]: r for r in result.rows if r.get("kind") == "member" and r.get("status", "ok") == "ok"}
    for row in member_rows:
        if row.name in cv:
            row.cv_mean, row.cv_std = cv[row.name]["mean"], cv[row.name]["std"]
    return result


def evaluate_strategies(result: SearchResult, scored: Scored, member_rows: list[MemberRow]) -> Evaluated:
    """Each strategy that ran in the search, fitted on all of validation and scored once on test."""
    member_latency = sum(r.latency_ms or 0.0 for r in member_rows)
    evaluated = Evaluated([], {}, {})
    for row in result.rows:
        if row.get("kind") != "strategy" or row.get("status", "ok") != "ok":
            continue
        name = row["name"]
        strategy = result.strategy(name).fit(scored.val_preds, scored.val.y)
        start = time.perf_counter()
        fused = strategy.combine(scored.test_preds)
        combine_ms = 1000 * (time.perf_counter() - start) / max(len(scored.test), 1)
        weights = getattr(strategy, "weights_", None)
        used = int(np.count_nonzero(np.asarray(weights) > 1e-9)) if weights is not None else len(member_rows)
        metrics = evaluate(scored.y_test, fused, scored.test_preds.task)
        evaluated.rows.append(
            StrategyRow(name, row["mean"], row["std"], metrics, member_latency + combine_ms, used)
        )
        evaluated.scores[name], evaluated.fitted[name] = fused, strategy
    return evaluated


# -- choose and build ---------------------------------------------------------------------------


def choose(
    plan: RunPlan,
    result: SearchResult,
    scored: Scored,
    member_rows: list[MemberRow],
    evaluated: Evaluated,
    members: list[Member],
) -> Choice:
    """The search's best strategy, or the best member alone when it beats every strategy (``fusion.fallback``);
    members a weighted mean gives zero weight are left out."""
    name, kept = result.best_name, members
    notice = member_beats_fusion(member_rows, evaluated.rows, name, result, plan.config)
    if notice is not None and plan.config.fusion.fallback == "best_member":
        best = best_cv_member(member_rows, result)
        name, kept = f"{best.name} alone", [m for m in members if m.name == best.name]
        alone = Mean().fit(scored.val_preds.subset([best.name]), scored.val.y)
        evaluated.fitted[name] = alone
        evaluated.scores[name] = alone.combine(scored.test_preds.subset([best.name]))
        metrics = evaluate(scored.y_test, evaluated.scores[name], scored.test_preds.task)
        evaluated.rows.append(
            StrategyRow(name, best.cv_mean, best.cv_std, metrics, best.latency_ms, 1, kind="member alone")
        )
    strategy, kept, pruned = drop_zero_weight_members(evaluated.fitted[name], kept, scored, member_rows)
    return Choice(name, strategy, kept, notice, pruned)


def build_model(plan: RunPlan, choice: Choice, scored: Scored, evaluated: Evaluated) -> FusedModel:
    """The fused model the bundle holds, with what later commands need to know in its metadata."""
    config = plan.config
    record = config_record(config)  # ${VAR} values unexpanded: no secret is written
    chosen_row = next(r for r in evaluated.rows if r.name == choice.name)
    metadata = {
        "config_name": config.name,
        "metric": config.fusion.metric,
        "chosen": choice.name,
        "test_metrics": chosen_row.record(),
        # feature names and sample shape: later data is checked and reordered against them
        "inputs": input_record(scored.val.X, getattr(scored.val, "feature_names", None)),
        # lets `evaluate --split test` reuse exactly this split
        "data": {
            **record["data"],
            "split": {**record["data"]["split"], "seed": split_seed(config)},
            "source_id": None
            if config.data.source is None
            else source_id(config.data.source, config.base_dir),
        },
    }
    if choice.notice is not None:
        metadata["fallback"] = {"notice": choice.notice, "policy": config.fusion.fallback}
    return FusedModel(choice.members, choice.strategy, metadata=metadata)


# -- export and report --------------------------------------------------------------------------


def export(plan: RunPlan, model: FusedModel, bundle_dir: Path, scored: Scored) -> Deployment:
    """The ``deploy:`` section: export and quantize into the bundle, measured on test (and validation).

    A graph that cannot be written (a member with no ONNX form, a converter or ONNX Runtime
    failing) is not a failed run: the rows measured before it are kept and a warning says
    which step failed, why, and which graphs the bundle holds.
    """

    deploy, config = plan.config.deploy, plan.config
    if not deploy.wanted:
        return Deployment()
    rows: list[DeploymentRow] = []
    val, test = scored.val, scored.test
    try:
        for record in iter_deployment(
            model,
            bundle_dir,
            (val.X, val.y),
            (test.X, test.y),
            quantize=deploy.quantize,
            fp16=deploy.fp16,
            batch_size=config.batch_size,
        ):
            rows.append(DeploymentRow.from_record(record))
    except Exception as exc:  # a converter or ONNX Runtime failing must not fail the fusion run
        graphs = sorted(
            f for f in read_manifest(bundle_dir)[0].get("checksums", {}) if f.startswith("fused.")
        )
        held = f"the bundle holds {', '.join(graphs)}" if graphs else "no ONNX graph was written"
        reason = str(exc) if isinstance(exc, ModelFusionError) else f"{type(exc).__name__}: {exc}"
        failed = [f"deploy: {plan.deploy_steps[len(rows)]} failed: {reason}; {held}"]
        return Deployment(rows, deploy_notes(rows, config.batch_size, len(test)), failed)
    return Deployment(rows, deploy_notes(rows, config.batch_size, len(test)))


def build_report(
    plan: RunPlan,
    scored: Scored,
    member_rows: list[MemberRow],
    evaluated: Evaluated,
    choice: Choice,
    result: SearchResult,
    deployment: Deployment,
    notes: list[str],
) -> Any:
    """The :class:`~modelfusion.report.FusionReport` of the run, from the rows the stages returned."""

    config, preds = plan.config, scored.test_preds
    fitted = evaluated.fitted[choice.name]
    learned = fitted.member_weights(scored.val_preds.subset(fitted.names_))  # zeros included
    weight_map, weight_meaning = learned if learned is not None else (None, None)
    return FusionReport(
        title=config.report.title or f"modelfusion: {config.name}",
        task=preds.task,
        metric=config.fusion.metric,
        class_names=[str(c) for c in (preds.classes if preds.classes is not None else [])],
        members=member_rows,
        strategies=evaluated.rows,
        chosen=choice.name,
        weights=weight_map,
        y_test=scored.y_test,
        member_scores=np.asarray(preds.scores),
        member_names=list(preds.names),
        strategy_scores=evaluated.scores,
        fold_scores=result.fold_scores,
        config=config_record(config),
        deployment=deployment.rows,
        data_summary=data_summary(scored.val, scored.test),
        versions=library_versions(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        notes=[
            *([choice.notice] if choice.notice else []),
            *([choice.pruned] if choice.pruned else []),
            *([f"Weights chart ({choice.name}): {weight_meaning}."] if weight_meaning else []),
            *notes,
        ],
    )


# -- the rules the stages apply -------------------------------------------------------------------


def split_seed(config: RunConfig) -> int:
    """The seed of the validation/test split: ``data.split.seed``, else the run's seed."""
    return config.seed if config.data.split.seed is None else config.data.split.seed


def _encode(preds: PredictionSet, y: Any, split: str) -> np.ndarray:
    if y is None:
        raise PredictionError(
            f"the {split} data has no labels; fusion needs a labelled validation and test set"
        )
    return preds.encode_labels(y)


def small_split_warnings(n_val: int, n_test: int, cv: int) -> list[str]:
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


def unseen_class_warnings(val_preds: PredictionSet, y_val: np.ndarray, y_test: np.ndarray) -> list[str]:
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


def best_cv_member(member_rows: list[MemberRow], result: SearchResult) -> MemberRow:
    """The member with the best validation CV score."""
    scored = [(r.cv_mean, i, r) for i, r in enumerate(member_rows) if r.cv_mean is not None]
    pick = max if result.greater_is_better else min
    return pick(scored, key=lambda t: t[0])[2]


def member_beats_fusion(
    member_rows: list[MemberRow],
    strategy_rows: list[StrategyRow],
    chosen: str,
    result: SearchResult,
    config: RunConfig,
) -> str | None:
    """A plain sentence when a single member beats every strategy on validation CV, else None."""
    if not any(r.cv_mean is not None for r in member_rows):
        return None
    member = best_cv_member(member_rows, result)
    strategy = next(r for r in strategy_rows if r.name == chosen)
    m, s = member.cv_mean, strategy.cv_mean
    assert m is not None and s is not None
    if not (m > s if result.greater_is_better else m < s):
        return None
    then = (
        f"the bundle holds {member.name!r} alone (fusion.fallback: best_member)"
        if config.fusion.fallback == "best_member"
        else f"the bundle holds {chosen!r} anyway, as fusion.fallback: strategy asks"
    )
    return (
        f"No fusion strategy beats the best single member: {member.name!r} scores {result.metric} {m:.4f} "
        f"in {config.fusion.cv}-fold validation CV against {s:.4f} for the best strategy ({chosen}); {then}."
    )


def drop_zero_weight_members(
    strategy: Strategy, members: list[Member], scored: Scored, member_rows: list[MemberRow]
) -> tuple[Strategy, list[Member], str | None]:
    """Leave out of the bundle the members a weighted-mean strategy gives zero weight.

    Greedy selection, optimised and fixed weights combine as a weighted mean, so members with
    weight 0 change nothing: the bundle keeps the others, with the same weights (stored as a
    :class:`~modelfusion.strategies.WeightedAverage`), and never runs, exports or loads the rest.
    Returns the strategy, the members and a note with what that saves (None when nothing is dropped).
    """
    weights = getattr(strategy, "weights_", None)
    if not isinstance(strategy, (GreedySelection, OptimizedWeights, WeightedAverage)) or weights is None:
        return strategy, members, None
    kept = {n: float(w) for n, w in zip(strategy.names_, np.asarray(weights)) if w > 1e-12}
    if len(kept) == len(strategy.names_):
        return strategy, members, None
    dropped = [n for n in strategy.names_ if n not in kept]
    rows = {r.name: r for r in member_rows}
    ms = sum(rows[n].latency_ms or 0.0 for n in dropped)
    size = sum(rows[n].file_size or 0 for n in dropped)
    pruned = WeightedAverage(weights=kept).fit(scored.val_preds.subset(list(kept)), scored.val.y)
    note = (
        f"{type(strategy).__name__} gives {', '.join(dropped)} zero weight, so the bundle leaves them out: it runs "
        f"{len(kept)} of {len(strategy.names_)} members, saving {ms:.3f} ms per sample"
        + (f" and {size / 1024:.0f} KB of member files" if size else "")
        + "."
    )
    return pruned, [m for m in members if m.name in kept], note


def latency_on_bundle_engine(
    strategy_rows: list[StrategyRow], chosen: str, deployment: list[DeploymentRow]
) -> str | None:
    """Give the chosen row the latency of the engine the bundle runs on (its fused ONNX graph), and say so.

    The other strategies were only run eagerly (members one by one, then the rule): their
    latency stays the eager one. Returns the report's note, or None without an exported graph.
    """
    graph = next((r for r in deployment if r.name == "ONNX fp32" and r.latency_ms), None)
    row = next((r for r in strategy_rows if r.name == chosen), None)
    if graph is None or row is None:
        return None
    eager = row.latency_ms
    row.latency_ms, row.engine = graph.latency_ms, "onnx"
    return (
        f"Latency of {chosen}: {graph.latency_ms:.3f} ms per sample on its fused ONNX graph (ONNX Runtime, the "
        f"engine the bundle uses)"
        + (f", against {eager:.3f} ms run eagerly" if eager else "")
        + "; the other strategies' latencies are eager (members one by one, then the rule)."
    )


def deploy_notes(rows: list[DeploymentRow], batch_size: int, n_test: int) -> list[str]:
    """The report's notes on the Deployment table (none without rows)."""
    if not rows:
        return []
    notes = [
        f"Deployment: accuracy of each exported graph on the test split; the manifest records the "
        f"change on validation too. Latency on this machine's CPU with ONNX Runtime at batch "
        f"{min(batch_size, n_test)}."
    ]
    grown = [r.name for r in rows if r.size_ratio < 1.0]
    if grown:
        notes.append(f"Deployment: {', '.join(grown)} came out larger than the fp32 graph.")
    return notes


def data_summary(val: Any, test: Any) -> dict[str, Any]:
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
