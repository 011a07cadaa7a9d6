"""graph_breakdown: each member's bytes and kernel time in a fused graph, on real ONNX Runtime sessions."""

from __future__ import annotations

import pytest

from modelfusion.runtime import graph_breakdown, quantize_onnx


@pytest.fixture(scope="module")
def fused_graph(digits_fused, tmp_path_factory):
    return digits_fused.export_onnx(tmp_path_factory.mktemp("graphs") / "fused.onnx")


def test_every_member_is_charged_its_bytes_and_they_add_up_to_the_file(fused_graph, digits_fused):
    rows = graph_breakdown(fused_graph)
    assert set(digits_fused.names) <= {r["member"] for r in rows} <= {*digits_fused.names, "fusion"}
    total = sum(r["bytes"] for r in rows)
    assert 0.97 * fused_graph.stat().st_size <= total <= fused_graph.stat().st_size
    assert [r["bytes"] for r in rows] == sorted((r["bytes"] for r in rows), reverse=True)
    assert sum(r["bytes_share"] for r in rows) == pytest.approx(1.0)
    assert "ms" not in rows[0]  # no data, no timing


def test_kernel_times_are_charged_to_members_even_after_runtime_fusions(fused_graph, digits_split):
    rows = graph_breakdown(fused_graph, digits_split["X_test"][:64], runs=3)
    by_member = {r["member"]: r for r in rows}
    assert all(r["ms"] >= 0 for r in rows)
    assert sum(r["time_share"] for r in rows) == pytest.approx(1.0)
    # the k-NN member computes distances to its whole training set: never free
    assert by_member["knn"]["ms"] > 0
    # the rule is small next to the members
    assert by_member["fusion"]["time_share"] < 0.5


def test_int8_shrinks_the_knn_training_set_and_leaves_trees_as_they_are(fused_graph, tmp_path):
    before = {r["member"]: r["bytes"] for r in graph_breakdown(fused_graph)}
    int8 = quantize_onnx(fused_graph, tmp_path / "fused.int8.onnx", mode="dynamic")
    after = {r["member"]: r["bytes"] for r in graph_breakdown(int8)}
    assert after["knn"] < before["knn"] / 4
    assert after["forest"] == before["forest"]


def test_a_missing_graph_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.onnx does not exist"):
        graph_breakdown(tmp_path / "nope.onnx")


def test_time_of_nodes_onnx_runtime_renames_stays_with_their_member(fused_graph, digits_split, tmp_path):
    # fp16 on a CPU: ONNX Runtime casts back to float and prefixes the nodes it rewrites
    half = quantize_onnx(fused_graph, tmp_path / "fused.fp16.onnx", precision="fp16")
    rows = {r["member"]: r for r in graph_breakdown(half, digits_split["X_test"][:64], runs=3)}
    assert rows["cnn"]["ms"] > 0 and rows["knn"]["ms"] > 0
    assert rows["fusion"]["time_share"] < 0.5


def test_a_member_called_fusion_is_not_merged_with_the_rule(digits_split, tmp_path):
    from sklearn.linear_model import LogisticRegression

    from modelfusion import FusedModel, load_member, score_members
    from modelfusion.strategies import Mean

    X, y = digits_split["X_val"], digits_split["y_val"]
    members = [
        load_member(LogisticRegression(max_iter=300).fit(X, y), name=name) for name in ("fusion", "hand")
    ]
    graph = FusedModel(members, Mean().fit(score_members(members, X, progress=False))).export_onnx(
        tmp_path / "fused.onnx"
    )
    rows = graph_breakdown(graph, X[:32], runs=2)
    assert sorted(r["member"] for r in rows) == ["fusion", "fusion (rule)", "hand"]
    assert sum(r["bytes_share"] for r in rows) == pytest.approx(1.0)
    assert sum(r["time_share"] for r in rows) == pytest.approx(1.0)
