"""Classification metrics: macro AUROC / AUPRC, per-class AUROC, and F1 at thresholds tuned on validation.

Built on scikit-learn's implementations; this module only decides how classes without both positives and
negatives are treated (left out of the macro average and reported, as the PTB-XL benchmark code does by
dropping empty classes) and how thresholds are tuned.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, balanced_accuracy_score, cohen_kappa_score, f1_score, roc_auc_score


def _defined(y_true: np.ndarray) -> np.ndarray:
    """Classes whose ground truth has both positives and negatives (AUROC is undefined otherwise)."""
    pos = y_true.sum(axis=0)
    return (pos > 0) & (pos < y_true.shape[0])


def tune_thresholds(y_true: np.ndarray, y_score: np.ndarray, grid: np.ndarray | None = None) -> np.ndarray:
    """Per-class probability thresholds that maximise F1 on ``(y_true, y_score)`` (use the validation fold).

    Classes without positives keep 0.5.

    Example:
        >>> tune_thresholds(np.array([[1], [0], [1]]), np.array([[0.7], [0.4], [0.6]]))
        array([0.45])
    """
    y_true = np.asarray(y_true).astype(bool)
    y_score = np.asarray(y_score, dtype=np.float64)
    grid = np.linspace(0.05, 0.95, 19) if grid is None else np.asarray(grid)
    out = np.full(y_true.shape[1], 0.5)
    for c in range(y_true.shape[1]):
        t = y_true[:, c]
        if not t.any():
            continue
        pred = y_score[:, c][None, :] >= grid[:, None]  # (thresholds, samples)
        tp = (pred & t).sum(axis=1)
        fp = (pred & ~t).sum(axis=1)
        fn = (~pred & t).sum(axis=1)
        f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
        out[c] = float(grid[int(np.argmax(f1))])
    return out


def multilabel_metrics(
    y_true: np.ndarray,
    y_score: np.ndarray,
    labels: Sequence[str],
    thresholds: np.ndarray | None = None,
) -> dict[str, object]:
    """Metrics of a multi-label problem.

    Returns ``macro_auroc``, ``macro_auprc`` (over classes with positives and negatives), ``per_class_auroc``
    (``None`` where undefined), ``macro_f1`` / ``per_class_f1`` at ``thresholds`` (0.5 when none are given),
    the thresholds used, and ``n_samples``.
    """
    y_true = np.asarray(y_true).astype(int)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.shape != y_score.shape or y_true.ndim != 2:
        raise ValueError(f"y_true {y_true.shape} and y_score {y_score.shape} must both be (samples, classes)")
    if y_true.shape[1] != len(labels):
        raise ValueError(f"{y_true.shape[1]} classes in the data but {len(labels)} label names")
    if not np.isfinite(y_score).all():
        raise ValueError("y_score contains NaN or infinite values")
    ok = _defined(y_true)
    per_auroc: dict[str, float | None] = {}
    for c, name in enumerate(labels):
        per_auroc[name] = float(roc_auc_score(y_true[:, c], y_score[:, c])) if ok[c] else None
    thr = np.full(len(labels), 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    pred = y_score >= thr[None, :]
    truth = y_true.astype(bool)
    # Per-class F1 by counting (sklearn reads a one-column indicator matrix as a binary problem).
    tp = (pred & truth).sum(axis=0)
    per_f1 = 2 * tp / np.maximum(2 * tp + (pred & ~truth).sum(axis=0) + (~pred & truth).sum(axis=0), 1)
    result: dict[str, object] = {
        "n_samples": int(y_true.shape[0]),
        "macro_auroc": float(roc_auc_score(y_true[:, ok], y_score[:, ok], average="macro")) if ok.any() else None,
        "macro_auprc": float(average_precision_score(y_true[:, ok], y_score[:, ok], average="macro")) if ok.any() else None,
        "per_class_auroc": per_auroc,
        "macro_f1": float(np.mean(per_f1)),
        "per_class_f1": {name: float(v) for name, v in zip(labels, per_f1)},
        "thresholds": {name: float(v) for name, v in zip(labels, thr)},
    }
    undefined = [name for name, v in per_auroc.items() if v is None]
    if undefined:
        result["classes_without_both_outcomes"] = undefined
    return result


def single_label_metrics(
    y_true: np.ndarray, y_score: np.ndarray, labels: Sequence[str]
) -> dict[str, object]:
    """Metrics of a multi-class problem (``y_true`` integer classes, ``y_score`` class probabilities):
    accuracy, macro F1, Cohen's kappa, balanced accuracy, and one-vs-rest macro AUROC / AUPRC over classes
    present in ``y_true``."""
    y_true = np.asarray(y_true).astype(int)
    y_score = np.asarray(y_score, dtype=np.float64)
    onehot = np.eye(len(labels), dtype=int)[y_true]
    result = multilabel_metrics(onehot, y_score, labels)
    pred = y_score.argmax(axis=1)
    result["accuracy"] = float((pred == y_true).mean())
    result["macro_f1"] = float(f1_score(y_true, pred, average="macro", labels=list(range(len(labels))), zero_division=0))
    # kappa is undefined (sklearn warns and returns nan) when both raters use a single class
    agree_trivially = len(np.unique(np.concatenate([y_true, pred]))) < 2
    result["kappa"] = None if agree_trivially else float(cohen_kappa_score(y_true, pred, labels=list(range(len(labels)))))
    result["balanced_accuracy"] = float(balanced_accuracy_score(y_true, pred)) if len(np.unique(y_true)) > 1 else None
    result["per_class_f1"] = {
        n: float(v) for n, v in zip(labels, f1_score(y_true, pred, average=None, labels=list(range(len(labels))), zero_division=0))
    }
    result.pop("thresholds", None)
    return result
