"""The resampler ECG-CPC's preprocessing needs and ``ecg_adapt.processing.steps`` does not have.

The benchmark (AI4HealthUOL/ecg-fm-benchmarking@6367295, ``time_series_dataset_transforms.Resample`` and
``ecg_utils.resample_data``) resamples with ``resampy.resample(x, fs_in, fs_out, axis=0)``: resampy 0.4.3's default
``kaiser_best`` filter, a band-limited (Kaiser-windowed sinc) interpolator evaluated at every output time.

Why it is written here rather than called: resampy is not a dependency of ecg_adapt (it pulls numba), and no
scipy call computes the same numbers: ``resample_poly(12, 25)`` differs from the benchmark's windows by 0.012 mV
and the FFT ``resample`` by 0.071 mV (``shared/golden/ecg_cpc/meta.json``). resampy's algorithm is short: for output
sample ``t`` at input time ``t / ratio``, it sums the input samples to the left and to the right, weighted by a
tabulated half window that is linearly interpolated between table entries, scaled by ``ratio`` when
downsampling. This module reproduces that computation term for term:

* the half window is ``rolloff * sinc(rolloff * m / 2**precision) * kaiser_taper(m)`` for ``m = 0 ..
  num_zeros * 2**precision``, the construction of ``resampy.filters.sinc_window``. resampy ships ``kaiser_best``
  as a table with ``num_zeros=50``, ``precision=13``, ``rolloff=0.9173473712608761`` and a Kaiser ``beta`` its
  docstring rounds to 12.9846; ``beta=12.984585247040032`` rebuilds the shipped table to 1.1e-15, which is the
  value used here. The table entries are evaluated directly (Kaiser taper ``I0(beta sqrt(1-(m/n)^2)) / I0(beta)``)
  instead of building the 409,601-entry table;
* the table offsets, the interpolation factor ``eta`` and the number of taps per wing follow resampy's loop
  (``index_step = int(scale * 2**precision)``, ``i_max = min(n + 1, (nwin - offset) // index_step)``, ...);
* the sum runs in resampy's order (left wing nearest first, then right wing) and, for float32 input,
  accumulates in float32 as resampy's numba kernel does (each term added in float64 and stored as float32).

Measured on ``shared/golden/ecg_cpc/model_input.npy`` (two 2.5 s windows of a PTB-XL record, 500 -> 240 Hz):
bit-identical (max difference 0.0) with the float32 accumulation, 6e-7 with a float64 sum.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy.special import i0

from ...processing.steps import SignalState, Step, register_step

# resampy 0.4.3's ``kaiser_best`` (see the module docstring for where each number comes from).
KAISER_BEST = {"num_zeros": 50, "precision": 13, "rolloff": 0.9173473712608761, "beta": 12.984585247040032}


def _half_window(m: np.ndarray, num_zeros: int, precision: int, rolloff: float, beta: float) -> np.ndarray:
    """Entries ``m`` of resampy's ``sinc_window`` table (float64)."""
    num_table = 2**precision
    n = num_table * num_zeros
    sinc = rolloff * np.sinc(rolloff * (m / num_table))
    taper = i0(beta * np.sqrt(np.clip(1.0 - (m / n) ** 2, 0.0, None))) / i0(beta)
    return sinc * taper


