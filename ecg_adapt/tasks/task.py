"""Task objects: label names and metrics of one prediction problem (the loss is the model's, from ``problem_type``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .metrics import multilabel_metrics, single_label_metrics, tune_thresholds

ProblemType = Literal["multi_label_classification", "single_label_classification"]


@dataclass
class ClassificationTask:
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

    def __post_init__(self) -> None:
        if not self.labels:
            raise ValueError(f"Task {self.name!r} has no labels")
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClassificationTask":
        return cls(**d)
