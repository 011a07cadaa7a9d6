"""Smaller tree-ensemble graphs: drop what ONNX Runtime would read as its default anyway.

skl2onnx writes every leaf's weight for every class, and per-node attributes that hold only
their default value. A random forest's leaves are mostly pure, so most class weights are
zero; in a multiclass ``TreeEnsembleClassifier`` a missing (leaf, class) entry adds the same
zero, so dropping those entries and the all-default attributes changes no output and, for
deep forests, removes most of the graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Per-node attributes that may be left out when every value is the default.
_DEFAULTS = {"nodes_hitrates": 1.0, "nodes_missing_value_tracks_true": 0}
_CLASS_LISTS = ("class_treeids", "class_nodeids", "class_ids")
_TREE_OPS = ("TreeEnsembleClassifier", "TreeEnsembleRegressor")


def compact_tree_ensembles(model: Any) -> int:
    """Drop zero class weights (multiclass only) and all-default node attributes from tree ensembles, in place.

    Binary classifiers keep every class weight: ONNX Runtime decides how to read them from
    which class ids appear. Returns how many attribute values were removed.

    Examples
    --------
    >>> proto = skl2onnx.to_onnx(RandomForestClassifier().fit(X, y), X[:1])
    >>> removed = compact_tree_ensembles(proto)  # the graph computes the same, with fewer bytes
    """
    removed = 0
    for node in model.graph.node:
        if node.domain != "ai.onnx.ml" or node.op_type not in _TREE_OPS:
            continue
        attrs = {a.name: a for a in node.attribute}
        for name, default in _DEFAULTS.items():
            attr = attrs.get(name)
            values = None if attr is None else (attr.floats or attr.ints)
            if values is not None and np.all(np.asarray(values) == default):
                removed += len(values)
                node.attribute.remove(attr)
        removed += _drop_zero_class_weights(node, attrs)
    return removed


def _drop_zero_class_weights(node: Any, attrs: dict[str, Any]) -> int:
    labels = attrs.get("classlabels_int64s") or attrs.get("classlabels_strings")
    n_classes = 0 if labels is None else len(labels.ints) or len(labels.strings)
    weights = attrs.get("class_weights")
    if node.op_type != "TreeEnsembleClassifier" or n_classes <= 2 or weights is None:
        return 0
    if any(attrs.get(name) is None for name in _CLASS_LISTS):
        return 0
    w = np.asarray(weights.floats)
    keep = w != 0
    if keep.all():
        return 0
    if not keep.any():  # keep one entry: the attribute lists must not be empty
        keep[0] = True
    kept = w[keep].tolist()
    del weights.floats[:]
    weights.floats.extend(kept)
    for name in _CLASS_LISTS:
        values = np.asarray(attrs[name].ints)[keep].tolist()
        del attrs[name].ints[:]
        attrs[name].ints.extend(values)
    return int((~keep).sum()) * (1 + len(_CLASS_LISTS))
