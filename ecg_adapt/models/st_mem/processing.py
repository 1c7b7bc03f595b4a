"""Preprocessing steps that ST-MEM needs and ``ecg_adapt.processing.steps`` does not have (yet).

ST-MEM's evaluation pipeline (``util/transforms.py`` + ``configs/downstream/st_mem.yaml`` of vuno/ST-MEM) is:
10 s windows stored as float32 → FFT resample to 250 Hz → **three 9 s crops per window** (``NCrop``) → zero-phase
Butterworth high-pass and low-pass on each crop → one z-score per crop over leads and time together. Three of
those operations have no exact generic step in ecg_adapt:

* :class:`STMEMCast` rounds the signal to a storage dtype (the original pickles its 10 s windows as float32
  before resampling; keeping that rounding makes the processor reproduce the original input bit for bit);
* :class:`STMEMNCrop` cuts every window into equally spaced crops, after the record has already been
  windowed, which :class:`~ecg_adapt.processing.steps.Window` cannot do (a processor windows only once);
* :class:`STMEMStandardize` is the original's z-score: no epsilon, 0 where the std is 0
  (:class:`~ecg_adapt.processing.steps.Normalize` divides by ``std + eps``).

All three are written generically (any dtype, any crop length and count, any upstream windowing) so that they can
move to ``ecg_adapt/processing/steps.py`` under plain names later; until then their names carry the family
prefix so that saved ``preprocessor_config.json`` files stay readable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ...processing.steps import SignalState, Step, register_step

_ALLOWED_DTYPES = ("float16", "float32", "float64")


@register_step
@dataclass
class STMEMCast(Step):
    """Round the signal to ``dtype`` (values only: later steps may compute in float64 again).

    ST-MEM's ``data/process_ecg.py`` stores every 10 s window with ``.astype(np.float32)`` and the FFT resampler
    then runs on that float32 array. Without this step the processed input differs from the original by about
    1e-6 (the float32 rounding of the raw mV values); with it, by 0.

    Example:
        >>> from ecg_adapt.processing.steps import SignalState
        >>> s = SignalState(x=np.full((1, 1, 2), 0.1), mask=np.ones((1, 1, 2), bool), fs=250.0,
        ...                 lead_present=np.ones(1, bool))
        >>> STMEMCast("float32")(s).x.dtype
        dtype('float32')
    """

    name: ClassVar[str] = "st_mem_cast"
    dtype: str = "float32"

    def __call__(self, state: SignalState) -> SignalState:
        if self.dtype not in _ALLOWED_DTYPES:
            raise ValueError(f"st_mem_cast.dtype must be one of {_ALLOWED_DTYPES}, got {self.dtype!r}")
        state.x = np.asarray(state.x).astype(self.dtype)
        return state


def ncrop_starts(length: int, crop: int, num_crops: int) -> list[int]:
    """Start indices of ST-MEM's ``NCrop(crop, num_crops)`` on a segment of ``length`` real samples.

    The original computes ``np.arange(0, length - crop + 1, (length - crop) // (num_crops - 1))``: crops are
    ``step`` samples apart, the first at 0 (for a 10 s window at 250 Hz and 9 s crops: 0, 125, 250). That
    expression is kept as it is, including its corner cases, with three additions where the original fails:

    * ``length <= crop``: a single crop at 0 (the original raises; ecg_adapt pads and masks instead);
    * ``num_crops == 1``: a single crop at 0 (the original divides by zero);
    * ``step == 0`` (fewer spare samples than gaps): ``num_crops`` rounded, evenly spaced starts, duplicates
      removed (the original raises).

    Example:
        >>> ncrop_starts(2500, 2250, 3)
        [0, 125, 250]
    """
    if crop < 1 or num_crops < 1:
        raise ValueError(f"crop length and number of crops must be positive, got {crop} and {num_crops}")
    spare = length - crop
    if spare <= 0 or num_crops == 1:
        return [0]
    step = spare // (num_crops - 1)
    if step == 0:
        return sorted({int(round(s)) for s in np.linspace(0, spare, num_crops)})
    return [int(s) for s in np.arange(0, spare + 1, step)]


@register_step
@dataclass
class STMEMNCrop(Step):
    """Cut every window into ``num_crops`` equally spaced crops of ``crop_seconds`` (ST-MEM's ``NCrop``).

    Runs after the record was windowed (e.g. :class:`~ecg_adapt.processing.steps.Window` of 10 s, as the
    original's ``process_ecg.py``) and resampled; on an unwindowed record it crops the whole record. The crop
    positions are those of :func:`ncrop_starts`, computed on the **real** length of each window (the last
    sample whose mask is set, plus one), so that a window that :class:`Window` padded to full length is cropped
    like the shorter segment it really is; a segment shorter than a crop gives one crop, zero-padded and masked.

    The result has ``sum(crops per window)`` rows, ordered window by window, and ``window_starts`` (seconds from
    the record start) follows them. Later steps (filters, normalisation) then work on each crop alone, which is
    what the original does: it crops first and filters each crop (filtering first changes the input by up to 1).
    """

    name: ClassVar[str] = "st_mem_ncrop"
    crop_seconds: float = 9.0
    num_crops: int = 3

    def __call__(self, state: SignalState) -> SignalState:
        if state.flat:
            raise ValueError("Step 'st_mem_ncrop' needs (leads, time) data; it cannot run after 'flatten'")
        fs = state.fs
        crop = int(round(self.crop_seconds * fs))
        if crop < 1:
            raise ValueError(f"st_mem_ncrop: a crop of {self.crop_seconds} s at {fs} Hz has no samples")
        if int(self.num_crops) != self.num_crops or self.num_crops < 1:
            raise ValueError(f"st_mem_ncrop.num_crops must be a positive integer, got {self.num_crops}")
        # Before any windowing the whole record is one row starting at 0 s.
        window_starts = list(state.window_starts) if state.windowed else [0.0] * state.x.shape[0]
        xs: list[np.ndarray] = []
        ms: list[np.ndarray] = []
        starts_s: list[float] = []
        for x, m, w0 in zip(state.x, state.mask, window_starts):
            real_any = m.any(axis=0)
            # A window with no real sample at all (e.g. a fully masked record) keeps its full length.
            length = int(np.flatnonzero(real_any)[-1]) + 1 if real_any.any() else x.shape[-1]
            for s in ncrop_starts(length, crop, int(self.num_crops)):
                seg_x = np.zeros((x.shape[0], crop), dtype=x.dtype)
                seg_m = np.zeros((x.shape[0], crop), dtype=bool)
                piece = x[:, s : s + crop]
                seg_x[:, : piece.shape[-1]] = piece
                seg_m[:, : piece.shape[-1]] = m[:, s : s + crop]
                xs.append(seg_x)
                ms.append(seg_m)
                starts_s.append(w0 + s / fs)
        n_in = state.x.shape[0]
        state.x = np.stack(xs)
        state.mask = np.stack(ms)
        state.window_starts = starts_s
        state.windowed = True
        state.notes.append(f"st_mem_ncrop: {n_in} window(s) -> {len(xs)} crop(s) of {self.crop_seconds:g} s")
        return state


@register_step
@dataclass
class STMEMStandardize(Step):
    """z-score without epsilon, 0 where the std is 0 (ST-MEM's ``Standardize``), per row of the current data.

    ``scope="global"`` takes one mean and one (population, ``ddof=0``) std per window over its present leads
    and all time samples together, which is ``Standardize(axis=(-1, -2))`` of the original; ``"lead"`` takes
    them per lead. Absent leads stay exactly zero and are left out of the statistics. The only difference from
    :class:`~ecg_adapt.processing.steps.Normalize` (``method="zscore"``) is the denominator: ``std`` instead of
    ``std + eps``, which is what makes the processed input equal to the original's (``eps=1e-8`` changes it by
    up to 2e-6 on a real record).
    """

    name: ClassVar[str] = "st_mem_standardize"
    scope: str = "global"

    def __call__(self, state: SignalState) -> SignalState:
        if state.flat:
            raise ValueError("Step 'st_mem_standardize' needs (leads, time) data; it cannot run after 'flatten'")
        if self.scope not in ("lead", "global"):
            raise ValueError(f"st_mem_standardize.scope must be 'lead' or 'global', got {self.scope!r}")
        present = state.lead_present
        if not present.any():
            return state
        x = np.asarray(state.x)
        sel = x[:, present, :]
        axes = (-1,) if self.scope == "lead" else (-2, -1)
        loc = sel.mean(axis=axes, keepdims=True)
        scale = sel.std(axis=axes, keepdims=True)
        # The original: np.divide(x - loc, scale, out=zeros, where=scale != 0)
        z = np.divide(sel - loc, scale, out=np.zeros(np.broadcast_shapes(sel.shape, scale.shape)), where=scale != 0)
        if bool((scale == 0).any()):
            state.notes.append("st_mem_standardize: constant segment(s) set to 0 (std = 0)")
        out = np.zeros(x.shape, dtype=z.dtype)
        out[:, present, :] = z
        state.x = out
        return state
