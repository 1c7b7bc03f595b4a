"""Task objects: label names (or regression targets) and metrics of one prediction problem (the loss is the
model's, from ``problem_type``).

Three kinds, with transformers' ``problem_type`` names: ``multi_label_classification`` (a binary target such as
sex is this kind with one label: a single logit, BCE, AUROC), ``single_label_classification``, and
``regression`` (:class:`RegressionTask`: continuous targets such as age, NaN targets masked).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .bootstrap import MIN_SUPPORT, Interval, metric_intervals, record_groups, support_warnings
from .metrics import multilabel_metrics, regression_metrics, single_label_metrics, tune_thresholds
from .staging import staging_intervals, staging_metrics

ProblemType = Literal["multi_label_classification", "single_label_classification"]
RegressionLoss = Literal["mse", "l1"]


class _SplitScoring:
    """How a task scores a whole evaluation split (what ``metrics.json`` reports), shared by both task kinds.

    Sleep staging (a single-label task whose primary metric is Cohen's kappa) is also scored per subject
    (confusion matrix, per-subject kappa: :func:`~ecg_adapt.tasks.staging.staging_metrics`) and its intervals
    resample subjects; every other task resamples records. The trainer asks the task instead of branching on it.
    """

    @property
    def scored_per_subject(self) -> bool:
        """Whether :meth:`split_metrics` and :meth:`split_intervals` need each unit's subject (sleep staging)."""
        return not self.multi_label and self.primary_metric == "kappa"  # type: ignore[attr-defined]

    def split_metrics(self, y_true: np.ndarray, scores: np.ndarray, thresholds: np.ndarray | None = None,
                      subjects: list[str] | None = None) -> dict[str, Any]:
        """:meth:`metrics`, with the staging metrics (confusion matrix, per-subject kappa) where
        :attr:`scored_per_subject`; ``subjects`` gives each row's subject (``None``: no per-subject part)."""
        m = self.metrics(y_true, scores, thresholds)  # type: ignore[attr-defined]
        if self.scored_per_subject:
            m.update(staging_metrics(y_true, scores, subjects, self.labels))  # type: ignore[attr-defined]
        return m

    def split_intervals(self, y_true: np.ndarray, scores: np.ndarray, thresholds: np.ndarray | None,
                        unit_ids: list[Any], subjects: list[str] | None, n_resamples: int, level: float,
                        seed: int) -> tuple[dict[str, Interval], dict[str, Any]]:
        """Percentile bootstrap intervals of the split's metrics and what they were drawn over (``ci_info``).

        Units of long recordings are ``"<record>/<index>"``: whole records are resampled, never windows of one
        record; sleep staging resamples whole subjects (a subject's nights together). Thresholds stay fixed.
        """
        groups = record_groups(unit_ids)
        info: dict[str, Any] = {"level": level, "n_resamples": n_resamples, "unit": "record",
                                "n_records": len(set(groups)), "method": "percentile"}
        if self.scored_per_subject:
            if subjects is None:
                raise ValueError(f"Task {self.name!r} resamples subjects: pass the subject of every row")  # type: ignore[attr-defined]
            cis = staging_intervals(y_true, scores, subjects, self.labels, n_resamples=n_resamples,  # type: ignore[attr-defined]
                                    level=level, seed=seed)
            info.update(unit="subject", n_subjects=len(set(subjects)))
        else:
            cis = metric_intervals(lambda y, p: self.metrics(y, p, thresholds), y_true, scores, groups,  # type: ignore[attr-defined]
                                   n_resamples=n_resamples, level=level, seed=seed)
        return cis, info


@dataclass
class ClassificationTask(_SplitScoring):
    """A classification task: what the labels are and how predictions are scored.

    ``problem_type`` uses transformers' names. Multi-label tasks score with sigmoid probabilities (macro
    AUROC/AUPRC, per-class AUROC, F1 at thresholds tuned on validation); multi-class tasks with softmax
    (accuracy, macro F1, one-vs-rest AUROC).

    Example:
        >>> task = ClassificationTask("ptbxl/superdiagnostic", ["CD", "HYP", "MI", "NORM", "STTC"])
        >>> task.num_labels
        5
    """

    name: str
    labels: list[str]
    problem_type: ProblemType = "multi_label_classification"
    description: str = ""
    primary_metric: str = "macro_auroc"
    label_names: dict[str, str] = dataclasses.field(default_factory=dict)
    """Readable names of labels that are codes (SNOMED CT ``164889003`` -> ``AF``); the label stays the id."""

    def __post_init__(self) -> None:
        if not self.labels:
            raise ValueError(f"Task {self.name!r} has no labels")
        unknown = sorted(set(self.label_names) - set(self.labels))
        if unknown:
            raise ValueError(f"Task {self.name!r}: label_names for labels it does not have: {unknown[:5]}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"Task {self.name!r} has duplicate labels")
        if self.problem_type not in ("multi_label_classification", "single_label_classification"):
            raise ValueError(f"Unknown problem_type {self.problem_type!r}")

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def multi_label(self) -> bool:
        return self.problem_type == "multi_label_classification"

    def encode(self, label_sets: list[list[str]]) -> np.ndarray:
        """Multi-hot (multi-label) or class indices (multi-class) for lists of label names.

        Raises:
            ValueError: for a label the task does not know (named in the message).
        """
        index = {name: i for i, name in enumerate(self.labels)}
        if self.multi_label:
            out = np.zeros((len(label_sets), self.num_labels), dtype=np.float32)
            for r, names in enumerate(label_sets):
                for name in names:
                    if name not in index:
                        raise ValueError(f"Unknown label {name!r} for task {self.name!r}; known: {self.labels}")
                    out[r, index[name]] = 1.0
            return out
        out_i = np.zeros(len(label_sets), dtype=np.int64)
        for r, names in enumerate(label_sets):
            if len(names) != 1 or names[0] not in index:
                raise ValueError(f"Record {r} of single-label task {self.name!r} has labels {names}")
            out_i[r] = index[names[0]]
        return out_i

    def tune_thresholds(self, y_true: np.ndarray, probs: np.ndarray) -> np.ndarray | None:
        return tune_thresholds(y_true, probs) if self.multi_label else None

    def metrics(self, y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None = None) -> dict[str, Any]:
        if self.multi_label:
            return multilabel_metrics(y_true, probs, self.labels, thresholds)
        return single_label_metrics(y_true, probs, self.labels)

    def display(self, label: str) -> str:
        """``"164889003 (AF)"`` for a label with a name, else the label itself."""
        return display_label(label, self.label_names)

    @property
    def binary(self) -> bool:
        """A single-logit binary task (one label, multi-label kind: sigmoid and BCE), e.g. sex."""
        return self.multi_label and self.num_labels == 1

    def stratification_labels(self, encoded: np.ndarray) -> np.ndarray:
        """What a stratified train subset balances (:func:`~ecg_adapt.tasks.subset.stratified_subset`): the labels."""
        return encoded

    def head_config(self, train_labels: np.ndarray) -> dict[str, Any]:
        """Extra ``ECGClassifierConfig`` settings this task needs from the training labels (none)."""
        return {}

    def support_warnings(self, y_true: np.ndarray) -> list[str]:
        """Classes whose test support is too small to support a claim (:func:`~ecg_adapt.tasks.bootstrap.support_warnings`)."""
        return support_warnings(y_true, [self.display(label) for label in self.labels])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClassificationTask":
        return cls(**d)


@dataclass
class RegressionTask(_SplitScoring):
    """A regression task: continuous targets (age, any numeric column), one output per target.

    ``labels`` are the target names (``["age"]``); ``encode`` gives a float ``(records, targets)`` matrix with NaN
    where a record has no value. Such records stay in the dataset: the loss and the metrics leave them out
    (masked), and the metrics count them (``n_missing``). The head outputs ``num_labels`` values; the loss is
    ``loss`` (``mse`` or ``l1``) on targets standardised with the training split's mean and standard deviation when
    ``standardize`` is set; the mean and std are saved in the model's config and the model un-standardises its
    outputs, so a saved model predicts in the target's own unit (years). ``units`` names that unit per target.

    Example:
        >>> task = RegressionTask("ptbxl/age", ["age"], units={"age": "years"})
        >>> task.encode([[61.0], [float("nan")]]).tolist()
        [[61.0], [nan]]
    """

    name: str
    labels: list[str]
    problem_type: Literal["regression"] = "regression"
    description: str = ""
    primary_metric: str = "mae"
    loss: RegressionLoss = "mse"
    standardize: bool = True
    units: dict[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.labels:
            raise ValueError(f"Regression task {self.name!r} has no targets")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"Regression task {self.name!r} has duplicate targets")
        if self.problem_type != "regression":
            raise ValueError(f"RegressionTask has problem_type 'regression', got {self.problem_type!r}")
        if self.loss not in ("mse", "l1"):
            raise ValueError(f"Regression loss must be 'mse' or 'l1', got {self.loss!r}")

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def targets(self) -> list[str]:
        return self.labels

    multi_label = False
    binary = False

    def encode(self, values: list[Any]) -> np.ndarray:
        """The ``(records, targets)`` float matrix of per-record values (a number, or a list of one per target;
        ``None``/NaN for a missing value).

        Raises:
            ValueError: a record with the wrong number of values, or one that is not a number (named).
        """
        out = np.full((len(values), self.num_labels), np.nan, dtype=np.float32)
        for r, v in enumerate(values):
            row = list(v) if isinstance(v, (list, tuple, np.ndarray)) else [v]
            if len(row) != self.num_labels:
                raise ValueError(f"Record {r} of regression task {self.name!r} has {len(row)} values for targets {self.labels}")
            for c, x in enumerate(row):
                try:
                    out[r, c] = np.nan if x is None else float(x)
                except (TypeError, ValueError):
                    raise ValueError(f"Record {r} of task {self.name!r}: target {self.labels[c]!r} value {x!r} is not a number") from None
        return out

    def stratification_labels(self, encoded: np.ndarray) -> np.ndarray:
        """Quintile bins of the first target (records without it form their own stratum), so a train subset keeps
        the target's distribution."""
        y = np.asarray(encoded, dtype=np.float64)[:, 0]
        known = np.isfinite(y)
        bins = np.full(y.shape[0], 5, dtype=np.int64)
        if known.any():
            edges = np.quantile(y[known], [0.2, 0.4, 0.6, 0.8])
            bins[known] = np.searchsorted(edges, y[known], side="right")
        return bins

    def head_config(self, train_labels: np.ndarray) -> dict[str, Any]:
        """The model's regression settings: the loss and (``standardize``) the training targets' mean and std."""
        out: dict[str, Any] = {"regression_loss": self.loss}
        if self.standardize:
            y = np.asarray(train_labels, dtype=np.float64).reshape(len(train_labels), -1)
            if not np.isfinite(y).any(axis=0).all():
                missing = [t for t, ok in zip(self.labels, np.isfinite(y).any(axis=0)) if not ok]
                raise ValueError(f"Task {self.name!r}: no training record has a value for {missing}")
            std = np.nanstd(y, axis=0)
            out["target_mean"] = [float(v) for v in np.nanmean(y, axis=0)]
            out["target_std"] = [float(v) if v > 0 else 1.0 for v in std]
        return out

    def tune_thresholds(self, y_true: np.ndarray, probs: np.ndarray) -> None:
        return None

    def metrics(self, y_true: np.ndarray, y_pred: np.ndarray, thresholds: np.ndarray | None = None) -> dict[str, Any]:
        """:func:`~ecg_adapt.tasks.metrics.regression_metrics` (``thresholds`` is accepted and unused)."""
        return regression_metrics(y_true, y_pred, self.labels)

    def support_warnings(self, y_true: np.ndarray) -> list[str]:
        """Targets with fewer than 10 test records that have a value."""
        y = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
        out = []
        for c, name in enumerate(self.labels):
            n = int(np.isfinite(y[:, c]).sum())
            if n < MIN_SUPPORT:
                out.append(f"{name}: {n} test records with a value (fewer than {MIN_SUPPORT}): its interval is too wide "
                           "to support a claim")
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RegressionTask":
        return cls(**d)


Task = ClassificationTask | RegressionTask


def display_label(label: str, names: dict[str, str] | None) -> str:
    """A label with its readable name beside it, when it has one that differs from it.

    Example:
        >>> display_label("164889003", {"164889003": "AF"}), display_label("NORM", {})
        ('164889003 (AF)', 'NORM')
    """
    name = (names or {}).get(label)
    return f"{label} ({name})" if name and name != label else label


def per_class_summary(metrics: dict[str, Any], labels: list[str], y_true: np.ndarray,
                      label_names: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Per class, by label (the id): its name, AUROC with its interval, F1, threshold and test positives, from a
    split's metrics dict (``metrics.json``'s ``test``): one readable entry per class."""
    y = np.asarray(y_true)
    if y.ndim == 1:
        y = np.eye(len(labels), dtype=int)[y.astype(int)]
    ci = metrics.get("ci") or {}
    out: dict[str, dict[str, Any]] = {}
    for c, label in enumerate(labels):
        entry: dict[str, Any] = {"name": (label_names or {}).get(label, label),
                                 "auroc": (metrics.get("per_class_auroc") or {}).get(label)}
        interval = ci.get(f"per_class_auroc/{label}")
        if interval:
            entry["auroc_ci"] = [interval["low"], interval["high"]]
        entry["f1"] = (metrics.get("per_class_f1") or {}).get(label)
        if label in (metrics.get("thresholds") or {}):
            entry["threshold"] = metrics["thresholds"][label]
        entry["positives"] = int(y[:, c].sum())
        out[label] = entry
    return out


def task_from_dict(d: dict[str, Any]) -> Task:
    """A task from its ``to_dict`` form (``task.json``), of the kind its ``problem_type`` names."""
    if d.get("problem_type") == "regression":
        return RegressionTask.from_dict(d)
    return ClassificationTask.from_dict(d)
