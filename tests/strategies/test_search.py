"""search_strategies: cross-validated comparison of strategies on validation predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelfusion.errors import StrategyError
from modelfusion.predictions import PredictionSet
from modelfusion.strategies import search as search_module
from modelfusion.strategies.averaging import Mean, Median
from modelfusion.strategies.base import Strategy
from modelfusion.strategies.search import SearchResult, search_strategies
from modelfusion.strategies.selection import GreedySelection
from modelfusion.strategies.weights import OptimizedWeights


class _Memoriser(Strategy):
    """Cheats: one-hot of the fit label for any sample it was fitted on, uniform otherwise."""

    tasks = ("classification",)

    def _needs_labels(self) -> bool:
        return True

    def _fit(self, preds, y):
        self.seen_ = {row.tobytes(): label for row, label in zip(_keys(preds), y, strict=True)}

    def _combine(self, preds):
        out = np.full((preds.n_samples, preds.n_outputs), 1.0 / preds.n_outputs)
        for i, row in enumerate(_keys(preds)):
            label = self.seen_.get(row.tobytes())
            if label is not None:
                out[i] = np.eye(preds.n_outputs)[label]
        return out


def _keys(preds):
    return np.ascontiguousarray(preds.proba.transpose(1, 0, 2))  # one key per sample


class _Broken(Strategy):
    tasks = ("classification",)

    def _fit(self, preds, y):
        raise RuntimeError("meta-learner diverged")


class _RowCounter(Strategy):
    """Records how many rows each fit saw (class-level: search fits clones)."""

    seen: list[int] = []

    def _fit(self, preds, y):
        _RowCounter.seen.append(preds.n_samples)

    def _combine(self, preds):
        return preds.scores.mean(axis=0)


def test_search_never_scores_a_strategy_on_samples_it_was_fitted_on(random_predictions):
    result = search_strategies(random_predictions, strategies=[_Memoriser(), Mean()], cv=5)
    memoriser = next(r for r in result.rows if r["name"] == "_memoriser")
    # Memorised samples would score an NLL of ~0; held-out ones get the uniform log(6).
    assert memoriser["mean"] == pytest.approx(np.log(6), rel=1e-6)
    assert result.best_name == "mean"


def test_search_ranks_rows_by_mean_loss(digits_predictions):
    val, y_val, _, _ = digits_predictions
    result = search_strategies(
        val, y_val, strategies=["mean", "geometric", GreedySelection(ensemble_size=10)]
    )
    means = [r["mean"] for r in result.rows]
    assert means == sorted(means)
    assert [r["rank"] for r in result.rows] == list(range(1, len(result.rows) + 1))


def test_search_ranks_accuracy_highest_first(digits_predictions):
    val, y_val, _, _ = digits_predictions
    result = search_strategies(val, y_val, metric="accuracy", strategies=["mean", "weighted"])
    means = [r["mean"] for r in result.rows]
    assert result.greater_is_better
    assert means == sorted(means, reverse=True)


def test_search_includes_every_member_as_a_baseline_row(digits_predictions):
    val, y_val, _, _ = digits_predictions
    result = search_strategies(val, y_val, strategies=["mean"], cv=3)
    members = {r["name"]: r for r in result.rows if r["kind"] == "member"}
    assert set(members) == set(val.names)
    assert all(len(r["fold_scores"]) == 3 for r in members.values())
    assert set(result.fold_scores) == {"mean"}


def test_search_records_a_failing_strategy_instead_of_raising(random_predictions):
    result = search_strategies(random_predictions, strategies=[_Broken(), Mean()], cv=3)
    broken = next(r for r in result.rows if r["name"] == "_broken")
    assert broken["status"] == "failed" and broken["rank"] is None
    assert "meta-learner diverged" in broken["error"]
    assert result.rows[-1] is broken
    assert result.best_name == "mean"


def test_search_raises_when_every_strategy_fails(random_predictions):
    with pytest.raises(StrategyError, match="every strategy failed.*meta-learner diverged"):
        search_strategies(random_predictions, strategies=[_Broken()], cv=3)


def test_search_fit_best_returns_a_fitted_strategy(digits_predictions):
    val, y_val, test, _ = digits_predictions
    result = search_strategies(val, y_val, strategies=["mean", OptimizedWeights()], cv=3)
    fitted = result.fit_best(val, y_val)
    assert type(fitted) is type(result.best_strategy)
    assert fitted is not result.fit_best(val, y_val)  # a fresh clone every time
    assert fitted.combine(test).shape == (test.n_samples, 10)
    assert not hasattr(result.best_strategy, "names_")  # best_strategy stays unfitted


def test_search_best_strategy_beats_best_member_on_digits_test_split(digits_predictions):
    val, y_val, test, y_test = digits_predictions
    result = search_strategies(val, y_val, metric="nll")
    fused = result.fit_best(val, y_val).combine(test)
    rows = np.arange(len(y_test))
    member_nll = -np.log(np.clip(test.proba[:, rows, y_test], 1e-12, None)).mean(axis=1)
    member_acc = (test.proba.argmax(axis=2) == y_test).mean(axis=1)
    assert -np.log(np.clip(fused[rows, y_test], 1e-12, None)).mean() < member_nll.min()
    assert (fused.argmax(axis=1) == y_test).mean() >= member_acc.max() - 0.01


def test_search_skips_strategies_that_do_not_support_the_task(regression_predictions):
    preds, y = regression_predictions
    result = search_strategies(preds, y, strategies=["mean", "geometric", Median()], cv=3)
    assert result.metric == "rmse"
    skipped = next(r for r in result.rows if r["name"] == "geometric")
    assert skipped["status"] == "skipped" and "regression" in skipped["error"]
    ran = {r["name"] for r in result.rows if r["status"] == "ok" and r["kind"] == "strategy"}
    assert ran == {"mean", "median"}


def test_search_auto_on_regression_runs_the_regression_candidates(regression_predictions):
    preds, y = regression_predictions
    result = search_strategies(preds, y, cv=3)
    names = {r["name"] for r in result.rows if r["kind"] == "strategy"}
    assert {"mean", "median", "weighted", "greedy", "optimized"} <= names
    assert all(r["status"] == "ok" for r in result.rows)


def test_search_fits_costly_strategies_on_a_capped_subsample(random_predictions, monkeypatch):
    monkeypatch.setattr(search_module, "COSTLY_STRATEGIES", frozenset({"_rowcounter"}))
    _RowCounter.seen.clear()
    search_strategies(random_predictions, strategies=[_RowCounter()], cv=3, max_fit_rows=50)
    assert _RowCounter.seen == [50, 50, 50]


def test_search_subsample_keeps_class_shares():
    y = np.repeat([0, 1, 2], [600, 300, 100])
    rows = search_module._subsample(y, 100, np.random.default_rng(0), stratify=True)
    assert len(np.unique(rows)) == 100
    assert np.bincount(y[rows]).tolist() == [60, 30, 10]


def test_search_result_renders_as_markdown_dict_and_repr(random_predictions):
    result = search_strategies(random_predictions, strategies=["mean", _Broken()], cv=3)
    assert isinstance(result, SearchResult)
    table = result.to_markdown()
    assert table.splitlines()[0].startswith("| rank | name")
    assert "meta-learner diverged" in table
    assert json.loads(json.dumps(result.to_dict()))["best_name"] == "mean"
    assert "best='mean'" in repr(result)


def test_search_needs_labels(random_predictions):
    with pytest.raises(StrategyError, match="pass y"):
        search_strategies(PredictionSet(random_predictions.proba), strategies=["mean"])


def test_search_rejects_a_metric_for_another_task(regression_predictions):
    preds, y = regression_predictions
    with pytest.raises(StrategyError, match="does not apply to regression"):
        search_strategies(preds, y, metric="accuracy", strategies=["mean"])


def test_search_runs_on_a_capped_subsample_of_a_large_validation_set(random_predictions):
    result = search_strategies(random_predictions, strategies=["mean"], cv=3, max_rows=120)
    assert result.n_samples == 120
    members = [r for r in result.rows if r["kind"] == "member"]
    assert len(members) == random_predictions.n_members


def test_search_handles_multilabel_predictions():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=(120, 3))
    logits = rng.normal(size=(3, 120, 3)) + 1.5 * (2 * y - 1)
    preds = PredictionSet(1 / (1 + np.exp(-logits)), task="multilabel")
    result = search_strategies(preds, y, strategies=["mean", GreedySelection(ensemble_size=5), "rank"], cv=3)
    assert {r["status"] for r in result.rows} == {"ok"}
    assert result.metric == "nll"


def test_search_lightens_default_gating_and_stacking_on_capped_folds():
    from modelfusion.strategies.gating import Gating
    from modelfusion.strategies.stacking import Stacking

    gating, stacking = Gating(epochs=200), Stacking(cv=5)
    search_module._lighten(gating)
    search_module._lighten(stacking)
    assert gating.epochs == search_module.CAPPED_GATING_EPOCHS
    assert stacking.cv is None
