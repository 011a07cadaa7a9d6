"""prepare_deployment / iter_deployment: graphs written into a saved bundle and measured, row by row."""

from __future__ import annotations

import shutil

from modelfusion import FusedModel
from modelfusion.runtime.deployment import deployment_steps, prepare_deployment


def test_each_step_writes_its_graph_and_measures_it(digits_bundle, digits_split, tmp_path):
    bundle = shutil.copytree(digits_bundle, tmp_path / "bundle")
    model = FusedModel.load(bundle)
    d = digits_split
    rows = prepare_deployment(
        model, bundle, (d["X_val"], d["y_val"]), (d["X_test"], d["y_test"]), quantize="dynamic", repeats=2
    )
    assert [r["name"] for r in rows] == deployment_steps("dynamic") == ["ONNX fp32", "int8 (dynamic)"]
    fp32, int8 = rows
    assert int8["size_ratio"] > 2 and abs(int8["delta_pp"]) <= 1.0 and fp32["accuracy"] > 0.9
    assert {p["member"] for p in int8["breakdown"]} >= set(model.names)
    assert all((bundle / r["file"]).stat().st_size == r["file_size"] for r in rows)
    FusedModel.load(bundle)  # both graphs recorded with their checksums
