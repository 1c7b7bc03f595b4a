"""Sleep-staging metrics: accuracy, Cohen's kappa, macro F1, one-vs-rest AUROC, confusion matrix, per subject.

Published ECG-only sleep-staging results are reported as **Cohen's kappa** (with accuracy) over all test
epochs, often with the mean ± SD of per-subject kappa; compare against those with ``kappa``, not AUROC:

* Sridhar et al. 2020 (npj Digit Med), 4 classes W / light / deep / REM from ECG heart rate, held-out SHHS:
  accuracy 0.77, kappa 0.66.
* Jones et al. 2023/24 ("cardiosomnography"), single-lead ECG, 5 stages: kappa 0.725.
* sleepecg's GRU models trained on MESA, tested on SHHS: wake/sleep accuracy 0.83, kappa 0.60;
  wake/REM/NREM accuracy 0.75, kappa 0.54.

(Numbers from ``../shared/reference/datasets.md`` §1.10, checked there against the abstracts / sleepecg docs.)

Epochs are pooled over subjects for the headline numbers (as those papers do); ``subject_*`` summarise the
per-subject values. A subject whose epochs (true and predicted) all fall in one class has no defined kappa:
it is listed in ``subjects_kappa_undefined`` and left out of the kappa mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import cohen_kappa_score, confusion_matrix, f1_score, roc_auc_score

from .bootstrap import Interval, _scalar_metrics, bootstrap_intervals, group_rows
from .metrics import confusion_matrix_metrics


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1); ``None`` where undefined."""
    if not values:
        return None, None
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else None)


