"""The command line end to end: demo, init + run, evaluate, predict, and user errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from modelfusion.cli.app import _register, app

_register()
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["--quiet", *map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    result = invoke("demo", "--output", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_demo_writes_bundle_report_and_config(demo_run):
    results = demo_run / "results"
    assert (results / "bundle" / "manifest.json").is_file()
    assert (results / "report.html").is_file() and (results / "report.md").is_file()
    assert (demo_run / "fusion.yaml").is_file()
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["chosen"]


@pytest.mark.slow
def test_demo_fusion_beats_the_best_member_on_test(demo_run):
    metrics = json.loads((demo_run / "results" / "metrics.json").read_text())
    chosen = next(s for s in metrics["strategies"] if s["name"] == metrics["chosen"])
    best_nll = min(m["nll"] for m in metrics["members"])
    best_acc = max(m["accuracy"] for m in metrics["members"])
    assert chosen["nll"] < best_nll
    assert chosen["accuracy"] >= best_acc


@pytest.mark.slow
def test_demo_uses_three_frameworks(demo_run):
    manifest = json.loads((demo_run / "results" / "bundle" / "manifest.json").read_text())
    assert {"torch", "onnx", "sklearn"} <= {m["framework"] for m in manifest["members"]}
    assert len(manifest["members"]) >= 5


@pytest.mark.slow
def test_rerun_of_the_demo_config_reads_the_cache_and_gives_the_same_numbers(demo_run):
    before = json.loads((demo_run / "results" / "metrics.json").read_text())
    result = invoke("run", demo_run / "fusion.yaml")
    assert result.exit_code == 0, result.output
    after = json.loads((demo_run / "results" / "metrics.json").read_text())
    assert after["chosen"] == before["chosen"]

    def without_timing(rows):
        return [{k: v for k, v in r.items() if k != "latency_ms"} for r in rows]

    assert without_timing(after["strategies"]) == without_timing(before["strategies"])
    assert without_timing(after["members"]) == without_timing(before["members"])


@pytest.mark.slow
def test_demo_exports_and_quantizes_into_the_bundle_and_reports_it(demo_run):
    results = demo_run / "results"
    manifest = json.loads((results / "bundle" / "manifest.json").read_text())
    assert {"fused.onnx", "fused.int8.onnx"} <= set(manifest["checksums"])
    record = manifest["metadata"]["runtime"]["quantized"]["int8"]
    assert record["mode"] == "dynamic" and abs(record["delta_pp"]) <= 1.0  # measured on validation
    metrics = json.loads((results / "metrics.json").read_text())
    rows = {r["name"]: r for r in metrics["deployment"]}
    assert list(rows) == ["ONNX fp32", "int8 (dynamic)"]
    chosen = next(s for s in metrics["strategies"] if s["name"] == metrics["chosen"])
    assert rows["ONNX fp32"]["accuracy"] == pytest.approx(
        chosen["accuracy"], abs=0.005
    )  # one graph, same model
    assert abs(rows["int8 (dynamic)"]["delta_pp"]) <= 1.0  # on test
    assert rows["int8 (dynamic)"]["file_size"] == (results / "bundle" / "fused.int8.onnx").stat().st_size
    assert (results / "figures" / "deployment.png").is_file()
    page = (results / "report.html").read_text()
    assert "<h2>Deployment</h2>" in page and "Where the bytes and the time go" in page
    knn = {g: next(p for p in rows[g]["breakdown"] if p["member"] == "knn") for g in rows}
    assert knn["int8 (dynamic)"]["bytes"] < knn["ONNX fp32"]["bytes"] / 4 and knn["ONNX fp32"]["ms"] > 0


@pytest.mark.slow
def test_evaluate_prints_metrics_of_a_saved_bundle(demo_run):
    result = invoke(
        "evaluate", demo_run / "results" / "bundle", "--data", "builtin:digits", "--split", "test", "--json"
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["accuracy"] > 0.9


@pytest.mark.slow
def test_predict_writes_a_csv_atomically(demo_run, tmp_path):
    out = tmp_path / "preds.csv"
    result = invoke("predict", demo_run / "results" / "bundle", "builtin:digits", "--output", out, "--proba")
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0].startswith("prediction,p_0") and len(lines) == 1798
    assert [p.name for p in tmp_path.iterdir()] == ["preds.csv"]


@pytest.mark.slow
def test_init_then_run_works_out_of_the_box(tmp_path):
    project = tmp_path / "p"
    assert invoke("init", project).exit_code == 0
    for sub in ("configs", "models", "pipelines", "utils"):
        assert (project / sub).is_dir()
    assert (project / "configs" / "fusion.yaml").read_text().startswith("# modelfusion run config")
    result = invoke("run", project / "configs" / "fusion.yaml")
    assert result.exit_code == 0, result.output
    assert (project / "runs" / "fusion" / "report.html").is_file()


def test_init_refuses_a_non_empty_folder_without_force(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "keep.txt").write_text("mine")
    result = invoke("init", tmp_path / "p", "--no-example")
    assert result.exit_code == 2 and "not empty" in result.output
    assert invoke("init", tmp_path / "p", "--no-example", "--force").exit_code == 0
    assert (tmp_path / "p" / "keep.txt").read_text() == "mine"


def _config(tmp_path: Path, **overrides) -> Path:
    raw = {
        "data": {"source": "builtin:digits"},
        "members": [{"path": "m.skops"}],
        "output_dir": "out",
        **overrides,
    }
    path = tmp_path / "fusion.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_missing_config_exits_2_with_one_line(tmp_path):
    result = invoke("run", tmp_path / "nope.yaml")
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output


def test_bad_config_lists_each_problem_and_exits_2(tmp_path):
    result = invoke("run", _config(tmp_path, outptu=1))
    assert result.exit_code == 2
    assert "members[0].path: 'm.skops' does not exist" in result.output
    assert "did you mean 'output_dir'" in result.output


def test_unwritable_output_folder_exits_2(tmp_path, digits_member_file):
    (tmp_path / "blocker").write_text("a file, not a folder")
    path = _config(tmp_path, members=[{"path": str(digits_member_file)}], output_dir="blocker/out")
    result = invoke("run", path)
    assert result.exit_code == 2 and "output_dir" in result.output


def test_data_without_the_members_classes_exits_2(tmp_path, digits_member_file):
    path = _config(tmp_path, members=[{"path": str(digits_member_file)}], data={"source": "builtin:iris"})
    result = invoke("run", path)
    assert result.exit_code == 2
    assert "features" in result.output or "classes" in result.output or "labels" in result.output


def test_ctrl_c_during_run_leaves_no_half_written_bundle(tmp_path, digits_member_file, monkeypatch):
    import modelfusion.stages as strategies

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(strategies, "search_strategies", interrupt)
    path = _config(tmp_path, members=[{"path": str(digits_member_file)}], cache_dir=None)
    result = invoke("run", path)
    assert result.exit_code == 130
    assert not (tmp_path / "out" / "bundle").exists()


def _digits_npz(path: Path, *, labels: str | None, shift: int = 0) -> Path:
    import numpy as np
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    arrays = {"X": (X / 16.0).astype("float32")}
    if labels:
        arrays[labels] = y + shift
    np.savez(path, **arrays)
    return path


def test_data_without_labels_exits_2_naming_the_split(tmp_path, digits_member_file):
    data = _digits_npz(tmp_path / "unlabelled.npz", labels=None)
    path = _config(tmp_path, members=[{"path": str(digits_member_file)}], data={"source": str(data)})
    result = invoke("run", path)
    assert result.exit_code == 2
    assert "no labels" in result.output


def test_labels_outside_the_members_classes_exit_2_listing_them(tmp_path, digits_member_file):
    data = _digits_npz(tmp_path / "shifted.npz", labels="y", shift=10)
    path = _config(tmp_path, members=[{"path": str(digits_member_file)}], data={"source": str(data)})
    result = invoke("run", path)
    assert result.exit_code == 2
    assert "not among the members' classes" in result.output


def test_a_member_with_no_onnx_form_skips_the_export_and_says_why(tmp_path, digits_member_file):
    import skops.io
    from sklearn.datasets import load_digits
    from sklearn.semi_supervised import LabelSpreading

    X, y = load_digits(return_X_y=True)
    spreading = tmp_path / "spreading.skops"
    skops.io.dump(LabelSpreading().fit(X / 16.0, y), spreading)
    members = [{"path": str(digits_member_file)}, {"path": str(spreading)}]
    path = _config(tmp_path, members=members, deploy={"onnx": True}, cache_dir=None)
    result = invoke("run", path)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["deployment"] == []
    assert any("skl2onnx cannot convert LabelSpreading" in n for n in metrics["notes"])
    assert not (tmp_path / "out" / "bundle" / "fused.onnx").exists()


def test_unknown_quantization_mode_in_the_config_exits_2_naming_the_field(tmp_path, digits_member_file):
    path = _config(tmp_path, members=[{"path": str(digits_member_file)}], deploy={"quantize": "weekly"})
    result = invoke("run", path)
    assert result.exit_code == 2
    assert "deploy.quantize" in result.output and "dynamic" in result.output


def test_a_runtime_failing_at_a_later_deploy_step_keeps_the_graphs_before_it(
    tmp_path, digits_member_file, monkeypatch
):
    import numpy as np

    import modelfusion.runtime.deployment as deployment
    from modelfusion import FusedModel

    def broken(*args, **kwargs):  # what an onnxruntime.capi Fail or a converter bug looks like from here
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : kernel [/x] missing")

    monkeypatch.setattr(deployment, "quantize_bundle", broken)
    path = _config(
        tmp_path, members=[{"path": str(digits_member_file)}], deploy={"quantize": "dynamic"}, cache_dir=None
    )
    result = invoke("run", path)  # with --quiet: the warning is printed all the same
    assert result.exit_code == 0, result.output
    expected = (
        "deploy: int8 (dynamic) failed: RuntimeError: [ONNXRuntimeError] : 1 : FAIL : kernel [/x] missing; "
        "the bundle holds fused.onnx"
    )
    assert "warning:" in result.output and expected in " ".join(result.output.split())
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert expected in metrics["notes"]
    assert [r["name"] for r in metrics["deployment"]] == ["ONNX fp32"]
    assert FusedModel.load(tmp_path / "out" / "bundle").predict_proba(np.zeros((2, 64))).shape == (2, 10)


def test_ctrl_c_while_deploying_leaves_the_previous_runs_bundle_and_report(
    tmp_path, digits_member_file, monkeypatch
):
    import modelfusion.runtime.deployment as deployment

    path = _config(
        tmp_path, members=[{"path": str(digits_member_file)}], deploy={"quantize": "dynamic"}, cache_dir=None
    )
    assert invoke("run", path).exit_code == 0
    out = tmp_path / "out"
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert Path("bundle/fused.int8.onnx") in before and Path("report.html") in before

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(deployment, "quantize_bundle", interrupt)
    result = invoke("run", path)
    assert result.exit_code == 130
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # same files, same bytes: no staging folder, no new bundle beside the old report


def test_a_run_keeps_the_users_own_files_in_the_figures_folder(tmp_path, digits_member_file):
    import hashlib

    path = _config(tmp_path, members=[{"path": str(digits_member_file)}], cache_dir=None)
    assert invoke("run", path).exit_code == 0
    out = tmp_path / "out"
    figures = out / "figures"
    (figures / "my_notes.txt").write_text("keep me")
    stale = b"a figure an earlier run drew and this one does not"
    (figures / "deployment.png").write_bytes(stale)
    record = json.loads((out / ".modelfusion-run.json").read_text())  # as if an earlier run wrote it
    record["files"]["figures/deployment.png"] = hashlib.sha256(stale).hexdigest()
    (out / ".modelfusion-run.json").write_text(json.dumps(record))
    assert invoke("run", path).exit_code == 0
    assert (figures / "my_notes.txt").read_text() == "keep me"
    assert not (figures / "deployment.png").exists()
    assert (figures / "strategy_comparison.png").is_file()


def test_a_run_refuses_to_replace_a_figure_it_did_not_draw(tmp_path, digits_member_file):
    path = _config(tmp_path, members=[{"path": str(digits_member_file)}], cache_dir=None)
    figures = tmp_path / "out" / "figures"
    figures.mkdir(parents=True)
    (figures / "deployment.png").write_bytes(b"the user's own picture")
    result = invoke("run", path)
    assert result.exit_code == 2
    assert "figures/deployment.png" in result.output and "did not write" in " ".join(result.output.split())
    assert (figures / "deployment.png").read_bytes() == b"the user's own picture"
    assert not (tmp_path / "out" / "bundle").exists()


def test_ctrl_c_while_the_run_moves_its_files_into_place_waits_until_all_are_moved(
    tmp_path, digits_member_file, monkeypatch
):
    import os
    import signal

    import modelfusion.publish as workflow

    path = _config(tmp_path, members=[{"path": str(digits_member_file)}], cache_dir=None)
    assert invoke("run", path).exit_code == 0
    out = tmp_path / "out"
    old_manifest = (out / "bundle" / "manifest.json").read_text()
    path = _config(
        tmp_path, members=[{"path": str(digits_member_file)}], cache_dir=None, report={"title": "second run"}
    )
    real = workflow.replace_all

    def interrupted(*args, **kwargs):  # Ctrl-C as the new files replace the old ones
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(workflow, "replace_all", interrupted)
    assert invoke("run", path).exit_code == 130
    assert "second run" in (out / "report.html").read_text()  # the new report ...
    assert (out / "bundle" / "manifest.json").read_text() != old_manifest  # ... beside the new bundle
    assert "second run" in (out / "config.yaml").read_text()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".modelfusion-run.json"]


def test_a_failing_breakdown_keeps_the_measured_deployment_row(tmp_path, digits_member_file, monkeypatch):
    import modelfusion.runtime.deployment as deployment

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(deployment, "graph_breakdown", broken)
    path = _config(
        tmp_path, members=[{"path": str(digits_member_file)}], deploy={"onnx": True}, cache_dir=None
    )
    assert invoke("run", path).exit_code == 0
    (row,) = json.loads((tmp_path / "out" / "metrics.json").read_text())["deployment"]
    assert row["accuracy"] > 0.9 and "No space left" in row["breakdown_error"]


def test_a_file_where_the_figures_folder_goes_exits_2_before_any_work(tmp_path, digits_member_file):
    path = _config(tmp_path, members=[{"path": str(digits_member_file)}], cache_dir=None)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "figures").write_text("not a folder")
    result = invoke("run", path)
    assert result.exit_code == 2
    assert "figures is a file" in " ".join(result.output.split())
    assert not (tmp_path / "out" / "bundle").exists()


def test_a_run_without_a_report_removes_the_previous_runs_report(tmp_path, digits_member_file):
    path = _config(tmp_path, members=[{"path": str(digits_member_file)}], cache_dir=None)
    assert invoke("run", path).exit_code == 0
    out = tmp_path / "out"
    (out / "figures" / "my_notes.txt").write_text("keep me")
    path = _config(
        tmp_path, members=[{"path": str(digits_member_file)}], cache_dir=None, report={"enabled": False}
    )
    assert invoke("run", path).exit_code == 0
    assert not any((out / name).exists() for name in ("report.html", "report.md", "metrics.json"))
    assert [p.name for p in (out / "figures").iterdir()] == ["my_notes.txt"]
    assert (out / "bundle" / "manifest.json").is_file()


def test_version_and_short_help_flags():
    from modelfusion import __version__

    assert runner.invoke(app, ["--version"]).output.strip() == f"modelfusion {__version__}"
    short, long = runner.invoke(app, ["-h"]), runner.invoke(app, ["--help"])
    assert short.exit_code == 0 and short.output == long.output
    assert runner.invoke(app, ["run", "-h"]).exit_code == 0


def test_importing_the_package_and_the_cli_loads_no_heavy_framework():
    import subprocess
    import sys

    code = (
        "import sys, modelfusion; from modelfusion.cli.app import _register; _register(); "
        "print(sorted(m for m in ('torch', 'sklearn', 'scipy', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert modelfusion_attr("FusedModel").__name__ == "FusedModel"  # the names still resolve, lazily


def modelfusion_attr(name: str):
    import modelfusion

    return getattr(modelfusion, name)


def test_info_shows_what_a_bundle_holds_without_loading_it(tmp_path, digits_member_file):
    path = _config(tmp_path, members=[{"path": str(digits_member_file)}], cache_dir=None)
    assert invoke("run", path).exit_code == 0
    bundle = tmp_path / "out" / "bundle"
    result = invoke("info", bundle, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["verification"] == "all verify" and summary["members"][0]["name"] == "logreg"
    assert summary["inputs"]["shape"] == [64] and summary["sha256"] in (bundle / "bundle.sha256").read_text()
    target = bundle / "members" / "00-logreg" / "model.skops"
    target.write_bytes(target.read_bytes() + b"x")
    assert "FAILED" in json.loads(invoke("info", bundle, "--json").output)["verification"]


def test_run_overrides_output_dir_cache_and_strategies_from_the_command_line(tmp_path, digits_member_file):
    path = _config(tmp_path, members=[{"path": str(digits_member_file)}], cache_dir=".cache")
    result = invoke(
        "run", path, "--output-dir", tmp_path / "elsewhere", "--no-cache", "--strategies", "mean,vote"
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "elsewhere" / "metrics.json").read_text())
    assert {s["name"] for s in metrics["strategies"]} <= {"mean", "vote"}
    assert not (tmp_path / ".cache").exists() and not (tmp_path / "out").exists()
    bad = invoke("run", path, "--strategies", "meen")
    assert bad.exit_code == 2 and "did you mean 'mean'" in bad.output


def test_init_without_the_example_explains_what_to_add(tmp_path):
    assert invoke("init", tmp_path / "p", "--no-example").exit_code == 0
    config = tmp_path / "p" / "configs" / "fusion.yaml"
    assert "# - {name: mymodel, path: ../models/mymodel.onnx}" in config.read_text()
    assert "list your models under `members:`" in (tmp_path / "p" / "README.md").read_text()
    result = invoke("run", config)
    assert result.exit_code == 2 and "list at least one trained model" in result.output


def test_library_warnings_show_only_with_verbose_and_ours_always(capsys):
    from modelfusion.cli.console import State, _show_warning
    from modelfusion.errors import ModelFusionWarning

    _show_warning("torch.jit.load is deprecated", FutureWarning, "torch/jit.py", 1)
    _show_warning("member 'x' was trained without class(es) [7]", ModelFusionWarning, "predictions.py", 1)
    err = capsys.readouterr().err
    assert "deprecated" not in err and "warning: member 'x' was trained without class(es) [7]" in err
    State.verbose = True
    try:
        _show_warning("torch.jit.load is deprecated", FutureWarning, "torch/jit.py", 1)
    finally:
        State.verbose = False
    assert "FutureWarning: torch.jit.load is deprecated" in capsys.readouterr().err


def test_cli_messages_name_flags_or_config_keys_not_python_arguments(tmp_path):
    from modelfusion.cli.console import cli_phrasing

    message = "'m.ts' is TorchScript; pass trust=True (CLI/config: trust) only if you trust its source"
    assert "pass --trust only" in cli_phrasing(message, "predict")
    assert "pass trust: true in the member's entry only" in cli_phrasing(message, "run")
    path = tmp_path / "nolabel.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    bundle = tmp_path / "missing-bundle"
    result = invoke("evaluate", bundle, "--data", path)
    assert result.exit_code == 2 and "trust=True" not in result.output and "label=" not in result.output


def test_the_chosen_strategys_latency_is_that_of_the_engine_the_bundle_uses(demo_run):
    metrics = json.loads((demo_run / "results" / "metrics.json").read_text())
    chosen = next(s for s in metrics["strategies"] if s["name"] == metrics["chosen"])
    graph = next(d for d in metrics["deployment"] if d["name"] == "ONNX fp32")
    assert chosen["latency_ms"] == pytest.approx(graph["latency_ms"]) and chosen["engine"] == "onnx"
    assert any("engine the bundle uses" in n for n in metrics["notes"])
