"""The PhysioNet/CinC Challenge 2021 (and 2020) metric: a weighted multi-label confusion matrix.

The definition, as in the official ``evaluate_model.py`` of ``physionetchallenges/evaluation-2021``
(reimplemented here from that definition, vectorised; no code copied):

1. Labels and predictions are binary, one column per scored class. A class may stand for several
   equivalent SNOMED CT codes, written ``code1|code2`` (e.g. ``713427006|59118001``, complete and unspecified
   RBBB): a record is positive for it when any of the codes is positive.
2. For record ``i`` let ``n_i = max(|true_i ∪ pred_i|, 1)``; every (true class ``j``, predicted class ``k``)
   pair of the record adds ``1 / n_i`` to ``A[j, k]``.
3. ``score = Σ_jk W[j, k] · A[j, k]`` with the reward matrix ``W`` of ``weights.csv`` (``W[j, j] = 1``,
   partial credit off the diagonal).
4. Reported normalised: ``(score − score_inactive) / (score_correct − score_inactive)``, where *correct*
   predicts exactly the true labels and *inactive* always predicts only sinus rhythm (``426783006``); 0 when
   the denominator is 0. A perfect classifier scores 1, the always-normal one 0.

No library implements this metric, hence the hand-written code. The 2020 metric is the same computation over
24 classes with three equivalence pairs; its weight matrix equals the 2021 one restricted to those classes,
so scoring 2020 labels against the 2021 table gives the 2020 value (classes absent from ``classes`` add
nothing to ``A``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from .metrics import multilabel_metrics
from .task import ClassificationTask

logger = logging.getLogger(__name__)

NORMAL_CLASS = "426783006"  # SNOMED CT "sinus rhythm": the challenge's "inactive" prediction
WEIGHTS_FILE = "cinc2021_weights.csv"


class ChallengeWeights(NamedTuple):
    """The reward matrix: ``classes`` (``code`` or ``code1|code2``) and the ``matrix`` over them (rows: true)."""

    classes: list[str]
    matrix: np.ndarray


def packaged_weights_path() -> Path:
    """The official 26-class 2021 ``weights.csv`` shipped with ecg_adapt (BSD 2-Clause, see CINC2021_LICENSE.md)."""
    return Path(str(resources.files("ecg_adapt.data") / "resources" / WEIGHTS_FILE))


def class_codes(name: str) -> frozenset[str]:
    """The SNOMED CT codes a class name stands for: ``"713427006|59118001"`` → ``{"713427006", "59118001"}``."""
    codes = frozenset(c.strip() for c in str(name).split("|") if c.strip())
    if not codes:
        raise ValueError(f"Empty class name {name!r}")
    return codes


def load_weights(path: str | Path | None = None) -> ChallengeWeights:
    """Read a challenge ``weights.csv`` (the packaged 2021 table when ``path`` is None).

    The file is a square table whose first row and first column hold the same class names.

    Example:
        >>> w = load_weights()
        >>> len(w.classes), w.matrix.shape, w.classes[4]
        (26, (26, 26), '733534002|164909002')

    Raises:
        ValueError: if the table is not square, row and column names differ, or an entry is not a number.
    """
    path = Path(path) if path is not None else packaged_weights_path()
    if not path.exists():
        raise FileNotFoundError(f"No weights table at {path}")
    table = pd.read_csv(path, index_col=0, dtype=str, keep_default_na=False)
    rows = [str(r).strip() for r in table.index]
    cols = [str(c).strip() for c in table.columns]
    if len(rows) != len(cols) or [class_codes(r) for r in rows] != [class_codes(c) for c in cols]:
        raise ValueError(f"{path}: row names {rows} and column names {cols} must be the same classes in the same order")
    try:
        # Empty cells are NaN, as in the official loader (and ignored by the nansum below).
        matrix = table.apply(lambda col: pd.to_numeric(col.str.strip().replace("", np.nan))).to_numpy(dtype=np.float64)
    except ValueError as e:
        raise ValueError(f"{path}: an entry of the weight matrix is not a number ({e})") from e
    return ChallengeWeights(classes=cols, matrix=matrix)


def _as_binary(y: np.ndarray, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 2:
        raise ValueError(f"{what} must be (records, classes), got shape {y.shape}")
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise ValueError(f"{what} must be binary (0/1 or bool); threshold probabilities first "
                             "(challenge_score_from_probabilities does it)")
        y = y.astype(bool)
    return y


def _align(y: np.ndarray, classes: Sequence[str], target: Sequence[str], what: str) -> np.ndarray:
    """Columns of ``y`` (named ``classes``) folded onto the ``target`` classes, equivalent codes OR-ed together."""
    src = [class_codes(c) for c in classes]
    dst = [class_codes(c) for c in target]
    out = np.zeros((y.shape[0], len(dst)), dtype=bool)
    unmatched = []
    for k, codes in enumerate(src):
        hits = [j for j, t in enumerate(dst) if codes & t]
        if len(hits) > 1:
            raise ValueError(f"Class {classes[k]!r} matches several weight classes: {[target[j] for j in hits]}")
        if hits:
            out[:, hits[0]] |= y[:, k]
        else:
            unmatched.append(classes[k])
    if unmatched:
        logger.debug("%s: classes not scored by the challenge are ignored: %s", what, unmatched)
    if len(unmatched) == len(src):
        raise ValueError(f"None of the classes {list(classes)} is a scored class of the weight table")
    return out


def _confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """``A[j, k] = Σ_i true[i, j] · pred[i, k] / max(|true_i ∪ pred_i|, 1)``."""
    n = np.maximum((y_true | y_pred).sum(axis=1), 1).astype(np.float64)
    return (y_true / n[:, None]).T @ y_pred.astype(np.float64)


def challenge_score_parts(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    classes: Sequence[str],
    weights: ChallengeWeights | np.ndarray | None = None,
    normal_class: str = NORMAL_CLASS,
) -> dict[str, float]:
    """The unnormalised scores behind :func:`challenge_score`: ``observed``, ``correct``, ``inactive`` and the
    normalised ``score``. Arguments as in :func:`challenge_score`."""
    y_true = _as_binary(y_true, "y_true")
    y_pred = _as_binary(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must have the same shape")
    classes = [str(c) for c in classes]
    if y_true.shape[1] != len(classes):
        raise ValueError(f"{y_true.shape[1]} columns but {len(classes)} class names")
    if weights is None:
        weights = load_weights()
    if isinstance(weights, ChallengeWeights):
        target, W = list(weights.classes), np.asarray(weights.matrix, dtype=np.float64)
        y_true = _align(y_true, classes, target, "y_true")
        y_pred = _align(y_pred, classes, target, "y_pred")
    else:
        W = np.asarray(weights, dtype=np.float64)
        if W.shape != (len(classes), len(classes)):
            raise ValueError(f"A weight matrix given as an array must be {len(classes)}x{len(classes)} (one row and "
                             f"column per class, in the order of `classes`), got {W.shape}")
        target = classes
    normal = [j for j, c in enumerate(target) if normal_class in class_codes(c)]
    if len(normal) != 1:
        raise ValueError(f"The normal class {normal_class!r} must be exactly one of the scored classes {target}")
    inactive_pred = np.zeros_like(y_true)
    inactive_pred[:, normal[0]] = True
    observed = float(np.nansum(W * _confusion(y_true, y_pred)))
    correct = float(np.nansum(W * _confusion(y_true, y_true)))
    inactive = float(np.nansum(W * _confusion(y_true, inactive_pred)))
    score = (observed - inactive) / (correct - inactive) if correct != inactive else 0.0
    return {"observed": observed, "correct": correct, "inactive": inactive, "score": float(score)}


def challenge_score(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    classes: Sequence[str],
    weights: ChallengeWeights | np.ndarray | None = None,
    normal_class: str = NORMAL_CLASS,
) -> float:
    """The normalised challenge metric of binary predictions (1 = perfect, 0 = always sinus rhythm).

    Args:
        y_true, y_pred: ``(records, classes)`` binary arrays.
        classes: the class name of each column: a SNOMED CT code or equivalent codes joined by ``|``. With
            ``weights`` from :func:`load_weights` (default: the packaged 2021 table) columns are matched to the
            table's classes by shared codes, so ``"59118001"`` and ``"713427006|59118001"`` are the same class and
            two equivalent columns are OR-ed; columns of unscored codes are ignored, as the challenge does.
        weights: a :class:`ChallengeWeights`, or a square array already in the order of ``classes``.
        normal_class: the code of the "inactive" prediction.

    Example:
        >>> classes = ["426783006", "164889003"]          # sinus rhythm, atrial fibrillation
        >>> y = np.array([[1, 0], [0, 1]])
        >>> challenge_score(y, y, classes), challenge_score(y, np.array([[1, 0], [1, 0]]), classes)
        (1.0, 0.0)
    """
    return challenge_score_parts(y_true, y_pred, classes, weights, normal_class)["score"]


def challenge_score_from_probabilities(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    thresholds: float | Sequence[float] | np.ndarray = 0.5,
    weights: ChallengeWeights | np.ndarray | None = None,
    normal_class: str = NORMAL_CLASS,
) -> float:
    """:func:`challenge_score` of ``probs >= thresholds`` (a scalar or one threshold per class).

    Example:
        >>> challenge_score_from_probabilities(np.array([[1, 0]]), np.array([[0.9, 0.2]]), ["426783006", "164889003"])
        0.0
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be (records, classes), got shape {probs.shape}")
    if not np.isfinite(probs).all():
        raise ValueError("probs contains NaN or infinite values")
    thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (probs.shape[1],))
    return challenge_score(y_true, probs >= thr[None, :], classes, weights, normal_class)


