"""Classification metrics: macro AUROC / AUPRC, per-class AUROC, and F1 at thresholds tuned on validation.

Built on scikit-learn's implementations; this module only decides how classes without both positives and
negatives are treated (left out of the macro average and reported, as the PTB-XL benchmark code does by
dropping empty classes) and how thresholds are tuned.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _defined(y_true: np.ndarray) -> np.ndarray:
    """Classes whose ground truth has both positives and negatives (AUROC is undefined otherwise)."""
    pos = y_true.sum(axis=0)
    return (pos > 0) & (pos < y_true.shape[0])


def roc_auc_per_class(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """ROC AUC of every column at once: the Mann-Whitney statistic on mid-ranks, which equals scikit-learn's
    ``roc_auc_score`` (ties count one half) to rounding. NaN for a column without both outcomes.

    Written here rather than calling ``roc_auc_score`` per column because test metrics are bootstrapped 1,000
    times per run and sklearn's per-call input validation dominated that (12 ms per resample for 5 classes);
    ``tests/test_metrics_and_recipe.py`` checks the values against sklearn, ties included.
    """
    from scipy.stats import rankdata

    y = np.asarray(y_true).astype(bool)
    ranks = rankdata(np.asarray(y_score, dtype=np.float64), axis=0)
    n_pos = y.sum(axis=0).astype(np.float64)
    n_neg = y.shape[0] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * y).sum(axis=0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def average_precision_per_class(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """Average precision of every column, as scikit-learn's ``average_precision_score`` (the step-wise sum
    of precision times recall increments over distinct score thresholds, no interpolation). NaN for a column
    without positives. Written here for the same reason as :func:`roc_auc_per_class`."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(y_score, dtype=np.float64)
    out = np.full(y.shape[1], np.nan)
    for c in range(y.shape[1]):
        pos = y[:, c].sum()
        if pos == 0:
            continue
        order = np.argsort(-s[:, c], kind="mergesort")
        sc, yc = s[order, c], y[order, c]
        last = np.r_[np.flatnonzero(np.diff(sc)), len(sc) - 1]  # the last index of each distinct score
        tp = np.cumsum(yc)[last]
        precision = tp / (last + 1)
        recall = tp / pos
        out[c] = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return out


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
    auroc = roc_auc_per_class(y_true, y_score)
    per_auroc: dict[str, float | None] = {name: float(auroc[c]) if ok[c] else None for c, name in enumerate(labels)}
    thr = np.full(len(labels), 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    pred = y_score >= thr[None, :]
    truth = y_true.astype(bool)
    # Per-class F1 by counting (sklearn reads a one-column indicator matrix as a binary problem).
    tp = (pred & truth).sum(axis=0)
    per_f1 = 2 * tp / np.maximum(2 * tp + (pred & ~truth).sum(axis=0) + (~pred & truth).sum(axis=0), 1)
    result: dict[str, object] = {
        "n_samples": int(y_true.shape[0]),
        # sklearn's macro averages are the plain means of the per-class values over the defined classes.
        "macro_auroc": float(np.mean(auroc[ok])) if ok.any() else None,
        "macro_auprc": float(np.mean(average_precision_per_class(y_true[:, ok], y_score[:, ok]))) if ok.any() else None,
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
    # Everything below derives from the confusion matrix, computed here in one bincount because bootstrapped test
    # metrics call this 1,000 times per run (sklearn's four calls cost ~6 ms each time).
    k = len(labels)
    cm = np.bincount(y_true * k + pred, minlength=k * k).reshape(k, k).astype(np.float64)
    result.update(confusion_matrix_metrics(cm, labels))
    result.pop("thresholds", None)
    return result


def confusion_matrix_metrics(cm: np.ndarray, labels: Sequence[str]) -> dict[str, object]:
    """Accuracy, macro F1, Cohen's kappa, balanced accuracy and per-class F1 of a confusion matrix (rows true,
    columns predicted; counts, or weighted counts), with scikit-learn's definitions (``f1_score`` with
    ``zero_division=0`` over every label, ``cohen_kappa_score``, ``balanced_accuracy_score`` over the classes
    present). tests/test_metrics_and_recipe.py checks the values against sklearn.

    Example:
        >>> m = confusion_matrix_metrics(np.array([[2, 1], [0, 3]]), ["a", "b"])
        >>> round(m["kappa"], 4), m["accuracy"]
        (0.6667, 0.8333333333333334)
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    per_f1 = 2 * tp / np.maximum(2 * tp + (predicted - tp) + (support - tp), 1)
    n = float(cm.sum())
    # kappa is undefined (sklearn warns and returns nan) when both raters use a single class
    agree_trivially = int(((support + predicted) > 0).sum()) < 2
    expected = float((support * predicted).sum() / n**2)
    present = support > 0
    return {
        "accuracy": float(tp.sum() / n),
        "macro_f1": float(per_f1.mean()),
        "kappa": None if agree_trivially else float((tp.sum() / n - expected) / (1 - expected)),
        "balanced_accuracy": float(np.mean(tp[present] / support[present])) if present.sum() > 1 else None,
        "per_class_f1": {name: float(v) for name, v in zip(labels, per_f1)},
    }


# Regression metrics where a smaller value is the better one (model selection and `compare` read this).
LOWER_IS_BETTER: frozenset[str] = frozenset({"mae", "rmse", "mse", "loss"})


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of ``metric`` is better: losses and regression errors (``mae``, ``rmse``,
    ``per_target_mae/age``, ``eval_loss``); every other metric (AUROC, F1, R², r, kappa) is higher-is-better.

    Example:
        >>> lower_is_better("mae"), lower_is_better("eval_loss"), lower_is_better("r2")
        (True, True, False)
    """
    name = metric.removeprefix("eval_").split("/", 1)[0].removeprefix("per_target_")
    return name in LOWER_IS_BETTER or name.endswith("loss")


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, targets: Sequence[str]) -> dict[str, object]:
    """Metrics of a regression problem with ``targets`` (columns), NaN targets masked.

    A record whose target is NaN (not recorded) is left out of that target's metrics, not of the others';
    ``n_samples`` counts the records with the (first) target, ``n_missing`` those without. Top-level ``mae``,
    ``rmse``, ``r2`` (coefficient of determination, as ``sklearn.metrics.r2_score``) and ``pearson_r`` are the
    means over targets (the one target's values for a single target); ``per_target_<metric>`` holds each
    target's. ``None`` where undefined (no record with the target; R² and r of a constant truth).

    Computed here with numpy rather than sklearn's per-call-validated functions because test metrics are
    bootstrapped 1,000 times per run; ``tests/test_regression.py`` checks the values against sklearn/scipy.

    Example:
        >>> m = regression_metrics(np.array([[50.0], [60.0], [np.nan]]), np.array([[52.0], [57.0], [40.0]]), ["age"])
        >>> m["mae"], m["n_samples"], m["n_missing"]
        (2.5, 2, 1)
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.ndim == 1:
        y_true = y_true[:, None]
    if y_pred.ndim == 1:
        y_pred = y_pred[:, None]
    if y_true.shape != y_pred.shape or y_true.shape[1] != len(targets):
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must both be (samples, {len(targets)} targets)")
    if not np.isfinite(y_pred).all():
        raise ValueError("y_pred contains NaN or infinite values")
    per: dict[str, dict[str, float | None]] = {k: {} for k in ("mae", "rmse", "r2", "pearson_r")}
    counts = []
    for c, name in enumerate(targets):
        keep = np.isfinite(y_true[:, c])
        t, p = y_true[keep, c], y_pred[keep, c]
        counts.append(int(keep.sum()))
        if t.size == 0:
            for k in per:
                per[k][name] = None
            continue
        err = p - t
        per["mae"][name] = float(np.abs(err).mean())
        per["rmse"][name] = float(np.sqrt((err**2).mean()))
        ss_tot = float(((t - t.mean()) ** 2).sum())
        per["r2"][name] = None if ss_tot == 0 else float(1.0 - (err**2).sum() / ss_tot)
        sp = float(np.sqrt(((p - p.mean()) ** 2).sum() * ss_tot))
        per["pearson_r"][name] = None if sp == 0 else float(((p - p.mean()) * (t - t.mean())).sum() / sp)
    result: dict[str, object] = {"n_samples": counts[0], "n_missing": int(y_true.shape[0] - counts[0])}
    for k, values in per.items():
        defined = [v for v in values.values() if v is not None]
        result[k] = float(np.mean(defined)) if defined else None
    if len(targets) > 1:
        result["n_samples_per_target"] = dict(zip(targets, counts))
        for k, values in per.items():
            result[f"per_target_{k}"] = values
    return result
