"""Honest results from the command line: a member that beats every strategy is said so and shipped alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from modelfusion.cli.app import _register, app

_register()
runner = CliRunner()


@pytest.fixture(scope="module")
def regression_members(tmp_path_factory):
    """A ridge regression and a poor torch regressor (a .pt2) on diabetes: the ridge beats any mix."""
    import skops.io
    import torch
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    root = tmp_path_factory.mktemp("regression")
    X, y = load_diabetes(return_X_y=True)
    skops.io.dump(Ridge(alpha=0.1).fit(X, y), root / "ridge.skops")
    torch.manual_seed(0)
    net = torch.nn.Linear(10, 1)
    program = torch.export.export(
        net, (torch.zeros(2, 10, dtype=torch.float32),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, root / "net.pt2")
    return root


def _regression_run(root: Path, out: str, **fusion):
    config = {
        "task": "regression",
        "data": {"source": "builtin:diabetes"},
        "members": [{"path": "ridge.skops"}, {"path": "net.pt2", "options": {"output_kind": "values"}}],
        "fusion": {"strategies": ["mean"], "metric": "rmse", **fusion},
        "output_dir": out,
        "cache_dir": None,
    }
    (root / f"{out}.yaml").write_text(yaml.safe_dump(config))
    return runner.invoke(app, ["run", str(root / f"{out}.yaml")], catch_exceptions=False)


def test_a_member_that_beats_every_strategy_is_shipped_alone_and_said_plainly(regression_members):
    result = _regression_run(regression_members, "alone")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "No fusion strategy beats the best single member: 'ridge'" in text
    assert "the bundle holds 'ridge' alone (fusion.fallback: best_member)" in text
    assert "RMSE" in text and "R²" in text  # regression columns, not dashes
    out = regression_members / "alone"
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert [m["name"] for m in manifest["members"]] == ["ridge"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["chosen"] == "ridge alone"
    assert any("No fusion strategy beats" in n for n in metrics["notes"])


def test_fallback_strategy_keeps_the_best_strategy_and_still_says_so(regression_members):
    result = _regression_run(regression_members, "anyway", fallback="strategy")
    assert result.exit_code == 0, result.output
    assert "holds 'mean' anyway" in " ".join(result.output.split())
    manifest = json.loads((regression_members / "anyway" / "bundle" / "manifest.json").read_text())
    assert [m["name"] for m in manifest["members"]] == ["ridge", "net"]


def test_members_a_weighted_strategy_gives_zero_weight_are_left_out_of_the_bundle(tmp_path):
    import skops.io
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB

    X, y = load_digits(return_X_y=True)
    skops.io.dump(LogisticRegression(max_iter=300).fit(X / 16.0, y), tmp_path / "good.skops")
    skops.io.dump(GaussianNB().fit(X[:60] / 16.0, y[:60]), tmp_path / "poor.skops")
    config = {
        "data": {"source": "builtin:digits"},
        "members": [{"path": "good.skops"}, {"path": "poor.skops"}],
        "fusion": {"strategies": [{"name": "weighted", "params": {"weights": {"good": 1.0, "poor": 0.0}}}]},
        "output_dir": "out",
        "cache_dir": None,
    }
    (tmp_path / "fusion.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["run", str(tmp_path / "fusion.yaml")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "bundle" / "manifest.json").read_text())
    assert [m["name"] for m in manifest["members"]] == ["good"]
    notes = json.loads((tmp_path / "out" / "metrics.json").read_text())["notes"]
    assert any(
        "gives poor zero weight, so the bundle leaves them out: it runs 1 of 2 members" in n for n in notes
    )


def test_a_member_trained_on_fewer_classes_is_noted_in_the_report_and_the_phases_are_timed(tmp_path):
    import skops.io
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    X, y = load_digits(return_X_y=True)
    keep = y != 7
    skops.io.dump(LogisticRegression(max_iter=300).fit(X / 16.0, y), tmp_path / "full.skops")
    skops.io.dump(LogisticRegression(max_iter=300).fit(X[keep] / 16.0, y[keep]), tmp_path / "partial.skops")
    config = {
        "data": {"source": "builtin:digits"},
        "members": [{"path": "full.skops"}, {"path": "partial.skops"}],
        "fusion": {"strategies": ["mean"]},
        "output_dir": "out",
        "cache_dir": None,
    }
    (tmp_path / "fusion.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["run", str(tmp_path / "fusion.yaml")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "warning: member 'partial' was trained without class(es) [7]" in text
    assert "phases: loading data" in text and "scoring" in text and "; total " in text
    notes = json.loads((tmp_path / "out" / "metrics.json").read_text())["notes"]
    assert any("member 'partial' was trained without class(es) [7]" in n for n in notes)