class ChallengeTask(ClassificationTask):
    """A multi-label task over CinC classes whose metrics add the challenge score.

    ``metrics(y_true, probs, thresholds)`` returns :func:`~ecg_adapt.tasks.metrics.multilabel_metrics` plus
    ``challenge_score`` (at ``thresholds``, 0.5 when none are given; the trainer passes the thresholds tuned on
    validation). Labels are class names as in the weight table; the score uses the packaged 2021 table, which
    also gives the 2020 score for the 2020 classes. ``None`` when no label is a scored class.

    Example:
        >>> task = ChallengeTask("cinc2021/scored", ["426783006", "164889003"])
        >>> task.metrics(np.array([[1, 0], [0, 1]]), np.array([[0.9, 0.1], [0.2, 0.7]]))["challenge_score"]
        1.0
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.multi_label:
            raise ValueError(f"ChallengeTask {self.name!r} must be multi_label_classification, got {self.problem_type!r}")

    def metrics(self, y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None = None) -> dict[str, object]:
        """Multi-label metrics plus ``challenge_score`` at ``thresholds`` (0.5 when None)."""
        result = multilabel_metrics(y_true, probs, self.labels, thresholds)
        weights = load_weights()
        scored = {c for name in weights.classes for c in class_codes(name)}
        if not any(class_codes(label) & scored for label in self.labels):
            result["challenge_score"] = None
            return result
        thr = np.full(len(self.labels), 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
        result["challenge_score"] = challenge_score_from_probabilities(y_true, probs, self.labels, thr, weights)
        return result


__all__ = [
    "NORMAL_CLASS",
    "ChallengeTask",
    "ChallengeWeights",
    "challenge_score",
    "challenge_score_from_probabilities",
    "challenge_score_parts",
    "class_codes",
    "load_weights",
    "packaged_weights_path",
]
