"""Windows with their neighbours: the input of a sequence classifier over consecutive windows.

Sources of long recordings (a night of sleep, an 8-hour Apnea-ECG record, a 30-minute MIT-BIH record) yield
their labelled units with ids ``"<record>/<index>"``, ``index`` counting the units of the recording from 0
(see :mod:`ecg_adapt.data.base`). Scoring a unit from its neighbours is how sleep stages and apnea minutes are
scored by people, so :class:`ContextWindowDataset` gives every window of a labelled unit together with the
``context`` windows before and after it, in time order: ``K = 2 * context + 1`` windows, the centre in the
middle.

Time order across units. A unit may be cut into several windows by the processor (a 30 s sleep epoch is six
5 s HuBERT-ECG windows). Window ``w`` of unit ``i`` of a recording sits at slot ``i * W + w`` of that
recording, ``W`` being the largest number of windows of any of its units, and the neighbours of a window are
the adjacent slots. With one window per unit (the usual case, and the one the sequence model is meant for)
the neighbours are simply the previous and next units. Slots with no cached window (before the first unit,
after the last, a unit that was skipped or is not in the dataset) are zeros with ``attention_mask = 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from .cache import ECGCache

_SLOT_BITS = 40  # a (recording, slot) pair is packed into one int64: recording code above, slot below


def parse_unit_ids(ids: Sequence[Any], what: str = "unit id") -> tuple[np.ndarray, np.ndarray]:
    """Split ``"<record>/<index>"`` ids into recording names and integer indices (vectorised).

    Raises:
        ValueError: naming the first id that has no ``/`` or whose index is not a non-negative integer.
    """
    s = pd.Series([str(i) for i in ids], dtype=object)
    if s.empty:
        return np.array([], dtype=object), np.array([], dtype=np.int64)
    parts = s.str.rsplit("/", n=1, expand=True).reindex(columns=[0, 1])
    record = parts[0]
    index = pd.to_numeric(parts[1], errors="coerce")
    bad = index.isna() | (index < 0) | (index != np.floor(index.fillna(0)))
    if bad.any():
        first = s[bad].iloc[0]
        raise ValueError(
            f"{what} {first!r} is not of the form '<record>/<index>' with an integer index: context windows need units "
            "of long recordings (e.g. 'a01/12' for minute 12 of Apnea-ECG record a01)"
        )
    return record.to_numpy(dtype=object), index.to_numpy(dtype=np.int64)


class ContextWindowDataset(torch.utils.data.Dataset):
    """Each window of the labelled units of ``record_ids``, with its ``context`` neighbours on each side.

    Items have ``input_values`` and ``attention_mask`` of shape ``(K, *input_shape)`` with ``K = 2*context+1``
    (the item's own window at position ``context``), plus ``labels`` and ``record_index`` of the centre unit, as
    :class:`~ecg_adapt.data.cache.WindowDataset` gives them, so the trainer's aggregation per unit is unchanged.
    Batches are gathered with the cache's ``take`` (one copy into the batch): from the memory-mapped Arrow buffers
    of an :class:`~ecg_adapt.data.cache.ECGCache`, or from the recording store
    (:class:`~ecg_adapt.data.store.RecordingStore`, where sleep epochs are kept once and context is cut here, on read).

    Args:
        cache: the built cache holding the units' windows (anything with ``row_record_ids``, ``row_windows`` and
            ``take``: an ``ECGCache``, a ``RecordingStore``).
        record_ids: the labelled units, ids ``"<record>/<index>"``.
        labels: one label row per id of ``record_ids``.
        input_shape: the contract's input shape of one window.
        context: windows on each side of the centre (``0`` gives ``K = 1``).
        neighbours: ``"cache"`` (default) takes neighbours from every cached unit of the same recording, labelled
            or not (only their signal is used); ``"labelled"`` only from ``record_ids``, for splits that cut a
            recording into parts.

    Example:
        >>> ds = ContextWindowDataset(cache, ["a01/0", "a01/1", "a01/2"], labels, (1, 6000), context=2)  # doctest: +SKIP
        >>> ds[0]["input_values"].shape          # a01/-2 and a01/-1 do not exist: zero, mask 0      # doctest: +SKIP
        torch.Size([5, 1, 6000])
    """

    def __init__(
        self,
        cache: ECGCache | Any,
        record_ids: Sequence[Any],
        labels: np.ndarray,
        input_shape: tuple[int, ...],
        context: int,
        neighbours: Literal["cache", "labelled"] = "cache",
    ) -> None:
        if len(record_ids) != len(labels):
            raise ValueError(f"{len(record_ids)} record ids but {len(labels)} label rows")
        if int(context) != context or context < 0:
            raise ValueError(f"context must be a non-negative integer, got {context!r}")
        if neighbours not in ("cache", "labelled"):
            raise ValueError(f"neighbours must be 'cache' or 'labelled', got {neighbours!r}")
        self.cache = cache
        self.record_ids = [str(r) for r in record_ids]
        self.labels = labels
        self.input_shape = tuple(input_shape)
        self.context = int(context)
        self.n_records = len(record_ids)
        parse_unit_ids(self.record_ids, "record id")  # clear error on a bad labelled id before anything else

        pos = {r: i for i, r in enumerate(self.record_ids)}
        row_pos = np.array([pos.get(str(r), -1) for r in cache.row_record_ids], dtype=np.int64)
        usable = np.ones(len(row_pos), dtype=bool) if neighbours == "cache" else row_pos >= 0
        usable_rows = np.flatnonzero(usable)
        rec, idx = parse_unit_ids(cache.row_record_ids[usable_rows], f"cache {cache.path} unit id")
        window = np.asarray(cache.row_windows, dtype=np.int64)[usable_rows]

        # Slots: window w of unit i of a recording sits at i * W + w (W: most windows per unit in that recording).
        rec_code, rec_names = pd.factorize(pd.Series(rec, dtype=object))
        per_rec_w = np.ones(len(rec_names), dtype=np.int64)
        np.maximum.at(per_rec_w, rec_code, window + 1)
        slot = idx * per_rec_w[rec_code] + window
        if len(slot) and slot.max() >= (1 << _SLOT_BITS):
            raise ValueError(f"unit index too large for context windows ({int(idx.max())})")
        keys = (rec_code.astype(np.int64) << _SLOT_BITS) | slot
        order = np.argsort(keys, kind="stable")
        sorted_keys, sorted_rows = keys[order], usable_rows[order]
        if len(sorted_keys) > 1 and (np.diff(sorted_keys) == 0).any():
            dup = cache.row_record_ids[sorted_rows[1:][np.diff(sorted_keys) == 0][0]]
            raise ValueError(f"cache {cache.path} holds the same window of unit {dup!r} twice")

        # Items: every cached window of a labelled unit, in cache order (like WindowDataset).
        labelled = row_pos[usable_rows] >= 0
        self.rows = usable_rows[labelled]
        self.row_record = row_pos[self.rows]
        present = set(self.row_record.tolist())
        self.missing_records = [record_ids[i] for i in range(self.n_records) if i not in present]
        offsets = np.arange(-self.context, self.context + 1, dtype=np.int64)
        n_slot = slot[labelled][:, None] + offsets[None, :]
        n_key = (rec_code[labelled].astype(np.int64)[:, None] << _SLOT_BITS) | np.clip(n_slot, 0, None)
        if len(sorted_keys):
            found = np.searchsorted(sorted_keys, n_key).clip(max=len(sorted_keys) - 1)
            hit = (n_slot >= 0) & (sorted_keys[found] == n_key)
            self.neighbour_rows = np.where(hit, sorted_rows[found], -1)  # (items, K); -1: no window there
        else:
            self.neighbour_rows = np.full(n_slot.shape, -1, dtype=np.int64)

    @property
    def window_count(self) -> int:
        """Windows per item, ``K = 2 * context + 1``."""
        return 2 * self.context + 1

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """A batch: ``input_values``/``attention_mask`` ``(B, K, *input_shape)``, ``labels``, ``record_index``."""
        idx = np.asarray(indices)
        rows = self.neighbour_rows[idx].reshape(-1)
        absent = rows < 0
        # Absent neighbours read any valid row (the centre's) and are zeroed after the one gathering copy.
        safe = np.where(absent, np.repeat(self.rows[idx], self.window_count), rows)
        shape = (len(idx), self.window_count) + self.input_shape
        x = self.cache.take("input_values", safe)
        m = self.cache.take("attention_mask", safe).astype(np.int64)
        if absent.any():
            x[absent] = 0
            m[absent] = 0
        rec = self.row_record[idx]
        return {
            "input_values": torch.from_numpy(x.reshape(shape)),
            "attention_mask": torch.from_numpy(m.reshape(shape)),
            "labels": torch.from_numpy(self.labels[rec]),
            "record_index": torch.from_numpy(rec.astype(np.int64)),
        }

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


__all__ = ["ContextWindowDataset", "parse_unit_ids"]
