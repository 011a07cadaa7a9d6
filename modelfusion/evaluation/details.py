"""The chosen model in detail: per-class metrics and a paired test against the best member.

Examples
--------
>>> rows, overall = class_metrics(y_test, fused_proba, ["cat", "dog"])
>>> paired_test(y_test, fused_proba.argmax(1), member_proba.argmax(1))["p_value"]
0.012
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def class_metrics(
    y: np.ndarray, proba: np.ndarray, class_names: Sequence[str]
) -> tuple[list[dict[str, Any]], dict[str, float | None]]:
    """Per-class precision, recall, F1, support and one-vs-rest ROC-AUC / PR-AUC; and the overall figures.

    ``y``: encoded labels [samples]; ``proba``: float array [samples, classes]. A class absent
    from ``y`` has no AUC (None). Overall: balanced accuracy, macro ROC-AUC and PR-AUC.
    """
    from sklearn.metrics import (
        average_precision_score,
        balanced_accuracy_score,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    y = np.asarray(y)
    proba = np.asarray(proba, dtype=np.float64)
    labels = np.arange(proba.shape[1])
    pred = proba.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    rows, rocs, prs = [], [], []
    for k in range(len(labels)):
        positive = y == k
        roc = pr = None
        if 0 < positive.sum() < len(y):
            roc = float(roc_auc_score(positive, proba[:, k]))
            pr = float(average_precision_score(positive, proba[:, k]))
            rocs.append(roc)
            prs.append(pr)
        rows.append(
            {
                "class": str(class_names[k]) if k < len(class_names) else str(k),
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(support[k]),
                "roc_auc": roc,
                "pr_auc": pr,
            }
        )
    overall = {
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "macro_roc_auc": float(np.mean(rocs)) if rocs else None,
        "macro_pr_auc": float(np.mean(prs)) if prs else None,
    }
    return rows, overall


def confusion(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Counts [true class, predicted class] of the argmax predictions."""
    from sklearn.metrics import confusion_matrix

    n = np.asarray(proba).shape[1]
    return confusion_matrix(np.asarray(y), np.asarray(proba).argmax(axis=1), labels=np.arange(n))


def paired_test(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict[str, Any]:
    """McNemar's exact test of two classifiers on the same samples (McNemar, 1947).

    Counts the samples only ``a`` gets right (``a_only``) and only ``b`` gets right
    (``b_only``); under "equally accurate" each such sample is a fair coin, so the two-sided
    binomial test gives the p-value.
    """
    from scipy.stats import binomtest

    a = np.asarray(pred_a) == np.asarray(y)
    b = np.asarray(pred_b) == np.asarray(y)
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    n = a_only + b_only
    p = 1.0 if n == 0 else float(binomtest(a_only, n, 0.5).pvalue)
    return {"a_only": a_only, "b_only": b_only, "p_value": p, "test": "McNemar exact (binomial)"}