@functools.lru_cache(maxsize=16)
def sinc_taps(n_in: int, fs_in: float, fs_out: float, num_zeros: int, precision: int, rolloff: float,
              beta: float) -> tuple[np.ndarray, np.ndarray, int]:
    """The input indices and weights every output sample sums, in resampy's order.

    Returns ``(index, weight, n_out)``: ``(n_out, taps)`` arrays, padded with ``weight = 0`` and ``index = 0``
    where an output sample has fewer taps (near the edges), and ``n_out = int(n_in * fs_out / fs_in)``.
    """
    ratio = fs_out / fs_in
    n_out = int(n_in * float(fs_out) / float(fs_in))
    if n_out < 1:
        raise ValueError(f"Cannot resample {n_in} samples from {fs_in:g} Hz to {fs_out:g} Hz: no output sample")
    num_table = 2**precision
    nwin = num_table * num_zeros + 1
    scale = min(1.0, ratio)
    index_step = int(scale * num_table)
    t_out = np.arange(n_out) * (1.0 / ratio)
    def wing(frac: float, limit: int) -> tuple[int, np.ndarray]:
        """Number of taps and their weights for one wing (resampy's table offset and interpolation)."""
        index_frac = frac * num_table
        offset = int(index_frac)
        eta = index_frac - offset
        taps = max(0, min(limit, (nwin - offset) // index_step))
        m = offset + np.arange(taps) * index_step
        win = scale * _half_window(m, num_zeros, precision, rolloff, beta)
        # resampy's delta table is diff(window) with a 0 after the last entry
        last = m + 1 >= nwin
        nxt = scale * _half_window(np.minimum(m + 1, nwin - 1), num_zeros, precision, rolloff, beta)
        return taps, win + eta * np.where(last, 0.0, nxt - win)

    rows_idx, rows_w = [], []
    for t in range(n_out):
        n = int(t_out[t])
        frac = scale * (t_out[t] - n)
        n_left, w_left = wing(frac, n + 1)  # x[n], x[n-1], ...
        n_right, w_right = wing(scale - frac, n_in - n - 1)  # x[n+1], x[n+2], ...
        rows_idx.append(np.concatenate([n - np.arange(n_left), n + 1 + np.arange(n_right)]))
        rows_w.append(np.concatenate([w_left, w_right]))
    width = max(len(r) for r in rows_idx)
    index = np.zeros((n_out, width), dtype=np.int64)
    weight = np.zeros((n_out, width), dtype=np.float64)
    for t, (i, w) in enumerate(zip(rows_idx, rows_w)):
        index[t, : len(i)] = i
        weight[t, : len(w)] = w
    index.setflags(write=False)
    weight.setflags(write=False)
    return index, weight, n_out


def sinc_resample(x: np.ndarray, fs_in: float, fs_out: float, num_zeros: int = 50, precision: int = 13,
                  rolloff: float = 0.9173473712608761, beta: float = 12.984585247040032) -> np.ndarray:
    """Resample ``x`` along its last axis as ``resampy.resample(x, fs_in, fs_out, axis=-1)`` does (defaults:
    ``kaiser_best``), in the input's float precision (float32 input accumulates in float32, as resampy)."""
    if fs_in == fs_out:
        return x.copy()
    index, weight, n_out = sinc_taps(x.shape[-1], float(fs_in), float(fs_out), num_zeros, precision, rolloff, beta)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    y = np.zeros(x.shape[:-1] + (n_out,), dtype=dtype)
    for s in range(index.shape[1]):
        w = weight[:, s]
        # Slots past an output's last tap (weight 0, index 0) add exactly 0.0, even where sample 0 is NaN.
        term = np.where(w != 0.0, w * x[..., index[:, s]].astype(np.float64), 0.0)
        y = (y.astype(np.float64) + term).astype(dtype)
    return y


@register_step
@dataclass
class SincResample(Step):
    """Resample every lead to ``target_hz`` with resampy's band-limited sinc interpolator (default: its
    ``kaiser_best`` filter), the resampler of the ECG-CPC benchmark; see the module docstring.

    Runs on the whole record before windowing, or on each window separately after :class:`Window` (the
    benchmark cuts 2.5 s windows at 500 Hz first and resamples each one alone, which differs from resampling the
    record first by up to 0.029 mV). The mask follows by nearest neighbour, as in the shared ``resample`` step.
    """

    name: ClassVar[str] = "ecg_cpc_sinc_resample"
    target_hz: float = 240.0
    num_zeros: int = KAISER_BEST["num_zeros"]
    precision: int = KAISER_BEST["precision"]
    rolloff: float = KAISER_BEST["rolloff"]
    beta: float = KAISER_BEST["beta"]

    def __call__(self, state: SignalState) -> SignalState:
        if state.flat:
            raise ValueError(f"Step {self.name!r} needs (leads, time) data; it cannot run after 'flatten'")
        fs, target = float(state.fs), float(self.target_hz)
        if target <= 0:
            raise ValueError(f"{self.name}: target_hz must be positive, got {self.target_hz}")
        if fs == target:
            return state
        n = state.x.shape[-1]
        x = sinc_resample(state.x, fs, target, self.num_zeros, self.precision, self.rolloff, self.beta)
        src = np.minimum(np.round(np.arange(x.shape[-1]) * fs / target).astype(int), n - 1)
        state.mask = state.mask[..., src]
        state.x = x
        state.fs = target
        state.notes.append(f"resampled {fs:g} Hz -> {target:g} Hz (band-limited sinc, resampy kaiser_best)")
        return state