def _kappa(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float | None:
    """Cohen's kappa (sklearn), ``None`` when chance agreement is 1 (one class in truth and prediction)."""
    observed = np.unique(np.concatenate([y_true, y_pred]))
    if len(observed) < 2:
        return None
    return float(cohen_kappa_score(y_true, y_pred, labels=list(range(n_classes))))


def staging_metrics(
    y_true: Sequence[int] | np.ndarray,
    y_prob: np.ndarray,
    subject_ids: Sequence[Any] | None,
    labels: Sequence[str],
) -> dict[str, Any]:
    """Score epoch-wise stage predictions.

    Args:
        y_true: class index of every epoch (``task.encode`` of a single-label task), shape ``(n,)``.
        y_prob: class probabilities (or any scores; the prediction is the argmax), shape ``(n, classes)``.
        subject_ids: the subject of every epoch (``source.subject_of(epoch_id)``), or ``None`` to skip the
            per-subject part.
        labels: the class names, in column order.

    Returns:
        A JSON-ready dict: ``n_epochs``, ``accuracy``, ``kappa`` (Cohen's), ``macro_f1``, ``per_class_f1``,
        ``macro_auroc`` (one-vs-rest, over classes with positives and negatives), ``per_class_auroc``
        (``None`` where undefined), ``support``, ``confusion_matrix`` (rows true, columns predicted, in
        ``labels`` order), and with subjects: ``n_subjects``, ``subject_kappa_mean`` / ``_sd`` / ``_min`` / ``_max``,
        ``subject_accuracy_mean`` / ``_sd`` (sample SD), ``subjects_kappa_undefined`` and ``per_subject``
        (``{subject: {"n_epochs", "accuracy", "kappa"}}``).

    Example:
        >>> m = staging_metrics([0, 1, 1], np.array([[.9, .1], [.2, .8], [.6, .4]]), ["a", "a", "b"], ["W", "S"])
        >>> m["accuracy"], m["confusion_matrix"]
        (0.6666666666666666, [[1, 0], [1, 1]])
    """
    labels = list(labels)
    y_true = np.asarray(y_true)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    n_classes = len(labels)
    if y_true.ndim != 1:
        raise ValueError(f"y_true must be one class index per epoch, got shape {y_true.shape}")
    if y_prob.ndim != 2 or y_prob.shape != (len(y_true), n_classes):
        raise ValueError(f"y_prob must have shape (epochs, classes) = ({len(y_true)}, {n_classes}), got {y_prob.shape}")
    if len(y_true) == 0:
        raise ValueError("no epochs to score")
    if not np.issubdtype(y_true.dtype, np.integer) or y_true.min() < 0 or y_true.max() >= n_classes:
        raise ValueError(f"y_true must hold integer class indices in [0, {n_classes}), got {np.unique(y_true)[:10]}")
    if not np.isfinite(y_prob).all():
        raise ValueError("y_prob contains NaN or infinite values")
    class_ids = list(range(n_classes))
    y_pred = y_prob.argmax(axis=1)

    onehot = np.eye(n_classes, dtype=int)[y_true]
    per_auroc: dict[str, float | None] = {}
    for c, name in enumerate(labels):
        n_pos = int(onehot[:, c].sum())
        per_auroc[name] = float(roc_auc_score(onehot[:, c], y_prob[:, c])) if 0 < n_pos < len(y_true) else None
    defined = [v for v in per_auroc.values() if v is not None]
    per_f1 = f1_score(y_true, y_pred, labels=class_ids, average=None, zero_division=0)
    result: dict[str, Any] = {
        "n_epochs": len(y_true),
        "accuracy": float((y_pred == y_true).mean()),
        "kappa": _kappa(y_true, y_pred, n_classes),
        "macro_f1": float(f1_score(y_true, y_pred, labels=class_ids, average="macro", zero_division=0)),
        "per_class_f1": {name: float(v) for name, v in zip(labels, per_f1)},
        # macro one-vs-rest = the unweighted mean of the per-class AUROCs (sklearn's average="macro")
        "macro_auroc": float(np.mean(defined)) if defined else None,
        "per_class_auroc": per_auroc,
        "support": {name: int(n) for name, n in zip(labels, onehot.sum(axis=0))},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=class_ids).tolist(),
        "labels": labels,
    }
    if subject_ids is None:
        return result
    subjects = np.asarray([str(s) for s in subject_ids])
    if len(subjects) != len(y_true):
        raise ValueError(f"{len(subjects)} subject ids for {len(y_true)} epochs")
    per_subject: dict[str, dict[str, Any]] = {}
    for s, rows in zip(*group_rows(subjects)):
        per_subject[str(s)] = {
            "n_epochs": len(rows),
            "accuracy": float((y_pred[rows] == y_true[rows]).mean()),
            "kappa": _kappa(y_true[rows], y_pred[rows], n_classes),
        }
    kappas = [v["kappa"] for v in per_subject.values() if v["kappa"] is not None]
    accs = [v["accuracy"] for v in per_subject.values()]
    result["n_subjects"] = len(per_subject)
    result["subject_kappa_mean"], result["subject_kappa_sd"] = _mean_sd(kappas)
    result["subject_kappa_min"] = float(min(kappas)) if kappas else None
    result["subject_kappa_max"] = float(max(kappas)) if kappas else None
    result["subject_accuracy_mean"], result["subject_accuracy_sd"] = _mean_sd(accs)
    result["subjects_kappa_undefined"] = [s for s, v in per_subject.items() if v["kappa"] is None]
    result["per_subject"] = per_subject
    return result


