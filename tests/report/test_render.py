import base64
import json
import re
from html import escape

import numpy as np
import pytest

from modelfusion.report import (
    FusionReport,
    format_value,
    render_markdown_table,
    summary_sentence,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def written(report, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, write_report(report, out)


def test_html_is_self_contained_with_embedded_png_figures(written):
    out, paths = written
    html = paths["html"].read_text(encoding="utf-8")
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) >= 3
    for data in images:
        png = base64.b64decode(data)
        assert png.startswith(PNG_SIGNATURE)
        assert len(png) > 5000
    assert "<style>" in html
    assert not re.search(r"<(link|script)\b", html)


def test_html_has_both_tables_and_highlights_the_chosen_strategy(written, report):
    html = written[1]["html"].read_text(encoding="utf-8")
    assert html.count("<table>") == 3  # strategies, members, and the chosen model's per-class table
    chosen_row = re.search(r"<tr class=chosen>(.*?)</tr>", html).group(1)
    assert "weighted_avg" in chosen_row
    assert "11.7M" in html and "44.7 MB" in html  # resnet18 parameters and file size
    assert escape(summary_sentence(report)) in html


def test_html_escapes_member_names_and_notes(written):
    html = written[1]["html"].read_text(encoding="utf-8")
    assert "vit&lt;tiny&gt;" in html and "<tiny>" not in html
    assert "&lt;for tests&gt;" in html


def test_summary_sentence_compares_chosen_with_best_member(report):
    s = report.summary()
    sentence = summary_sentence(report)
    assert sentence.startswith(
        f"Fused weighted_avg: test accuracy {100 * s['chosen_test']['accuracy']:.2f}% vs"
    )
    assert f"for the member best at it ({s['best_member']})" in sentence
    best_nll = min(report.members, key=lambda r: r["nll"])
    assert f"; NLL {s['chosen_test']['nll']:.4f} vs {best_nll['nll']:.4f} ({best_nll['name']})." in sentence


def test_metrics_json_is_machine_readable(written, report):
    doc = json.loads(written[1]["metrics"].read_text())
    assert doc["chosen"] == "weighted_avg"
    assert doc["weights"] == pytest.approx(report.weights)
    assert [m["name"] for m in doc["members"]] == report.member_names
    assert {s["name"] for s in doc["strategies"]} == set(report.strategy_scores)
    delta = doc["summary"]["delta"]
    expected = 100 * (
        doc["summary"]["chosen_test"]["accuracy"] - doc["summary"]["best_member_test"]["accuracy"]
    )
    assert delta["accuracy_pp"] == pytest.approx(expected)
    assert 0 <= doc["diversity"]["oracle_accuracy"] <= 1


def test_markdown_links_png_files_that_exist(written):
    out, paths = written
    md = paths["markdown"].read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) >= 3
    for rel in links:
        assert (out / rel).read_bytes().startswith(PNG_SIGNATURE)
    assert "log\\|reg" in md  # pipes in names do not break the table
    assert "**weighted_avg** (chosen)" in md


def test_every_file_is_written_atomically_leaving_no_temporaries(written):
    out, paths = written
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert all(p.exists() for p in paths.values())


def test_rewriting_drops_figures_the_new_report_lacks(make_report, tmp_path):
    stale = tmp_path / "figures" / "weights.png"  # as an earlier run with weights left it
    stale.parent.mkdir()
    stale.write_bytes(PNG_SIGNATURE)
    paths = write_report(make_report(weights=None), tmp_path)
    assert "figure_weights" not in paths
    assert not (tmp_path / "figures" / "weights.png").exists()
    assert "weights.png" not in paths["markdown"].read_text()


def test_regression_report_renders(regression_report, tmp_path):
    paths = write_report(regression_report, tmp_path)
    assert "test RMSE" in paths["html"].read_text()
    doc = json.loads(paths["metrics"].read_text())
    assert set(doc["summary"]["delta"]) == {"rmse", "mae", "r2"}


def test_report_without_scores_still_renders_tables(tmp_path):
    report = FusionReport(
        title="tables only",
        task="classification",
        metric="nll",
        class_names=["a", "b"],
        members=[{"name": "m1", "accuracy": 0.8, "nll": 0.5}, {"name": "m2", "accuracy": 0.7, "nll": 0.6}],
        strategies=[{"name": "mean", "cv_mean": 0.45, "cv_std": 0.01, "accuracy": 0.83, "nll": 0.42}],
        chosen="mean",
    )
    paths = write_report(report, tmp_path)
    assert "data:image/png" not in paths["html"].read_text()
    assert "Fused mean: test accuracy 83.00% vs 80.00% for the member best at it (m1)" in (
        paths["markdown"].read_text()
    )


def test_report_rejects_an_unknown_chosen_strategy(make_report):
    with pytest.raises(ValueError, match="not among the strategies"):
        make_report(chosen="stacking")


def test_report_rejects_scores_of_the_wrong_shape(report):
    with pytest.raises(ValueError, match="member_names"):
        FusionReport(
            title="x",
            task="classification",
            metric="accuracy",
            class_names=[],
            members=[],
            strategies=[],
            chosen="mean",
            member_scores=np.zeros((2, 5, 3)),
            member_names=["a"],
        )


@pytest.mark.parametrize(
    "key, value, text",
    [
        ("accuracy", 0.9123, "91.23%"),
        ("nll", 0.123456, "0.1235"),
        ("ece", None, "—"),
        ("latency_ms", 0.0123, "0.012"),
        ("latency_ms", 320.4, "320"),
        ("n_parameters", 11_689_512, "11.7M"),
        ("n_parameters", 25_000, "25.0K"),
        ("n_parameters", 650, "650"),
        ("file_size", 2048, "2.0 KB"),
        ("file_size", 46_830_571, "44.7 MB"),
        ("n_members_used", 3, "3"),
        ("size_ratio", 2.456, "2.46×"),
        ("size_ratio", 0.93, "0.93× (larger)"),
    ],
)
def test_format_value(key, value, text):
    assert format_value(key, value) == text


