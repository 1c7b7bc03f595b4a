"""Preprocessing steps that ECG-FM needs and ``ecg_adapt.processing.steps`` does not (yet) have.

fairseq-signals' ``scripts/preprocess/ecg/preprocess.py`` (Jwoo5/fairseq-signals@6b9e137), which built ECG-FM's
training data, differs from the shared steps in three small ways that each break parity:

1. ``resample``: linear interpolation onto an **endpoint-aligned** grid, ``n_new = int(N * 500 / fs)``,
   ``x = np.linspace(0, n_new - 1, N)``, ``interp1d(x, feats)(np.arange(n_new))``: the first and last samples
   of the record map onto the first and last output samples. The shared ``Resample(method="linear")`` maps
   samples by their time stamps instead (``t = i / fs``), which differs by a fraction of a sample.
2. ``preprocess_mat`` + ``lead_std_divide``: per-lead z-score in float64 with **no epsilon** (the shared
   ``Normalize("zscore")`` divides by ``std + 1e-8``: up to 1.4e-6 off), and constant leads set to 0.
3. ``segment_mat``: non-overlapping windows with the **remainder dropped** (the shared ``Window(mode="all")``
   adds a last window aligned to the end of the record).

Each step is generic (rates and lengths are parameters), works on the whole record before windowing (the
segmenter makes the windows), keeps the mask consistent and records what it did in ``state.notes``. Their names
carry the family prefix only so they cannot clash with steps other families add; they can move to
``ecg_adapt/processing/steps.py`` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from ...processing.steps import SignalState, Step, register_step


def _require_unwindowed(state: SignalState, step: str) -> None:
    if state.flat or state.windowed:
        raise ValueError(f"Step {step!r} works on the whole record: put it before the windowing step")


@register_step
@dataclass
class EndpointLinearResample(Step):
    """Linear interpolation to ``target_hz`` on an endpoint-aligned grid (fairseq-signals ``resample``).

    ``n_out = int(n * target_hz / fs)``; source sample ``i`` sits at position ``i * (n_out - 1) / (n - 1)`` of the
    output grid (``np.linspace(0, n_out - 1, n)``) and the output is read at ``0, 1, ..., n_out - 1``. A no-op
    when the rates already match. Because the grid is stretched to keep both end samples, the effective rate is
    ``fs * (n_out - 1) / (n - 1)`` rather than exactly ``target_hz`` (a relative error below ``1 / n``): that is
    what the original does, and what ECG-FM was trained on.

    Example:
        >>> import numpy as np
        >>> from ecg_adapt.processing.steps import SignalState
        >>> s = SignalState(x=np.arange(4.0)[None, None], mask=np.ones((1, 1, 4), bool), fs=4.0,
        ...                 lead_present=np.ones(1, bool))
        >>> EndpointLinearResample(target_hz=6.0)(s).x.round(3).tolist()
        [[[0.0, 0.6, 1.2, 1.8, 2.4, 3.0]]]
    """

    name: ClassVar[str] = "ecg_fm_endpoint_linear_resample"
    target_hz: float = 500.0

    def __call__(self, state: SignalState) -> SignalState:
        _require_unwindowed(state, self.name)
        fs, target = float(state.fs), float(self.target_hz)
        if fs == target:
            return state
        n = state.x.shape[-1]
        n_out = int(n * target / fs)
        if n < 2 or n_out < 1:
            raise ValueError(f"Record of {n} samples at {fs:g} Hz is too short to resample to {target:g} Hz")
        grid = np.linspace(0, n_out - 1, n)  # where each source sample lands on the output axis
        at = np.arange(n_out, dtype=np.float64)
        flat = state.x.reshape(-1, n)
        state.x = np.stack([np.interp(at, grid, row) for row in flat]).reshape(state.x.shape[:-1] + (n_out,))
        # The mask follows by nearest neighbour on the same grid: an output sample is real iff the source
        # sample closest to it was.
        src = np.clip(np.round(at * (n - 1) / max(n_out - 1, 1)).astype(int), 0, n - 1)
        state.mask = state.mask[..., src]
        state.fs = target
        state.notes.append(f"resampled {fs:g} Hz -> {target:g} Hz (linear, endpoint-aligned grid, {n} -> {n_out} samples)")
        return state


@register_step
@dataclass
class RecordLeadZScore(Step):
    """Per-lead z-score over the whole record, exactly as fairseq-signals ``preprocess_mat``.

    In float64: ``x -= x.mean()``; ``std = x.std()`` (``ddof=0``, of the centred lead); ``x /= std``. There is no
    epsilon; a lead with ``std == 0`` (constant or absent) becomes all zeros and is named in a note. Must run
    before windowing, so that every window of a record shares the record's statistics (as ECG-FM's data do).
    """

    name: ClassVar[str] = "ecg_fm_record_lead_zscore"

    def __call__(self, state: SignalState) -> SignalState:
        _require_unwindowed(state, self.name)
        x = np.array(state.x, dtype=np.float64)  # (1, leads, time), a copy
        x -= x.mean(axis=-1, keepdims=True)
        std = x.std(axis=-1, keepdims=True)
        constant = (std == 0)[..., 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            x = np.where(std == 0, 0.0, x / np.where(std == 0, 1.0, std))
        present_constant = [int(i) for i in np.nonzero(constant.any(axis=0) & state.lead_present)[0]]
        if present_constant:
            state.notes.append(f"ecg_fm_record_lead_zscore: constant lead(s) at index {present_constant} set to 0")
        state.x = x
        return state


@register_step
@dataclass
class NonOverlappingSegments(Step):
    """Cut the record into non-overlapping windows of ``seconds``, dropping the remainder (``segment_mat``).

    ``mode="all"`` keeps windows starting at ``0, n, 2n, ...`` while they fit (a 10 s record gives two 5 s
    windows, a 12 s record also two); ``mode="first"`` keeps only the first. A record shorter than one window
    gives one window, zero-padded at the end with ``mask=False`` over the padding (the original drops such
    records; here the padding is visible to the model through ``attention_mask``).
    """

    name: ClassVar[str] = "ecg_fm_nonoverlapping_segments"
    seconds: float = 5.0
    mode: Literal["all", "first"] = "all"

    def __call__(self, state: SignalState) -> SignalState:
        _require_unwindowed(state, self.name)
        if self.mode not in ("all", "first"):
            raise ValueError(f"{self.name}: mode must be 'all' or 'first', got {self.mode!r}")
        fs = state.fs
        n = int(round(self.seconds * fs))
        if n < 1:
            raise ValueError(f"{self.name}: {self.seconds} s at {fs:g} Hz is less than one sample")
        x, m = state.x[0], state.mask[0]
        total = x.shape[-1]
        if total < n:
            xs = np.zeros((1, x.shape[0], n), dtype=x.dtype)
            ms = np.zeros((1, x.shape[0], n), dtype=bool)
            xs[0, :, :total], ms[0, :, :total] = x, m
            starts = [0]
            state.notes.append(f"window: record of {total / fs:.2f} s padded to {self.seconds:g} s (masked)")
        else:
            count = total // n if self.mode == "all" else 1
            starts = [i * n for i in range(count)]
            xs = np.stack([x[:, s : s + n] for s in starts])
            ms = np.stack([m[:, s : s + n] for s in starts])
            dropped = total - count * n
            if dropped and self.mode == "all":
                state.notes.append(f"{self.name}: last {dropped / fs:.2f} s dropped (not a whole window)")
        state.x, state.mask = xs, ms
        state.windowed = True
        state.window_starts = [s / fs for s in starts]
        return state
