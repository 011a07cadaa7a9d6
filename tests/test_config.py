"""Config validation: every problem at once, with YAML paths and suggestions."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelfusion.config import load_config, parse_config
from modelfusion.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fusion.yaml"
    path.write_text(text)
    return path


def test_valid_config_resolves_paths_relative_to_the_file(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x")
    cfg = load_config(_write(tmp_path, "data: {source: 'builtin:digits'}\nmembers: [{path: m.onnx}]\n"))
    assert cfg.resolve(cfg.members[0].path) == tmp_path / "m.onnx"
    assert cfg.fusion.strategies == "auto" and cfg.fusion.metric == "nll"


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_malformed_yaml_reports_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"line \d+, column \d+\): not valid YAML"):
        load_config(_write(tmp_path, "data:\n  source: [unclosed\nmembers: []\n"))


def test_unknown_key_suggests_the_closest_valid_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(
            _write(
                tmp_path, "data: {source: 'builtin:digits'}\nmembers: [{path: /etc/hosts}]\noutptu_dir: x\n"
            )
        )
    assert any("outptu_dir: unknown key; did you mean 'output_dir'?" in p for p in info.value.problems)


def test_every_problem_is_reported_at_once_with_its_yaml_path(tmp_path):
    text = (
        "data: {source: 'builtin:digits', splt: {}}\n"
        "members:\n  - {path: missing.onnx}\n  - {path: /etc/hosts, framwork: onnx}\n"
        "fusion: {cv: 1, strategies: [mean, greedyy]}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    problems = info.value.problems
    assert any(p.startswith("data.splt: unknown key; did you mean 'split'") for p in problems)
    assert any(p.startswith("members[1].framwork: unknown key") for p in problems)
    assert any(p.startswith("members[0].path: 'missing.onnx' does not exist") for p in problems)
    assert any(p.startswith("fusion.cv:") for p in problems)
    assert any("unknown strategy 'greedyy'" in p for p in problems)
    assert len(problems) >= 5


def test_missing_required_sections_are_named(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, "name: x\n"))
    assert "data: required field is missing" in info.value.problems
    assert "members: required field is missing" in info.value.problems


def test_env_interpolation_with_default_and_missing_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("MF_MODELS", str(tmp_path))
    (tmp_path / "a.onnx").write_bytes(b"x")
    cfg = parse_config(
        {
            "data": {"source": "builtin:digits"},
            "members": [{"path": "${MF_MODELS}/a.onnx"}],
            "output_dir": "${MF_OUT:-runs/x}",
        },
        base_dir=tmp_path,
    )
    assert cfg.members[0].path == f"{tmp_path}/a.onnx" and cfg.output_dir == "runs/x"
    with pytest.raises(ConfigError, match="MF_UNSET is not set"):
        parse_config(
            {"data": {"source": "builtin:digits"}, "members": [{"path": "${MF_UNSET}/a.onnx"}]},
            base_dir=tmp_path,
        )


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path, "- just\n- a list\n"))


def test_separate_validation_and_test_sources_need_no_top_level_source(tmp_path):
    cfg = parse_config(
        {
            "data": {"validation": {"source": "builtin:digits"}, "test": {"source": "builtin:iris"}},
            "members": [{"path": "/etc/hosts"}],
        },
        base_dir=tmp_path,
    )
    assert cfg.data.source is None and cfg.data.test.source == "builtin:iris"


def test_only_one_of_validation_and_test_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="both data.validation and data.test"):
        parse_config(
            {"data": {"validation": {"source": "builtin:digits"}}, "members": [{"path": "/etc/hosts"}]},
            base_dir=tmp_path,
        )


def test_dotted_factory_source_is_not_checked_as_a_file(tmp_path):
    cfg = parse_config(
        {"data": {"source": "mypkg.data:make"}, "members": [{"path": "/etc/hosts"}]}, base_dir=tmp_path
    )
    assert cfg.data.source == "mypkg.data:make"


def test_data_format_must_be_one_the_loader_knows(tmp_path):
    with pytest.raises(ConfigError, match="unknown format 'arrays'; use auto, builtin"):
        parse_config(
            {"data": {"source": "builtin:digits", "format": "arrays"}, "members": [{"path": "/etc/hosts"}]},
            base_dir=tmp_path,
        )
