"""Data from the command line: tables by column name, predictions without labels, bad data and dangerous
output folders (one clear line, exit 2, nothing lost)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from modelfusion.cli.app import _register as register_commands
from modelfusion.cli.app import app

register_commands()
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["--quiet", *map(str, args)], catch_exceptions=False)


def _write_csv(path: Path, X: np.ndarray, y: np.ndarray | None, names: list[str]) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*names, *(["label"] if y is not None else [])])
        for i, row in enumerate(X):
            writer.writerow([*(f"{v:.6g}" for v in row), *([int(y[i])] if y is not None else [])])
    return path


FEATURES = [f"px{i}" for i in range(64)]


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    """A run on a CSV of digits (named pixel columns) with ${DATA_ROOT} in the config: (folder, bundle, X, y)."""
    import os

    import skops.io
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("csvrun")
    secret = root / "s3cr3t-bucket"
    secret.mkdir()
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    _write_csv(secret / "digits.csv", X, y, FEATURES)
    skops.io.dump(LogisticRegression(max_iter=300).fit(X, y), root / "logreg.skops")
    config = {
        "data": {"source": "${DATA_ROOT}/digits.csv", "label": "label"},
        "members": [{"path": "logreg.skops"}],
        "fusion": {"strategies": ["mean"]},
        "output_dir": "out",
        "cache_dir": None,
    }
    (root / "fusion.yaml").write_text(yaml.safe_dump(config))
    os.environ["DATA_ROOT"] = str(secret)
    try:
        result = invoke("run", root / "fusion.yaml")
    finally:
        del os.environ["DATA_ROOT"]
    assert result.exit_code == 0, result.output
    return root, root / "out" / "bundle", X, y


def test_an_environment_value_is_never_written_to_the_run_outputs(csv_run):
    root, bundle, _, _ = csv_run
    out = root / "out"
    assert "${DATA_ROOT}/digits.csv" in (out / "config.yaml").read_text()
    for path in [
        out / "config.yaml",
        out / "report.html",
        out / "report.md",
        out / "metrics.json",
        bundle / "manifest.json",
    ]:
        assert "s3cr3t" not in path.read_text(), path.name


def test_the_bundle_records_feature_names_and_reorders_a_csv_by_name(csv_run, tmp_path):
    root, bundle, X, y = csv_run
    inputs = json.loads((bundle / "manifest.json").read_text())["metadata"]["inputs"]
    assert inputs == {"feature_names": FEATURES, "shape": [64]}
    straight = _write_csv(tmp_path / "straight.csv", X[:200], y[:200], FEATURES)
    order = np.random.default_rng(0).permutation(64)
    shuffled = _write_csv(tmp_path / "shuffled.csv", X[:200, order], y[:200], [FEATURES[i] for i in order])
    a = invoke("evaluate", bundle, "--data", straight, "--split", "all", "--json")
    b = invoke("evaluate", bundle, "--data", shuffled, "--split", "all", "--json")
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert json.loads(a.output) == json.loads(b.output)


def test_a_csv_missing_a_column_names_it_and_exits_2(csv_run, tmp_path):
    _, bundle, X, y = csv_run
    path = _write_csv(
        tmp_path / "missing.csv", np.delete(X[:50], 5, axis=1), y[:50], FEATURES[:5] + FEATURES[6:]
    )
    result = invoke("evaluate", bundle, "--data", path)
    assert result.exit_code == 2
    assert "lacks the column(s) 'px5'" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((20, 10), np.float32), r"shape \[10\].*fitted on inputs of shape \[n, 64\]"),
        (np.zeros((20, 8, 8), np.float32), r"shape \[8, 8\] \(3-D input\)"),
        (np.zeros((0, 64), np.float32), "has no rows"),
    ],
)
def test_inputs_of_the_wrong_shape_or_no_rows_exit_2_with_what_was_expected(
    csv_run, tmp_path, array, message
):
    import re

    _, bundle, _, _ = csv_run
    path = tmp_path / "x.npy"
    np.save(path, array)
    result = invoke("predict", bundle, path)
    assert result.exit_code == 2, result.output
    assert re.search(message, " ".join(result.output.split())), result.output


def test_predict_to_a_folder_exits_2_naming_it(csv_run, tmp_path):
    _, bundle, _, _ = csv_run
    result = invoke("predict", bundle, "builtin:digits", "--output", tmp_path)
    assert result.exit_code == 2 and "is a folder" in result.output


def test_an_unreadable_cell_names_its_line_and_column_instead_of_dropping_the_column(csv_run, tmp_path):
    _, bundle, X, y = csv_run
    path = _write_csv(tmp_path / "typo.csv", X[:30], y[:30], FEATURES)
    lines = path.read_text().splitlines()
    cells = lines[7].split(",")
    cells[3] = "0.4O"  # a letter O for a zero
    lines[7] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    result = invoke("evaluate", bundle, "--data", path)
    assert result.exit_code == 2
    assert "column 'px3' holds numbers, but the cell on line 8 is '0.4O'" in " ".join(result.output.split())


def test_an_object_npy_is_refused_with_the_reason(csv_run, tmp_path):
    _, bundle, _, _ = csv_run
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    result = invoke("predict", bundle, path)
    assert result.exit_code == 2
    assert "array of Python objects (a pickle)" in " ".join(result.output.split())


def test_an_output_dir_holding_the_config_is_refused_and_nothing_is_touched(csv_run, tmp_path):
    root, _, _, _ = csv_run
    text = "# my notes\n" + yaml.safe_dump(
        {
            "data": {"source": "builtin:digits"},
            "members": [{"path": str(root / "logreg.skops")}],
            "output_dir": ".",
            "report": {"enabled": False},
        }
    )
    (tmp_path / "config.yaml").write_text(text)
    (tmp_path / "report.md").write_text("my own report")
    result = invoke("run", tmp_path / "config.yaml")
    assert result.exit_code == 2 and "folder of the config file" in " ".join(result.output.split())
    assert (tmp_path / "config.yaml").read_text() == text
    assert (tmp_path / "report.md").read_text() == "my own report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "report.md"]


def test_an_output_dir_with_files_modelfusion_did_not_write_is_refused(csv_run, tmp_path):
    root, _, _, _ = csv_run
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.md").write_text("my own report")
    config = {
        "data": {"source": "builtin:digits"},
        "members": [{"path": str(root / "logreg.skops")}],
        "output_dir": "out",
    }
    (tmp_path / "fusion.yaml").write_text(yaml.safe_dump(config))
    result = invoke("run", tmp_path / "fusion.yaml")
    assert result.exit_code == 2
    assert "report.md, which this run would replace but modelfusion did not write" in " ".join(
        result.output.split()
    )
    assert (tmp_path / "out" / "report.md").read_text() == "my own report"


def test_export_after_a_kill_mid_publish_restores_the_bundle_first(csv_run, tmp_path):
    import shutil

    _, bundle, _, _ = csv_run
    shutil.copytree(bundle, tmp_path / ".bundle.old-0123456789ab")  # what a SIGKILL mid-publish leaves
    (tmp_path / ".bundle.x1y2z3.tmp").mkdir()  # and a half-saved bundle
    result = runner.invoke(app, ["export", str(tmp_path / "bundle")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "restored" in " ".join(result.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    assert (tmp_path / "bundle" / "fused.onnx").is_file()


def test_predict_on_an_unlabelled_csv_needs_no_labels_and_passes_an_id_column_through(csv_run, tmp_path):
    _, bundle, X, _ = csv_run
    path = tmp_path / "unlabelled.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["order_id", *FEATURES])
        for i, row in enumerate(X[:25]):
            writer.writerow([f"A-{i:03d}", *(f"{v:.6g}" for v in row)])
    out = tmp_path / "preds.csv"
    result = invoke("predict", bundle, path, "--id", "order_id", "--output", out)
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["order_id", "prediction"] and rows[1][0] == "A-000" and len(rows) == 26
    result = invoke("predict", bundle, path, "--id", "nope")
    assert result.exit_code == 2 and "no column 'nope'" in result.output


def test_evaluate_without_split_scores_the_runs_test_split_on_its_own_data(csv_run, tmp_path):
    root, bundle, X, y = csv_run
    data = json.loads((bundle / "manifest.json").read_text())["metadata"]["data"]
    assert data["source"] == "${DATA_ROOT}/digits.csv" and "s3cr3t" not in json.dumps(data)
    own = root / "s3cr3t-bucket" / "digits.csv"
    result = runner.invoke(
        app, ["evaluate", str(bundle), "--data", str(own), "--json"], catch_exceptions=False
    )
    assert result.exit_code == 0 and "scoring the run's test split" in result.output
    tested = json.loads(result.output[result.output.index("{") :])
    explicit = invoke("evaluate", bundle, "--data", own, "--split", "test", "--json")
    assert tested == json.loads(explicit.output)
    other = _write_csv(tmp_path / "other.csv", X[:40], y[:40], FEATURES)
    result = runner.invoke(
        app, ["evaluate", str(bundle), "--data", str(other), "--json"], catch_exceptions=False
    )
    assert result.exit_code == 0
    assert "all of it is scored" in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("junk.npz", b"\x00\x01not a zip at all" * 20, "is not a .npz archive"),
        ("junk.npy", b"\x80\x04junk bytes" * 20, "is not a .npy file"),
        ("junk.csv", bytes(range(128, 256)) * 2, "cannot read .* as csv \\(UnicodeDecodeError"),
        ("junk.parquet", b"PAR1" + b"\x00" * 64, "cannot read .* as parquet"),
    ],
)
def test_a_malformed_data_file_exits_2_naming_it(name, content, expected, csv_run, tmp_path):
    _, bundle, _, _ = csv_run
    path = tmp_path / name
    path.write_bytes(content)
    result = invoke("predict", bundle, path)
    assert result.exit_code == 2, result.output
    assert re.search(expected, result.output.replace("\n", "")), result.output


def test_a_bug_of_ours_keeps_its_traceback_instead_of_posing_as_a_user_error(csv_run, monkeypatch):
    """Only ModelFusionError and OSError become the one-line exit 2; a plain ValueError is a bug."""
    import modelfusion.bundle

    _, bundle, _, _ = csv_run

    def broken(*args, **kwargs):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(modelfusion.bundle, "bundle_summary", broken)
    with pytest.raises(ValueError, match="an internal invariant broke"):
        invoke("info", bundle)
