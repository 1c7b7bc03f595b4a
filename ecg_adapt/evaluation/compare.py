"""Compare runs on their shared test records: each run's metric with its bootstrap interval, paired bootstrap
differences to the best run, and tied-rank groups.

Two runs are only comparable on the same records, so everything is computed on the records that every run
predicted (``shared``), and each bootstrap resample scores every run on the same draw. Ranks follow the
comparison protocol of the ECG foundation-model benchmark (AI4HealthUOL/ecg-fm-benchmarking): a run whose
paired difference to the group's best run is not significant shares the best run's rank.

Example:
    >>> table = compare_runs(["runs/a", "runs/b"])          # doctest: +SKIP
    >>> print(table.to_markdown())                          # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..tasks.bootstrap import (
    DEFAULT_LEVEL,
    DEFAULT_RESAMPLES,
    Interval,
    PairedDifference,
    bootstrap_interval,
    paired_bootstrap_difference,
    record_groups,
)
from ..tasks.metrics import lower_is_better, multilabel_metrics, regression_metrics, single_label_metrics
from .predictions import PREDICTIONS_DIR, Predictions, load_predictions


@dataclass
class RunResult:
    """One row of a comparison."""

    name: str
    path: str
    metric: Interval
    difference_to_best: Interval | None
    p_value: float | None
    rank: int
    best: bool


@dataclass
class Comparison:
    """The result of :func:`compare_runs`."""

    metric: str
    n_shared_records: int
    rows: list[RunResult]
    level: float
    n_resamples: int

    def to_markdown(self) -> str:
        """A markdown table, best run (and runs tied with it) in bold."""
        pct = round(self.level * 100)
        direction = "lower is better" if lower_is_better(self.metric) else "higher is better"
        lines = [
            f"{self.metric} on {self.n_shared_records} shared test records ({direction}; {pct}% bootstrap intervals, "
            f"{self.n_resamples} paired resamples)",
            "",
            f"| rank | run | {self.metric} [{pct}% CI] | difference to best [{pct}% CI] | p |",
            "|---|---|---|---|---|",
        ]
        for r in self.rows:
            value = str(r.metric)
            if r.rank == 1:
                value = f"**{value}**"
            diff = "-" if r.difference_to_best is None else str(r.difference_to_best)
            p = "-" if r.p_value is None else f"{r.p_value:.3f}"
            lines.append(f"| {r.rank} | {r.name} | {value} | {diff} | {p} |")
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["rank", "run", "path", "metric", "estimate", "low", "high", "difference_to_best", "difference_low",
                    "difference_high", "p_value", "n_shared_records"])
        for r in self.rows:
            d = r.difference_to_best
            w.writerow([r.rank, r.name, r.path, self.metric, r.metric.estimate, r.metric.low, r.metric.high,
                        None if d is None else d.estimate, None if d is None else d.low, None if d is None else d.high,
                        r.p_value, self.n_shared_records])
        return buf.getvalue()


def metric_value(predictions: Predictions, metric: str, rows: np.ndarray | None = None) -> float | None:
    """``metric`` of ``predictions`` (restricted to ``rows``): any scalar that :func:`multilabel_metrics` /
    :func:`single_label_metrics` / :func:`regression_metrics` return (``macro_auroc``, ``macro_f1``, ``kappa``,
    ``mae``, ``r2``, ...) or ``per_class_auroc/<class>`` / ``per_target_mae/<target>``. ``None`` where undefined
    (e.g. a resample without positives)."""
    y_true = predictions.y_true if rows is None else predictions.y_true[rows]
    y_score = predictions.y_score if rows is None else predictions.y_score[rows]
    if predictions.problem_type == "regression":
        m = regression_metrics(y_true, y_score, predictions.labels)
    elif predictions.multi_label:
        m = multilabel_metrics(y_true, y_score, predictions.labels, predictions.thresholds)
    else:
        m = single_label_metrics(y_true, y_score, predictions.labels)
    if "/" in metric:
        group, key = metric.split("/", 1)
        value = (m.get(group) or {}).get(key)  # type: ignore[union-attr]
    else:
        value = m.get(metric)
    if value is not None and not isinstance(value, (int, float)):
        raise ValueError(f"{metric!r} is not a scalar metric")
    return None if value is None or not np.isfinite(value) else float(value)


def _read_run(path: Path, split: str) -> tuple[Predictions, dict]:
    metrics_file = path / "metrics.json"
    meta = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return load_predictions(path / PREDICTIONS_DIR / f"{split}.npz"), meta


def _run_names(paths: Sequence[Path]) -> list[str]:
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [str(p) for p in paths]


def compare_runs(
    runs: Sequence[str | os.PathLike],
    metric: str | None = None,
    split: str = "test",
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> Comparison:
    """Compare finished runs (folders with ``predictions/<split>.npz``) on the records they all predicted.

    Args:
        runs: run folders (``output.output_dir`` of each recipe).
        metric: the metric to compare; default: the first run's primary metric (``metrics.json``), else
            ``macro_auroc``. Runs are ordered best first: lowest first for errors and losses (``mae``, ``rmse``:
            :func:`~ecg_adapt.tasks.metrics.lower_is_better`), highest first otherwise.
        split, n_resamples, level, seed: which predictions, and the bootstrap settings.

    Raises:
        ValueError: when the runs predict different label sets or share no test record.
    """
    if not runs:
        raise ValueError("compare needs at least one run folder")
    paths = [Path(r) for r in runs]
    loaded = [_read_run(p, split) for p in paths]
    first, meta = loaded[0]
    for p, (pred, _) in zip(paths[1:], loaded[1:]):
        if pred.labels != first.labels or pred.problem_type != first.problem_type:
            raise ValueError(f"{p} predicts {pred.labels} ({pred.problem_type}) but {paths[0]} predicts "
                             f"{first.labels} ({first.problem_type}): runs of different tasks cannot be compared")
    metric = metric or meta.get("primary_metric") or ("mae" if first.problem_type == "regression" else "macro_auroc")
    shared_set = set(first.record_ids.tolist())
    for pred, _ in loaded[1:]:
        shared_set &= set(pred.record_ids.tolist())
    if not shared_set:
        raise ValueError("the runs share no test record: they were evaluated on different data")
    shared = sorted(shared_set)
    preds = [pred.subset(shared) for pred, _ in loaded]
    if any(not np.array_equal(p.y_true, preds[0].y_true, equal_nan=True) for p in preds[1:]):  # NaN: a missing target
        raise ValueError("the runs disagree on the labels of shared records: they used different label sources")
    n = len(shared)
    # Resample whole records, as the trainer's test intervals do: the epochs of one night are not independent.
    groups = record_groups(shared)
    scores = [
        bootstrap_interval(lambda rows, p=p: metric_value(p, metric, rows), n, groups, n_resamples, level, seed) for p in preds
    ]
    if all(s.estimate is None for s in scores):
        raise ValueError(f"{metric!r} is undefined on the shared test records")
    names = _run_names(paths)
    sign = 1.0 if lower_is_better(metric) else -1.0  # sort ascending on sign * value: the best run first
    order = sorted(range(len(preds)), key=lambda i: np.inf if scores[i].estimate is None else sign * scores[i].estimate)
    best = order[0]
    cache: dict[tuple[int, int], PairedDifference] = {}

    def versus(i: int, j: int) -> PairedDifference:
        """Paired bootstrap of run i minus run j (cached: the rank walk and the table reuse it)."""
        if (i, j) not in cache:
            cache[(i, j)] = paired_bootstrap_difference(
                lambda rows: metric_value(preds[i], metric, rows), lambda rows: metric_value(preds[j], metric, rows),
                n, groups, n_resamples, level, seed)
        return cache[(i, j)]

    # Tied-rank groups: walk down the sorted runs; a run opens a new group when it is significantly worse than
    # the leader (best run) of the current group, otherwise it shares that group's rank.
    ranks: dict[int, int] = {}
    rank, leader = 1, best
    for i in order:
        if i != leader and versus(i, leader).significant:
            rank, leader = rank + 1, i
        ranks[i] = rank
    rows = []
    for i in order:
        d = None if i == best else versus(i, best)
        rows.append(RunResult(names[i], str(paths[i]), scores[i], None if d is None else d.difference,
                              None if d is None else d.p_value, ranks[i], i == best))
    return Comparison(metric, n, rows, level, n_resamples)


def plot_curves(run: str | os.PathLike, out: str | os.PathLike, split: str = "test") -> Path:
    """ROC and precision-recall curves per class of one run, saved as one PNG with two panels; for a regression
    run, predicted against true values per target (records without a value left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    pred, _ = _read_run(Path(run), split)
    if pred.problem_type == "regression":
        return _plot_regression(pred, Path(out), split, plt)
    y = pred.y_true if pred.multi_label else np.eye(len(pred.labels), dtype=int)[pred.y_true.astype(int)]
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(11, 4.8))
    for c, name in enumerate(pred.labels):
        t, s = y[:, c], pred.y_score[:, c]
        if t.min() == t.max():
            continue  # no positives or no negatives: no curve
        fpr, tpr, _ = roc_curve(t, s)
        ax_roc.plot(fpr, tpr, label=f"{name} (AUROC {auc(fpr, tpr):.3f})")
        prec, rec, _ = precision_recall_curve(t, s)
        ax_pr.plot(rec, prec, label=f"{name} (prevalence {t.mean():.2f})")
    ax_roc.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC ({split}, {len(y)} records)")
    ax_pr.set(xlabel="recall", ylabel="precision", title="precision-recall")
    for ax in (ax_roc, ax_pr):
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _plot_regression(pred: Predictions, out: Path, split: str, plt) -> Path:  # noqa: ANN001 - pyplot module
    """Predicted vs true per target, with the identity line and the target's MAE and R²."""
    k = len(pred.labels)
    fig, axes = plt.subplots(1, k, figsize=(5 * k, 4.8), squeeze=False)
    m = regression_metrics(pred.y_true, pred.y_score, pred.labels)
    for c, (ax, name) in enumerate(zip(axes[0], pred.labels)):
        keep = np.isfinite(pred.y_true[:, c])
        t, p = pred.y_true[keep, c], pred.y_score[keep, c]
        mae = m["mae"] if k == 1 else m["per_target_mae"][name]  # type: ignore[index]
        r2 = m["r2"] if k == 1 else m["per_target_r2"][name]  # type: ignore[index]
        ax.scatter(t, p, s=10, alpha=0.6)
        if t.size:
            lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
            ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        r2_text = "n/a" if r2 is None else f"{r2:.3f}"
        mae_text = "n/a" if mae is None else f"{mae:.2f}"
        ax.set(xlabel=f"true {name}", ylabel=f"predicted {name}",
               title=f"{name} ({split}, {int(keep.sum())} records): MAE {mae_text}, R² {r2_text}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
