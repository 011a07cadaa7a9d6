"""The built-in digits example: the same seed gives the same members, weights included."""

from __future__ import annotations

import numpy as np
import pytest

from modelfusion import load_member
from modelfusion.examples.digits import build_digits_members


@pytest.mark.slow
def test_digits_members_are_the_same_for_the_same_seed(tmp_path, digits_split):
    first = build_digits_members(tmp_path / "a")
    second = build_digits_members(tmp_path / "b")
    assert [m["name"] for m in first] == [m["name"] for m in second]
    for name in ("cnn.safetensors", "mlp.onnx"):  # initial weights are seeded too
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    X = digits_split["X_test"]
    for name in ("forest", "boosting", "logreg"):
        a, b = (load_member(tmp_path / d / f"{name}.skops", name=name) for d in ("a", "b"))
        np.testing.assert_array_equal(a.predict(X), b.predict(X))
