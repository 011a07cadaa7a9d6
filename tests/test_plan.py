"""plan_run: every config error found before any data or model is loaded, all at once; `run --dry-run`."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from modelfusion.cli.app import _register, app
from modelfusion.config import load_config, parse_config
from modelfusion.errors import ConfigError
from modelfusion.plan import plan_run

_register()
runner = CliRunner()


def _write(tmp_path: Path, **raw) -> Path:
    path = tmp_path / "fusion.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_valid_config_is_planned_without_loading_anything(tmp_path, digits_member_file):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx graph")  # loading it would fail: the plan must not load it
    config = parse_config(
        {
            "data": {"source": "builtin:digits"},
            "members": [{"path": str(digits_member_file)}, {"path": str(junk), "name": "junk"}],
            "fusion": {"strategies": ["mean", {"name": "greedy", "params": {"ensemble_size": 10}}]},
            "deploy": {"quantize": "dynamic"},
            "output_dir": "out",
        },
        base_dir=tmp_path,
    )
    start = time.perf_counter()
    plan = plan_run(config)
    assert time.perf_counter() - start < 5  # fast: nothing is loaded or scored (generous for a busy machine)
    assert [m.framework for m in plan.members] == ["sklearn", "onnx"]
    assert [type(s).__name__ for s in plan.strategies] == ["Mean", "GreedySelection"]
    assert plan.strategies[1].ensemble_size == 10
    assert plan.deploy_steps == ["ONNX fp32", "int8 (dynamic)"]
    assert plan.output_dir == tmp_path / "out" and not plan.output_dir.exists()
    text = "\n".join(plan.describe())
    assert "members[1] junk: onnx from" in text and "builtin:digits [builtin]" in text
    assert "deploy: ONNX fp32, int8 (dynamic)" in text


def test_every_config_error_is_reported_at_once_with_its_yaml_path(tmp_path, digits_member_file):
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "nets.py").write_text("def make_mlp(width=8):\n    return None\n")
    raw = {
        "task": "regression",
        "data": {"validation": {"source": "builtin:digitz"}, "test": {"source": "nomodule.x:load"}},
        "members": [
            {"path": str(digits_member_file), "framework": "tensorflowish"},
            {"path": str(digits_member_file), "name": "a", "preprocess": {"resize": 3}},
            {"path": str(digits_member_file), "name": "logreg"},
            {
                "path": str(digits_member_file),
                "name": "b",
                "options": {"architecture": "pipelines.nets:make_mlpp"},
                "trust": True,
            },
            {
                "path": str(digits_member_file),
                "name": "cnn",
                "options": {"architecture": "pipelinez.nets:make_mlp"},
            },
        ],
        "fusion": {"metric": "accuracy"},
        "output_dir": "out",
    }
    with pytest.raises(ConfigError) as info:
        plan_run(parse_config(raw, base_dir=tmp_path))
    problems = "\n".join(info.value.problems)
    assert "data.validation: unknown builtin dataset 'digitz'" in problems
    assert "data.test: cannot import module 'nomodule.x'" in problems
    assert "members[0].framework: unknown framework 'tensorflowish'" in problems
    assert "members[1].preprocess:" in problems and "resize" in problems
    assert "members[2].name: 'logreg' is also the name of members[0]" in problems
    assert "members[3].options.architecture:" in problems and "no attribute 'make_mlpp'" in problems
    assert (
        "members[4].options.architecture:" in problems and "cannot import module 'pipelinez.nets'" in problems
    )
    assert "fusion.metric: 'accuracy' is not defined for regression" in problems
    assert len(info.value.problems) == 8


def test_an_unknown_metric_and_a_bad_data_option_are_found_by_the_plan(tmp_path, digits_member_file):
    config = parse_config(
        {
            "data": {"source": "builtin:digits", "options": {"text_column": "x"}},
            "members": [{"path": str(digits_member_file)}],
            "fusion": {"metric": "f1_scroe"},
        },
        base_dir=tmp_path,
    )
    with pytest.raises(ConfigError) as info:
        plan_run(config)
    assert info.value.problems == [
        "data: unknown option(s) 'text_column' for builtin data; valid: (none)",
        "fusion.metric: unknown metric 'f1_scroe'; choose one of: "
        + info.value.problems[1].split("one of: ")[1],
    ]


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, digits_member_file):
    path = _write(
        tmp_path,
        data={"source": "builtin:digits"},
        members=[{"path": str(digits_member_file)}],
        output_dir="out",
    )
    result = runner.invoke(app, ["run", "--dry-run", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "plan for 'fusion'" in result.output and "members[0] logreg: sklearn from" in result.output
    assert "strategies: auto; 5-fold CV on validation by nll" in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / ".modelfusion-cache").exists()


def test_run_stops_on_a_plan_error_before_scoring(tmp_path, digits_member_file):
    path = _write(
        tmp_path,
        data={"source": "builtin:digits"},
        members=[{"path": str(digits_member_file)}],
        fusion={"metric": "nope"},
        output_dir="out",
    )
    result = runner.invoke(app, ["run", str(path)], catch_exceptions=False)
    assert result.exit_code == 2
    assert "fusion.metric: unknown metric 'nope'" in result.output
    assert "scoring" not in result.output and not (tmp_path / "out").exists()
    assert load_config(path).fusion.metric == "nope"  # valid YAML and schema: only the plan can tell
