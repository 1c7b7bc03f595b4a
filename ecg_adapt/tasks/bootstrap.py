"""Bootstrap confidence intervals for test metrics, and paired bootstrap differences between two models.

The field reports every test metric with a 95% bootstrap interval (the PTB-XL benchmark, the ICLR 2026 ECG
foundation-model benchmark). Two details matter for ECG data and are why this is written here rather than
taken from ``scipy.stats.bootstrap``:

- **Resampling unit.** A test row is often a window, a beat or an epoch of a longer record. Rows of one record
  are not independent, so resampling rows gives intervals that are too narrow. Pass ``groups`` (the record or
  subject of each row) and whole groups are resampled with replacement (a cluster bootstrap); scipy resamples
  observations only.
- **Undefined resamples.** A resample can leave a class without positives, where AUROC is undefined. Such
  resamples are dropped from that metric's distribution and counted (``n_valid``), instead of poisoning the
  interval with NaN.

Intervals are percentile intervals. Everything is seeded: the same inputs and ``seed`` give the same interval.

Example:
    >>> import numpy as np
    >>> from sklearn.metrics import roc_auc_score
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 200); s = y + rng.normal(size=200)
    >>> ci = bootstrap_interval(lambda idx: roc_auc_score(y[idx], s[idx]), n=200, n_resamples=200)
    >>> ci.low < ci.estimate < ci.high
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
# Below this many positives (or negatives) in a class, an interval on that class is too wide to support a claim.
MIN_SUPPORT = 10


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval.

    Attributes:
        estimate: the metric on the full test set.
        low / high: the interval's bounds (``None`` when fewer than 2 resamples were defined).
        level: the confidence level (0.95 for a 95% interval).
        n_resamples: resamples drawn; n_valid: resamples where the metric was defined.
    """

    estimate: float | None
    low: float | None
    high: float | None
    level: float
    n_resamples: int
    n_valid: int

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)

    def __str__(self) -> str:
        if self.estimate is None:
            return "n/a"
        if self.low is None or self.high is None:
            return f"{self.estimate:.3f}"
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _resample_indices(n: int, members: list[np.ndarray] | None, rng: np.random.Generator) -> np.ndarray:
    """Row indices of one bootstrap resample: rows, or whole groups (their member rows) drawn with replacement."""
    if members is None:
        return rng.integers(0, n, n)
    picked = rng.integers(0, len(members), len(members))
    return np.concatenate([members[g] for g in picked])


def record_groups(unit_ids: Sequence[object]) -> list[str]:
    """The record of every evaluation unit, the resampling unit of test intervals: units of long recordings are
    ``"<record>/<index>"`` (an epoch or window of that record, not independent of its neighbours); any other id
    is a record itself.

    Example:
        >>> record_groups(["slp01/0", "slp01/1", "HR00001"])
        ['slp01', 'slp01', 'HR00001']
    """
    return [str(u).split("/", 1)[0] for u in unit_ids]


