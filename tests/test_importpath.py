"""One import-path parser for configs, data factories and members; config-relative factories."""

from __future__ import annotations

import json

import pytest
import yaml

from modelfusion.config import parse_config
from modelfusion.importpath import is_import_path


@pytest.mark.parametrize(
    "text, expected",
    [
        ("mypkg.data:Loaders.digits", True),
        ("mypkg.data:load", True),
        ("pipelines/make.py:load", True),
        ("data/train.csv", False),
        ("builtin:digits", True),  # shaped like one; the loaders check builtin: first
        ("mypkg.data:", False),
        (":load", False),
    ],
)
def test_import_paths_are_recognised_the_same_way_everywhere(text, expected):
    assert is_import_path(text) is expected


def test_a_config_accepts_the_dotted_factory_a_loader_accepts(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x")
    config = parse_config(
        {"data": {"source": "mypkg.data:Loaders.digits"}, "members": [{"path": "m.onnx"}]}, base_dir=tmp_path
    )
    assert config.data.source == "mypkg.data:Loaders.digits"


def test_an_architecture_factory_next_to_the_config_is_found(tmp_path):
    import torch
    from safetensors.torch import save_file
    from typer.testing import CliRunner

    from modelfusion.cli.app import _register, app

    _register()
    (tmp_path / "nets.py").write_text(
        "import torch\n\ndef make_mlp(hidden=8):\n"
        "    return torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))\n"
    )
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.ReLU(), torch.nn.Linear(8, 10))
    save_file(net.state_dict(), str(tmp_path / "mlp.safetensors"))
    config = {
        "data": {"source": "builtin:digits"},
        "members": [
            {"path": "mlp.safetensors", "options": {"architecture": "nets:make_mlp", "output_kind": "logits"}}
        ],
        "fusion": {"strategies": ["mean"]},
        "output_dir": "out",
        "cache_dir": None,
    }
    (tmp_path / "fusion.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "fusion.yaml")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "bundle" / "manifest.json").read_text())
    assert manifest["members"][0]["architecture"] == "nets:make_mlp"