def staging_intervals(
    y_true: Sequence[int] | np.ndarray,
    y_prob: np.ndarray,
    subject_ids: Sequence[Any],
    labels: Sequence[str],
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Interval]:
    """Bootstrap intervals of the staging metrics, resampling **subjects** (all epochs of a drawn subject together;
    epochs of one night are not independent).

    Intervals are given for the metrics staging is reported with, all functions of the confusion matrix
    (:func:`~ecg_adapt.tasks.metrics.confusion_matrix_metrics`: ``kappa``, ``accuracy``, ``macro_f1``,
    ``balanced_accuracy``, ``per_class_f1/<stage>``), and for ``subject_kappa_mean``: a subject drawn twice counts
    twice in the mean (its kappa is computed once, on all its epochs, as in :func:`staging_metrics`; subjects with an
    undefined kappa are left out as there). A resample's confusion matrix is the sum of its subjects' matrices,
    so a resample costs one pass over the subjects, not over the epochs: 1,000 resamples of a 100,000-epoch test
    set take seconds, where recomputing every metric (AUROCs included) from the epochs takes minutes.

    Example:
        >>> y = np.array([0, 1, 1, 0, 1, 0, 0, 1]); p = np.eye(2)[[0, 1, 0, 0, 1, 1, 0, 1]]
        >>> cis = staging_intervals(y, p, list("aabbccdd"), ["W", "S"], n_resamples=50)
        >>> sorted(k for k in cis if k.startswith(("kappa", "subject_")))
        ['kappa', 'subject_kappa_mean']
    """
    labels = list(labels)
    y_true = np.asarray(y_true)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    subjects = np.asarray([str(s) for s in subject_ids])
    if len(subjects) != len(y_true) or len(y_prob) != len(y_true):
        raise ValueError(f"{len(y_true)} epochs, {len(y_prob)} probability rows and {len(subjects)} subject ids")
    codes, code = np.unique(subjects, return_inverse=True)
    n_classes = len(labels)
    sizes = np.bincount(code, minlength=len(codes))
    y_pred = y_prob.argmax(axis=1)
    kappa = np.array([np.nan if (k := _kappa(y_true[rows], y_pred[rows], n_classes)) is None else k
                      for rows in group_rows(subjects)[1]])
    defined = np.isfinite(kappa)
    per_subject_cm = np.zeros((len(codes), n_classes, n_classes))
    np.add.at(per_subject_cm, (code, y_true, y_pred), 1)

    def statistic(idx: np.ndarray) -> dict[str, float | None]:
        draws = np.bincount(code[idx], minlength=len(codes)) / sizes  # how often each subject was drawn
        m = confusion_matrix_metrics(np.tensordot(draws, per_subject_cm, axes=1), labels)
        out = _scalar_metrics(m)
        out.update({f"per_class_f1/{k}": v for k, v in m["per_class_f1"].items()})  # type: ignore[union-attr]
        w = draws * defined
        out["subject_kappa_mean"] = float((w * np.nan_to_num(kappa)).sum() / w.sum()) if w.sum() > 0 else None
        return out

    return bootstrap_intervals(statistic, len(y_true), code, n_resamples, level, seed)


def format_staging_report(metrics: dict[str, Any]) -> str:
    """The staging metrics of a ``metrics.json`` section (``test``) as text, under their real names: Cohen's kappa
    (with its interval when one was computed), accuracy, macro F1, F1 per stage, per-subject kappa and the
    confusion matrix (what ``ecg-adapt train`` prints for a staging run).

    Example:
        >>> m = staging_metrics([0, 1, 1, 0], np.eye(2)[[0, 1, 0, 0]], ["a", "a", "b", "b"], ["W", "S"])
        >>> print(format_staging_report(m).splitlines()[0])
        Cohen's kappa: 0.5000 (no interval computed)
    """
    from .bootstrap import describe_test_metric

    def value(name: str) -> str:
        v = metrics.get(name)
        return "n/a" if v is None else describe_test_metric(metrics, name)

    labels = list(metrics.get("labels") or metrics.get("per_class_f1", {}))
    lines = [f"Cohen's kappa: {value('kappa')}", f"accuracy: {value('accuracy')}", f"macro F1: {value('macro_f1')}"]
    f1 = metrics.get("per_class_f1") or {}
    lines.append("F1 per stage: " + ", ".join(f"{k} {v:.4f}" for k, v in f1.items()))
    if metrics.get("n_subjects"):
        def fmt(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.4f}"

        undefined = metrics.get("subjects_kappa_undefined") or []
        lines.append(
            f"per-subject kappa over {metrics['n_subjects']} subjects: mean {fmt(metrics.get('subject_kappa_mean'))}, "
            f"SD {fmt(metrics.get('subject_kappa_sd'))}, min {fmt(metrics.get('subject_kappa_min'))}, "
            f"max {fmt(metrics.get('subject_kappa_max'))}"
            + (f" ({len(undefined)} subject(s) with a single class: kappa undefined)" if undefined else ""))
    cm = metrics.get("confusion_matrix")
    if cm and labels:
        width = max(6, *(len(x) + 1 for x in labels))
        lines.append("confusion matrix (rows: true stage, columns: predicted):")
        lines.append(" " * width + "".join(f"{x:>{width}}" for x in labels))
        lines += [f"{name:>{width}}" + "".join(f"{n:>{width}}" for n in row) for name, row in zip(labels, cm)]
    return "\n".join(lines)


__all__ = ["format_staging_report", "staging_intervals", "staging_metrics"]
