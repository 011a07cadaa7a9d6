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


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    text = (
        "data: {source: 'builtin:digits'}\nmembers: [{path: m.onnx}]\nreport:\n  title: x\nextra:\n"
        + "\n".join("  " + line for line in lines)
    )
    with pytest.raises(ConfigError, match=r"aliases expand to more than 200,000 values"):
        load_config(_write(tmp_path, text))


def test_a_config_nested_thousands_of_levels_deep_is_a_config_error_not_a_recursion_error(tmp_path):
    text = "data: {source: 'builtin:digits'}\nmembers: [{path: m.onnx}]\nx: " + "[" * 5000 + "]" * 5000 + "\n"
    with pytest.raises(ConfigError, match=r"line 3\): nested more than 64 levels deep"):
        load_config(_write(tmp_path, text))


@pytest.mark.parametrize(
    "override, field",
    [
        ("batch_size: 1000000000000", "batch_size"),
        ("cv: 100000", "fusion.cv"),
        ("report: {title: " + "t" * 5000 + "}", "report.title"),
        ("seed: -1", "seed"),
    ],
)
def test_absurd_values_are_refused_naming_the_field(tmp_path, override, field):
    if override.startswith("cv"):
        override = "fusion: {" + override + "}"
    (tmp_path / "m.onnx").write_bytes(b"x")
    text = f"data: {{source: 'builtin:digits'}}\nmembers: [{{path: m.onnx}}]\n{override}\n"
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, text))
    assert any(p.startswith(field) for p in err.value.problems), err.value.problems


def test_a_fifty_megabyte_string_is_refused_at_the_file_size(tmp_path):
    path = _write(tmp_path, "report: {title: '" + "t" * (5 * 1024 * 1024) + "'}\n")
    with pytest.raises(ConfigError, match=r"a config is at most"):
        load_config(path)


def test_values_from_the_environment_are_saved_unexpanded(tmp_path, monkeypatch):
    from modelfusion.config import config_record, dump_config

    monkeypatch.setenv("HF_TOKEN", "hunter2-secret")
    (tmp_path / "m.onnx").write_bytes(b"x")
    cfg = load_config(
        _write(
            tmp_path,
            "data: {source: 'builtin:digits'}\nmembers: [{path: m.onnx, options: {token: '${HF_TOKEN}'}}]\n"
            "report: {title: 'run by ${USER_NAME:-nobody}'}\n",
        )
    )
    assert cfg.members[0].options["token"] == "hunter2-secret"  # the run uses the value ...
    assert "hunter2" not in dump_config(cfg)  # ... what is written keeps the ${VAR}
    record = config_record(cfg)
    assert record["members"][0]["options"]["token"] == "${HF_TOKEN}"
    assert record["report"]["title"] == "run by ${USER_NAME:-nobody}"


def test_a_recursive_yaml_alias_is_a_config_error(tmp_path):
    text = "data: {source: 'builtin:digits'}\nmembers: &m [*m]\n"
    with pytest.raises(ConfigError, match=r"alias \*m refers to a value that contains it"):
        load_config(_write(tmp_path, text))


def test_strategy_params_are_checked_when_the_config_loads_with_a_did_you_mean(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x")
    text = (
        "data: {source: 'builtin:digits'}\nmembers: [{path: m.onnx}]\n"
        "fusion: {strategies: [{name: greedy, params: {ensemble_sise: 10}}]}\n"
    )
    with pytest.raises(
        ConfigError,
        match=r"GreedySelection has no parameter 'ensemble_sise' \(did you mean 'ensemble_size'\?\)",
    ):
        load_config(_write(tmp_path, text))
