"""Stratified, seeded, nested subsets of a training split (label-efficiency curves).

Label-efficiency protocols (e.g. the ICLR 2026 ECG foundation-model benchmark) train on 1 %, 10 %, ... of the
training records. Three properties make such curves comparable:

* **stratified**: every stratum keeps (about) its share of the records, and every class with at least one
  positive keeps at least one positive whenever the subset is large enough to hold one per class;
* **deterministic** in the seed;
* **nested**: for one seed, the 10 % subset is contained in the 20 % subset, so a curve measures more data, not
  other data.

The scheme, written here because no installed library does all three (scikit-learn's ``train_test_split`` is
neither nested across sizes nor multi-label; iterative stratification is not nested either): every record gets a
single seeded rank, and a subset of size ``m`` is the ``m`` best-ranked records. Ranking:

1. each record's *stratum* is its class (single-label), or its rarest positive label among the given records
   (multi-label; records with no positive form one more stratum), the simpler scheme used by PTB-XL's own folds;
2. records are shuffled within their stratum (seeded) and given the key ``position / stratum size``; sorting by
   that key interleaves the strata in proportion to their sizes (ties broken by a seeded draw);
3. a *cover* is moved to the front: for each class, rarest first, the best-ranked positive of that class unless
   the cover already holds one. A subset at least as large as the cover therefore has every class.

Because every size is a prefix of the same ranking, nesting holds by construction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["stratified_order", "stratified_subset", "subset_size"]


def _strata(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-record stratum index and the (n_records, n_classes) boolean positives matrix."""
    if labels.ndim == 1:
        classes = labels.astype(np.int64)
        if classes.size and classes.min() < 0:
            raise ValueError("class indices must be >= 0")
        n_classes = int(classes.max()) + 1 if classes.size else 0
        positives = np.zeros((classes.size, n_classes), dtype=bool)
        positives[np.arange(classes.size), classes] = True
        return classes, positives
    positives = labels > 0.5
    counts = positives.sum(axis=0)
    # rarest positive label of each record; ties between equally rare labels go to the lower class index
    masked = np.where(positives, counts[None, :], np.iinfo(np.int64).max)
    strata = np.where(positives.any(axis=1), masked.argmin(axis=1), labels.shape[1])  # no positive: own stratum
    return strata.astype(np.int64), positives


def stratified_order(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Record indices, best-ranked first, such that every prefix is a stratified subset (see the module doc).

    Args:
        labels: class indices, shape ``(n,)``, or a multi-hot matrix, shape ``(n, n_classes)``.
        seed: the seed of the shuffles; the same seed gives the same order.
    """
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2):
        raise ValueError(f"labels must be class indices (n,) or a multi-hot matrix (n, n_classes), got shape {labels.shape}")
    n = labels.shape[0]
    rng = np.random.default_rng(seed)
    strata, positives = _strata(labels)
    key = np.empty(n, dtype=np.float64)
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        members = members[rng.permutation(members.size)]
        key[members] = np.arange(members.size) / members.size
    tie = rng.random(n)
    order = np.lexsort((tie, key))  # by key, then by the seeded tie-breaker
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    cover: list[int] = []
    counts = positives.sum(axis=0)
    for c in np.argsort(counts, kind="stable"):
        if counts[c] == 0 or (cover and positives[cover, c].any()):
            continue
        holders = np.flatnonzero(positives[:, c])
        cover.append(int(holders[np.argmin(rank[holders])]))
    in_cover = np.zeros(n, dtype=bool)
    in_cover[cover] = True
    cover_sorted = np.array(sorted(cover, key=lambda i: rank[i]), dtype=np.int64)
    return np.concatenate([cover_sorted, order[~in_cover[order]]])


def subset_size(n: int, fraction: float) -> int:
    """Records kept of ``n`` at ``fraction``: rounded, and at least one."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    return max(1, min(n, int(round(fraction * n))))


def stratified_subset(ids: Sequence[str], labels: np.ndarray, fraction: float, seed: int = 0) -> list[str]:
    """A stratified, seeded, nested subset of ``ids`` holding ``round(fraction * len(ids))`` records (at least one).

    Args:
        ids: record ids of the split.
        labels: per record, class indices ``(n,)`` or a multi-hot matrix ``(n, n_classes)``, in the order of ``ids``.
        fraction: in ``(0, 1]``; ``1.0`` returns every id.
        seed: the same seed gives the same subset, and the subset at a smaller fraction is contained in the one at
            a larger fraction.

    Returns:
        The kept ids, in their order in ``ids``.

    Raises:
        ValueError: a fraction outside ``(0, 1]``, no ids, or labels whose length differs from the ids'.

    Example:
        >>> import numpy as np
        >>> ids = [f"r{i}" for i in range(10)]
        >>> classes = np.array([0] * 8 + [1] * 2)
        >>> sub = stratified_subset(ids, classes, 0.5, seed=0)
        >>> len(sub), sum(int(classes[int(i[1:])]) for i in sub)
        (5, 1)
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    ids = list(ids)
    if not ids:
        raise ValueError("cannot take a subset of an empty split")
    labels = np.asarray(labels)
    if labels.shape[0] != len(ids):
        raise ValueError(f"{len(ids)} ids but labels for {labels.shape[0]} records")
    if fraction == 1.0:
        return ids
    keep = stratified_order(labels, seed)[: subset_size(len(ids), fraction)]
    return [ids[i] for i in sorted(keep)]