def test_cv_columns_follow_the_selection_metric():
    assert format_value("cv_mean", 0.8512, metric="acc") == "85.12%"
    assert format_value("cv_std", 0.0123, metric="accuracy") == "1.23 pp"
    assert format_value("cv_mean", 0.31234, metric="nll") == "0.3123"


def test_render_markdown_table_aligns_numbers_and_escapes_pipes():
    table = render_markdown_table([{"name": "a|b", "accuracy": 0.5}], ["name", ("accuracy", "acc")])
    assert table.splitlines() == ["| name | acc |", "| :--- | ---: |", "| a\\|b | 50.00% |"]


DEPLOYMENT = [
    {"name": "ONNX fp32", "file": "fused.onnx", "file_size": 3_400_000, "size_ratio": 1.0,
     "accuracy": 0.9577, "nll": 0.15, "latency_ms": 0.16, "speedup": 1.0},
    {"name": "int8 (dynamic)", "file": "fused.int8.onnx", "file_size": 906_000, "size_ratio": 3.75,
     "accuracy": 0.9555, "delta_pp": -0.22, "delta_pp_validation": 0.0, "nll": 0.151,
     "latency_ms": 0.12, "speedup": 1.33},
]  # fmt: skip


def test_deployment_rows_get_a_table_a_figure_and_a_json_entry(make_report, tmp_path):
    paths = write_report(make_report(deployment=DEPLOYMENT), tmp_path)
    page = paths["html"].read_text()
    assert "<h2>Deployment</h2>" in page
    for cell in ("fused.int8.onnx", "3.75×", "-0.22 pp", "1.33×", "3.2 MB"):
        assert cell in page
    assert (tmp_path / "figures" / "deployment.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "## Deployment" in paths["markdown"].read_text()
    assert json.loads(paths["metrics"].read_text())["deployment"][1]["size_ratio"] == 3.75


def test_deployment_breakdown_gets_a_member_by_graph_table(make_report, tmp_path):
    parts = {
        "ONNX fp32": [("knn", 460_000, 0.64, 1.1, 0.34), ("forest", 68_000, 0.09, 0.2, 0.06)],
        "int8 (dynamic)": [("knn", 58_000, 0.2, 1.1, 0.3), ("forest", 68_000, 0.25, 0.21, 0.06)],
    }
    rows = [
        {
            **row,
            "breakdown": [
                dict(zip(("member", "bytes", "bytes_share", "ms", "time_share"), p))
                for p in parts[row["name"]]
            ],
        }
        for row in DEPLOYMENT
    ]
    paths = write_report(make_report(deployment=rows), tmp_path)
    page = paths["html"].read_text()
    assert "Where the bytes and the time go" in page
    assert "449.2 KB (64%) · 1.100 ms (34%)" in page and "56.6 KB (20%) · 1.100 ms (30%)" in page
    markdown = paths["markdown"].read_text()
    assert "| member | ONNX fp32 | int8 (dynamic) |" in markdown
    assert (tmp_path / "figures" / "deployment_breakdown.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "figures/deployment_breakdown.png" in markdown
    assert "breakdown" not in page.split("Where the bytes")[0]  # not a column of the main table


def test_deployment_without_breakdowns_draws_no_breakdown_figure(make_report, tmp_path):
    write_report(make_report(deployment=DEPLOYMENT), tmp_path)
    assert (tmp_path / "figures" / "deployment.png").is_file()
    assert not (tmp_path / "figures" / "deployment_breakdown.png").exists()


def test_report_without_deployment_has_no_such_section(written):
    _, paths = written
    assert "Deployment" not in paths["html"].read_text()
    assert "figure_deployment" not in paths


def test_the_chosen_model_in_detail_has_per_class_metrics_a_confusion_matrix_and_a_paired_test(
    written, report
):
    out, files = written
    doc = json.loads(files["metrics"].read_text())
    details = doc["details"]
    assert len(details["classes"]) == len(report.class_names)
    assert {"precision", "recall", "f1", "support", "roc_auc", "pr_auc"} <= set(details["classes"][0])
    assert sum(map(sum, details["confusion"])) == len(report.y_test)
    assert (
        0 <= details["paired_test"]["p_value"] <= 1
        and details["paired_test"]["against"] == report.best_member
    )
    html_text = files["html"].read_text()
    assert "in detail</h2>" in html_text and "McNemar exact" in html_text
    assert (out / "figures" / "confusion.png").is_file()


def test_the_report_says_when_and_with_which_libraries_it_was_made(tmp_path, make_report):
    report = make_report()
    report.versions, report.created = {"modelfusion": "0.1.0", "numpy": "2.4"}, "2026-12-02T00:00:00+00:00"
    report.data_summary = {
        "validation_rows": 449,
        "test_rows": 449,
        "features": 64,
        "class_counts": {"0": 44, "1": 46},
    }
    files = write_report(report, tmp_path)
    text = files["markdown"].read_text()
    assert "made 2026-12-02T00:00:00+00:00 · modelfusion 0.1.0, numpy 2.4" in text
    assert (
        "449 validation and 449 test rows; 64 features; 2 classes in validation, 44 to 46 rows each." in text
    )


def test_a_regression_report_plots_predicted_against_actual(regression_report, tmp_path):
    write_report(regression_report, tmp_path)
    assert (tmp_path / "figures" / "regression_fit.png").is_file()
    assert not (tmp_path / "figures" / "confusion.png").exists()
