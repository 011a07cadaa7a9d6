"""The stages of a run, each alone, on prediction sets built in the test (no model runs): typed rows in, typed rows out."""

from __future__ import annotations

import numpy as np
import pytest

from modelfusion.columns import format_value
from modelfusion.config import parse_config
from modelfusion.data.dataset import Dataset
from modelfusion.plan import RunPlan
from modelfusion.predictions import PredictionSet
from modelfusion.rows import DeploymentRow, MemberRow, StrategyRow
from modelfusion.stages import (
    Scored,
    choose,
    drop_zero_weight_members,
    evaluate_members,
    evaluate_strategies,
    latency_on_bundle_engine,
    search,
)
from modelfusion.strategies import GreedySelection, Mean


class _Named:
    """Just a member's name: what choose() and the pruning keep or drop."""

    def __init__(self, name: str):
        self.name = name


def _scored(n_val: int = 300, n_test: int = 300, seed: int = 0) -> Scored:
    """Three members on a 3-class task: 'good' is right 90% of the time, 'noisy' 60%, 'bad' 34%."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple[PredictionSet, np.ndarray]:
        y = rng.integers(0, 3, n)
        outs = []
        for hit in (0.9, 0.6, 0.34):
            right = rng.random(n) < hit
            guess = np.where(right, y, (y + rng.integers(1, 3, n)) % 3)
            p = np.full((n, 3), 0.1)
            p[np.arange(n), guess] = 0.8
            outs.append(p)
        meta = {
            m: {"framework": "sklearn", "latency_ms_per_sample": 0.01, "file_size": 1024}
            for m in ("good", "noisy", "bad")
        }
        return PredictionSet(outs, names=["good", "noisy", "bad"], classes=[0, 1, 2], metadata=meta), y

    (vp, yv), (tp, yt) = split(n_val), split(n_test)
    return Scored(
        Dataset(np.zeros((n_val, 2)), yv),
        Dataset(np.zeros((n_test, 2)), yt),
        vp,
        tp,
        vp.encode_labels(yv),
        tp.encode_labels(yt),
    )


@pytest.fixture
def plan_for(tmp_path):
    """A RunPlan for given fusion settings (members are not needed by the stages under test)."""
    (tmp_path / "x.skops").write_bytes(b"")

    def make(strategies, **fusion) -> RunPlan:
        config = parse_config(
            {
                "data": {"source": "builtin:digits"},
                "members": [{"path": "x.skops"}],
                "fusion": {"strategies": strategies, "cv": 3, **fusion},
                "output_dir": "out",
            },
            base_dir=tmp_path,
        )
        from modelfusion.strategies import get_strategy

        built = [
            get_strategy(s) if isinstance(s, str) else get_strategy(s["name"], **s["params"])
            for s in strategies
        ]
        return RunPlan(config, tmp_path / "out", None, [], [], built, config.fusion.metric)

    return make


def test_evaluate_members_returns_one_typed_row_per_member_with_its_cost():
    rows = evaluate_members(_scored())
    assert [type(r) for r in rows] == [MemberRow] * 3 and [r.name for r in rows] == ["good", "noisy", "bad"]
    assert rows[0].metrics["accuracy"] > 0.85 > rows[1].metrics["accuracy"] > rows[2].metrics["accuracy"]
    assert rows[0].latency_ms == 0.01 and rows[0].file_size == 1024
    assert (
        dict(rows[0])["accuracy"] == rows[0]["accuracy"] == rows[0].metrics["accuracy"]
    )  # also a flat record


def test_search_then_evaluate_strategies_gives_each_a_test_row_and_members_their_cv(plan_for):
    scored = _scored()
    members = evaluate_members(scored)
    result = search(plan_for(["mean", "greedy"]), scored, members, progress=False)
    assert all(r.cv_mean is not None for r in members)  # the members' CV scores, beside the strategies'
    evaluated = evaluate_strategies(result, scored, members)
    assert {r.name for r in evaluated.rows} == {"mean", "greedy"}
    greedy = next(r for r in evaluated.rows if r.name == "greedy")
    assert (
        isinstance(greedy, StrategyRow) and greedy.metrics["accuracy"] >= 0.85 and greedy.n_members_used >= 1
    )
    assert set(evaluated.scores) == set(evaluated.fitted) == {"mean", "greedy"}


def test_choose_ships_the_best_member_alone_when_it_beats_every_strategy(plan_for):
    scored = _scored()
    members = evaluate_members(scored)
    plan = plan_for(["mean"])  # the mean of one good and two poor members loses to the good one
    result = search(plan, scored, members, progress=False)
    evaluated = evaluate_strategies(result, scored, members)
    choice = choose(plan, result, scored, members, evaluated, [_Named(n) for n in ("good", "noisy", "bad")])
    assert choice.name == "good alone" and [m.name for m in choice.members] == ["good"]
    assert "No fusion strategy beats the best single member: 'good'" in choice.notice
    row = evaluated.rows[-1]
    assert (row.name, row.kind, row.n_members_used) == ("good alone", "member alone", 1)


def test_choose_keeps_the_strategy_when_the_fallback_says_so(plan_for):
    scored = _scored()
    members = evaluate_members(scored)
    plan = plan_for(["mean"], fallback="strategy")
    result = search(plan, scored, members, progress=False)
    evaluated = evaluate_strategies(result, scored, members)
    choice = choose(plan, result, scored, members, evaluated, [_Named(n) for n in ("good", "noisy", "bad")])
    assert choice.name == "mean" and len(choice.members) == 3 and "anyway" in choice.notice


def test_zero_weight_members_are_dropped_with_what_that_saves():
    scored = _scored()
    greedy = GreedySelection(ensemble_size=5, random_state=0).fit(scored.val_preds, scored.val.y)
    assert greedy.weights_[2] == 0  # 'bad' is never selected
    rows = evaluate_members(scored)
    strategy, kept, note = drop_zero_weight_members(
        greedy, [_Named(n) for n in ("good", "noisy", "bad")], scored, rows
    )
    assert [m.name for m in kept] == ["good"] and type(strategy).__name__ == "WeightedAverage"
    assert (
        "gives noisy, bad zero weight" in note
        and "runs 1 of 3 members" in note
        and "2 KB of member files" in note
    )
    np.testing.assert_allclose(
        strategy.combine(scored.test_preds.subset(strategy.names_)), greedy.combine(scored.test_preds)
    )
    mean = Mean().fit(scored.val_preds)
    assert drop_zero_weight_members(mean, [], scored, rows) == (mean, [], None)


def test_the_chosen_row_takes_the_latency_of_the_bundles_onnx_graph():
    rows = [
        StrategyRow("mean", 0.3, 0.01, {"accuracy": 0.9}, latency_ms=0.32),
        StrategyRow("vote", 0.4, 0.01, {}, 0.3),
    ]
    graph = DeploymentRow("ONNX fp32", "fused.onnx", 729_000, {"accuracy": 0.9}, latency_ms=0.02)
    note = latency_on_bundle_engine(rows, "mean", [graph])
    assert (rows[0].latency_ms, rows[0].engine, rows[1].latency_ms) == (0.02, "onnx", 0.3)
    assert "0.020 ms per sample on its fused ONNX graph" in note and "against 0.320 ms run eagerly" in note
    assert latency_on_bundle_engine(rows, "mean", []) is None


def test_a_deployment_record_becomes_a_typed_row_that_prints_like_the_report():
    record = {
        "name": "int8 (dynamic)",
        "file": "fused.int8.onnx",
        "file_size": 297_882,
        "accuracy": 0.98,
        "nll": 0.09,
        "latency_ms": 0.018,
        "size_ratio": 2.45,
        "speedup": 1.07,
        "delta_pp": 0.23,
        "extra_key": 1,
    }
    row = DeploymentRow.from_record(record)
    assert row.metrics == {"accuracy": 0.98, "nll": 0.09} and row.extra == {"extra_key": 1}
    assert dict(row) == record
    cells = [
        format_value(k, row.get(k))
        for k in ("file_size", "size_ratio", "accuracy", "latency_ms", "speedup", "delta_pp")
    ]
    assert cells == ["290.9 KB", "2.45×", "98.00%", "0.018", "1.07×", "+0.23 pp"]
