"""A run's test predictions on disk: what ``compare`` and the bootstrap need to re-score a run without its model.

``predictions/test.npz`` holds plain arrays only (``numpy.load(..., allow_pickle=False)`` reads it: no pickle is
ever involved): ``record_ids`` (str), ``y_true`` (multi-hot or class indices), ``y_score`` (probabilities),
``labels`` (str), ``problem_type`` (str), and ``thresholds`` (float, empty when the task has none). It is
written to a temporary file and renamed, so a kill leaves the previous file or none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..utils import atomic_write

PREDICTIONS_DIR = "predictions"


@dataclass
class Predictions:
    """Scores of one split, one row per record (windows already aggregated)."""

    record_ids: np.ndarray
    y_true: np.ndarray
    y_score: np.ndarray
    labels: list[str]
    problem_type: str
    thresholds: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.record_ids = np.asarray(self.record_ids).astype(str)
        self.y_true = np.asarray(self.y_true)
        self.y_score = np.asarray(self.y_score, dtype=np.float64)
        n = len(self.record_ids)
        if self.y_true.shape[0] != n or self.y_score.shape[0] != n:
            raise ValueError(f"{n} record ids but y_true has {self.y_true.shape[0]} rows and y_score {self.y_score.shape[0]}")
        if self.y_score.ndim != 2 or self.y_score.shape[1] != len(self.labels):
            raise ValueError(f"y_score {self.y_score.shape} does not have one column per label ({len(self.labels)})")
        if len(set(self.record_ids.tolist())) != n:
            raise ValueError("record ids are not unique: predictions must be one row per record")

    @property
    def multi_label(self) -> bool:
        return self.problem_type == "multi_label_classification"

    def subset(self, record_ids: Sequence[str]) -> "Predictions":
        """The rows of ``record_ids``, in that order."""
        index = {r: i for i, r in enumerate(self.record_ids.tolist())}
        missing = [r for r in record_ids if r not in index]
        if missing:
            raise KeyError(f"{len(missing)} records not in these predictions, e.g. {missing[:3]}")
        rows = np.array([index[r] for r in record_ids], dtype=np.int64)
        return Predictions(self.record_ids[rows], self.y_true[rows], self.y_score[rows], self.labels, self.problem_type,
                           self.thresholds)


def save_predictions(path: str | os.PathLike, predictions: Predictions) -> Path:
    """Write ``predictions`` to ``path`` (``.npz``) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to the temporary name
            np.savez(
                f,
                record_ids=predictions.record_ids.astype(str),
                y_true=predictions.y_true,
                y_score=predictions.y_score,
                labels=np.asarray(predictions.labels, dtype=str),
                problem_type=np.asarray(predictions.problem_type),
                thresholds=np.asarray([] if predictions.thresholds is None else predictions.thresholds, dtype=np.float64),
            )

    return atomic_write(path, write)


def load_predictions(path: str | os.PathLike) -> Predictions:
    """Read a file written by :func:`save_predictions` (no pickle: object arrays are refused)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no predictions file (runs write predictions/test.npz at the end of training)")
    try:
        with np.load(path, allow_pickle=False) as z:
            thresholds = z["thresholds"]
            return Predictions(
                record_ids=z["record_ids"],
                y_true=z["y_true"],
                y_score=z["y_score"],
                labels=[str(x) for x in z["labels"]],
                problem_type=str(z["problem_type"]),
                thresholds=thresholds if thresholds.size else None,
            )
    except (KeyError, ValueError, OSError) as e:
        raise ValueError(f"{path} is not a valid predictions file: {e}") from e
