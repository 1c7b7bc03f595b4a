"""Window predictions back to record predictions: the step after the model.

A processor cuts a record into windows (``window_to_record`` says which record each came from); the model scores
each window; :func:`aggregate_windows` brings the scores back to one per record.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

ArrayLike = Any
"""A numpy array, or a torch tensor (read through ``.detach().cpu().numpy()``; torch is not imported here)."""


def _as_numpy(x: ArrayLike) -> np.ndarray:
    # Duck-typed rather than torch.is_tensor, so that the tasks layer (and `import ecg_adapt.tasks`) needs no torch.
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def aggregate_windows(
    window_scores: ArrayLike,
    window_to_record: ArrayLike,
    method: Literal["mean", "max"] = "mean",
    n_records: int | None = None,
) -> np.ndarray:
    """Bring window-level scores back to one score per record.

    ``method="mean"`` averages window probabilities (the default: windows of one record are exchangeable
    views of a stationary 10 s recording); ``"max"`` takes the maximum per label (use it for labels that may
    be present in only one window, e.g. paroxysmal events in long recordings). Pass probabilities, not
    logits.

    Example:
        >>> aggregate_windows(np.array([[0.2], [0.6], [0.9]]), np.array([0, 0, 1]))
        array([[0.4],
               [0.9]])
    """
    scores, owner = _as_numpy(window_scores), _as_numpy(window_to_record)
    n = int(owner.max()) + 1 if n_records is None else n_records
    if method not in ("mean", "max"):
        raise ValueError(f"aggregate method must be 'mean' or 'max', got {method!r}")
    out = np.full((n,) + scores.shape[1:], np.nan if method == "mean" else -np.inf, dtype=np.float64)
    if method == "mean":
        sums = np.zeros((n,) + scores.shape[1:])
        np.add.at(sums, owner, scores)
        counts = np.bincount(owner, minlength=n).reshape((n,) + (1,) * (scores.ndim - 1))
        with np.errstate(invalid="ignore"):
            out = sums / counts
    else:
        np.maximum.at(out, owner, scores)
    return out


__all__ = ["aggregate_windows"]