def group_rows(groups: Sequence | np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The sorted distinct groups and the row indices of each (one sort, not one scan of all rows per group).

    Example:
        >>> codes, rows = group_rows(["b", "a", "b"])
        >>> codes.tolist(), [r.tolist() for r in rows]
        (['a', 'b'], [[1], [0, 2]])
    """
    codes, inverse = np.unique(np.asarray(groups), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    return codes, np.split(order, np.cumsum(np.bincount(inverse, minlength=len(codes)))[:-1])


def _group_members(groups: Sequence | np.ndarray | None, n: int) -> list[np.ndarray] | None:
    """The row indices of each group (``None``: rows are the resampling unit)."""
    if groups is None:
        return None
    groups = np.asarray(groups)
    if groups.shape[0] != n:
        raise ValueError(f"groups has {groups.shape[0]} entries but there are {n} test rows")
    return group_rows(groups)[1]


def _as_float(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _percentiles(values: list[float], level: float) -> tuple[float | None, float | None]:
    if len(values) < 2:
        return None, None
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(np.asarray(values), [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_intervals(
    statistic: Callable[[np.ndarray], Mapping[str, float | None]],
    n: int,
    groups: Sequence | np.ndarray | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> dict[str, Interval]:
    """Intervals for several metrics computed from one set of resamples.

    Args:
        statistic: maps row indices (``np.arange(n)`` for the full set) to ``{metric name: value}``; a value of
            ``None`` or NaN means undefined on that resample.
        n: the number of test rows.
        groups: the resampling unit of each row (record or subject id); ``None`` resamples rows.
        n_resamples, level, seed: number of resamples, confidence level, random seed.
    """
    if n < 1:
        raise ValueError("cannot bootstrap an empty test set")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_resamples < 0:
        raise ValueError(f"n_resamples must be >= 0, got {n_resamples}")
    members = _group_members(groups, n)
    full = {k: _as_float(v) for k, v in statistic(np.arange(n)).items()}
    samples: dict[str, list[float]] = {k: [] for k in full}
    rng = np.random.default_rng(seed)
    for _ in range(n_resamples):
        idx = _resample_indices(n, members, rng)
        for k, v in statistic(idx).items():
            v = _as_float(v)
            if v is not None and k in samples:
                samples[k].append(v)
    out = {}
    for k, est in full.items():
        lo, hi = _percentiles(samples[k], level) if est is not None else (None, None)
        out[k] = Interval(est, lo, hi, level, n_resamples, len(samples[k]))
    return out


def bootstrap_interval(
    statistic: Callable[[np.ndarray], float | None],
    n: int,
    groups: Sequence | np.ndarray | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> Interval:
    """The interval of one metric; ``statistic`` maps row indices to the metric's value (see
    :func:`bootstrap_intervals`)."""
    return bootstrap_intervals(lambda idx: {"m": statistic(idx)}, n, groups, n_resamples, level, seed)["m"]


@dataclass(frozen=True)
class PairedDifference:
    """``metric(A) - metric(B)`` on the same test rows, with its paired bootstrap interval.

    ``p_value`` is the two-sided bootstrap p-value of "no difference" (twice the smaller tail share of the
    resampled differences beyond 0, capped at 1)."""

    difference: Interval
    p_value: float | None

    @property
    def significant(self) -> bool:
        """True when the interval excludes 0."""
        d = self.difference
        return d.low is not None and d.high is not None and (d.low > 0 or d.high < 0)


def paired_bootstrap_difference(
    statistic_a: Callable[[np.ndarray], float | None],
    statistic_b: Callable[[np.ndarray], float | None],
    n: int,
    groups: Sequence | np.ndarray | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> PairedDifference:
    """Paired bootstrap of the difference between two models scored on the *same* test rows.

    Each resample draws one set of rows (or groups) and scores both models on it, so the record-to-record
    variation both share cancels: this is the test to tell two models apart, not whether their separate
    intervals overlap.
    """
    diffs: list[float] = []

    def both(idx: np.ndarray) -> dict[str, float | None]:
        a, b = _as_float(statistic_a(idx)), _as_float(statistic_b(idx))
        return {"d": None if a is None or b is None else a - b}

    members = _group_members(groups, n)
    est = both(np.arange(n))["d"]
    rng = np.random.default_rng(seed)
    for _ in range(n_resamples):
        d = both(_resample_indices(n, members, rng))["d"]
        if d is not None:
            diffs.append(d)
    lo, hi = _percentiles(diffs, level) if est is not None else (None, None)
    p = None
    if est is not None and diffs:
        arr = np.asarray(diffs)
        p = float(min(1.0, 2.0 * min((arr <= 0).mean(), (arr >= 0).mean())))
    return PairedDifference(Interval(est, lo, hi, level, n_resamples, len(diffs)), p)


def support_warnings(y_true: np.ndarray, labels: Sequence[str], min_support: int = MIN_SUPPORT) -> list[str]:
    """Warnings for classes whose test support is too small for a metric on them to support a claim.

    ``y_true`` is a ``(rows, classes)`` indicator matrix or a vector of class indices.

    Example:
        >>> support_warnings(np.array([[1, 1]] * 3 + [[0, 1]] * 15 + [[0, 0]] * 15), ["AF", "NORM"])
        ['AF: 3 positives in the test set (fewer than 10): its interval is too wide to support a claim']
    """
    y = np.asarray(y_true)
    if y.ndim == 1:
        y = np.eye(len(labels), dtype=int)[y.astype(int)]
    out = []
    for c, name in enumerate(labels):
        pos = int(y[:, c].sum())
        neg = int(y.shape[0] - pos)
        if pos < min_support:
            out.append(f"{name}: {pos} positives in the test set (fewer than {min_support}): its interval is too wide to support a claim")
        elif neg < min_support:
            out.append(f"{name}: {neg} negatives in the test set (fewer than {min_support}): its interval is too wide to support a claim")
    return out


# Scalars of a metrics dict that are counts or settings, not estimates: no interval is drawn for them.
_NOT_ESTIMATES = {"n_samples", "n_records", "n_subjects", "n_missing"}


def _scalar_metrics(metrics: Mapping[str, object]) -> dict[str, float | None]:
    """The metric values of a metrics dict that get an interval: every numeric top-level value (but counts) and
    the per-class AUROC (as ``per_class_auroc/<class>``)."""
    out: dict[str, float | None] = {}
    for k, v in metrics.items():
        if k in _NOT_ESTIMATES or isinstance(v, bool):
            continue
        if isinstance(v, (int, float, np.floating, np.integer)) or (v is None and k.startswith(("macro_", "micro_"))) or (
                v is None and k in ("r2", "pearson_r")):
            out[k] = None if v is None else float(v)
    for cls, v in (metrics.get("per_class_auroc") or {}).items():  # type: ignore[union-attr]
        out[f"per_class_auroc/{cls}"] = v
    return out


def metric_intervals(
    metrics_fn: Callable[[np.ndarray, np.ndarray], Mapping[str, object]],
    y_true: np.ndarray,
    y_score: np.ndarray,
    groups: Sequence | np.ndarray | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> dict[str, Interval]:
    """Intervals for every scalar metric that ``metrics_fn(y_true, y_score)`` returns (e.g.
    ``functools.partial(multilabel_metrics, labels=..., thresholds=...)``: thresholds stay fixed, as tuned on
    validation). ``groups`` gives each row's record (or subject): resampling is record-level.

    Example:
        >>> from functools import partial
        >>> from ecg_adapt.tasks.metrics import multilabel_metrics
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 2, (100, 2)); s = y + rng.normal(size=(100, 2))
        >>> cis = metric_intervals(partial(multilabel_metrics, labels=["a", "b"]), y, s, n_resamples=100)
        >>> sorted(k for k in cis if k.startswith("macro"))
        ['macro_auprc', 'macro_auroc', 'macro_f1']
    """
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score)
    if y_true.shape[0] != y_score.shape[0]:
        raise ValueError(f"y_true has {y_true.shape[0]} rows but y_score has {y_score.shape[0]}")
    return bootstrap_intervals(
        lambda idx: _scalar_metrics(metrics_fn(y_true[idx], y_score[idx])), y_true.shape[0], groups, n_resamples, level, seed
    )


def describe_test_metric(test: Mapping[str, object], name: str) -> str:
    """``"0.9734 (95% CI 0.9512-0.9880, 100 records)"`` for one metric of a run's ``metrics.json`` ``test`` section,
    or the bare value with "(no interval computed)" when the run recorded none.

    Example:
        >>> describe_test_metric({"macro_auroc": 0.9, "ci": {"macro_auroc": {"low": 0.8, "high": 0.95}},
        ...                       "ci_info": {"level": 0.95, "n_records": 100}}, "macro_auroc")
        '0.9000 (95% CI 0.8000-0.9500, 100 records)'
    """
    value = test.get(name)
    shown = f"{value:.4f}" if isinstance(value, float) else str(value)
    ci = (test.get("ci") or {}).get(name)  # type: ignore[union-attr]
    info = test.get("ci_info") or {}
    if not ci:
        return f"{shown} (no interval computed)"
    unit = str(info.get("unit", "record"))  # type: ignore[union-attr]
    count = info.get(f"n_{unit}s", info.get("n_records", "?"))  # type: ignore[union-attr]
    return (f"{shown} ({round(100 * info.get('level', DEFAULT_LEVEL))}% CI {ci['low']:.4f}-{ci['high']:.4f}, "  # type: ignore[union-attr]
            f"{count} {unit}s)")
