"""Loading .skops files never runs code named in the file unless the user trusts it."""

from __future__ import annotations

import json
import zipfile
import zoneinfo
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from modelfusion.errors import UnsafeFormatError
from modelfusion.safe_skops import is_safe_type, load_skops


def _tampered(tmp_path: Path, module: str, function: str) -> tuple[Path, Path]:
    """A real .skops file whose one reduce-node is rewritten to call ``module.function(code)``."""
    clf = LogisticRegression().fit(np.random.default_rng(0).random((20, 2)), np.arange(20) % 2)
    clf.extra_ = zoneinfo.ZoneInfo("UTC")  # gives the file a reduce-node to rewrite
    legit = tmp_path / "legit.skops"
    sio.dump(clf, legit)
    marker = tmp_path / "ran"
    with zipfile.ZipFile(legit) as z:
        schema = json.loads(z.read("schema.json"))
        node = _find_reduce_node(schema)
        node["__module__"], node["__class__"] = module, function
        code = json.dumps(f"open({str(marker)!r}, 'w').write('x')")
        node["content"] = {
            "__class__": "tuple",
            "__module__": "builtins",
            "__loader__": "TupleNode",
            "content": [
                {
                    "__class__": "str",
                    "__module__": "builtins",
                    "__loader__": "JsonNode",
                    "content": code,
                    "is_json": True,
                },
                {
                    "__class__": "dict",
                    "__module__": "builtins",
                    "__loader__": "DictNode",
                    "content": {},
                    "key_types": {
                        "__class__": "list",
                        "__module__": "builtins",
                        "__loader__": "ListNode",
                        "content": [],
                    },
                },
            ],
        }
        evil = tmp_path / "evil.skops"
        with zipfile.ZipFile(evil, "w") as out:
            for name in z.namelist():
                out.writestr(name, json.dumps(schema) if name == "schema.json" else z.read(name))
    return evil, marker


def _find_reduce_node(obj):
    if isinstance(obj, dict):
        if obj.get("__loader__") == "ConstructorFromReduceNode":
            return obj
        obj = list(obj.values())
    if isinstance(obj, list):
        for value in obj:
            if (found := _find_reduce_node(value)) is not None:
                return found
    return None


@pytest.mark.parametrize(
    ("module", "function"), [("numpy.testing._private.utils", "runstring"), ("builtins", "exec")]
)
def test_skops_file_naming_a_function_is_refused_and_nothing_runs(tmp_path, module, function):
    evil, marker = _tampered(tmp_path, module, function)
    with pytest.raises(UnsafeFormatError, match=function):
        load_skops(evil)
    assert not marker.exists()


def test_sklearn_internal_classes_are_trusted_functions_are_not():
    assert is_safe_type("sklearn.tree._tree.Tree")
    assert is_safe_type("numpy.dtype")
    assert not is_safe_type("numpy.testing._private.utils.runstring")
    assert not is_safe_type("builtins.exec")
    assert not is_safe_type("sklearn.does_not.Exist")


def test_tree_models_load_without_trust(tmp_path):
    X, y = np.random.default_rng(0).random((30, 3)), np.arange(30) % 3
    tree = DecisionTreeClassifier(max_depth=2).fit(X, y)
    sio.dump(tree, tmp_path / "tree.skops")
    np.testing.assert_array_equal(load_skops(tmp_path / "tree.skops").predict(X), tree.predict(X))
