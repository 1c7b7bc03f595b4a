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
  value used here (Kaiser taper ``I0(beta sqrt(1-(m/n)^2)) / I0(beta)``, the closed form of
  ``scipy.signal.windows.kaiser``'s right half);
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


@functools.lru_cache(maxsize=4)
def _table(num_zeros: int, precision: int, rolloff: float, beta: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """resampy's half-window table (3.3 MB for ``kaiser_best``) times ``scale`` (the rate ratio when
    downsampling), and its differences ``np.diff(win, append=win[-1])`` (0 after the last entry): resampy scales
    the window first, then differences the scaled window. Built once per filter and ratio."""
    win = _half_window(np.arange(2**precision * num_zeros + 1), num_zeros, precision, rolloff, beta)
    if scale != 1.0:
        win = scale * win
    delta = np.diff(win, append=win[-1])
    win.setflags(write=False)
    delta.setflags(write=False)
    return win, delta


_CHUNK = 4096  # output samples per block of taps (bounds memory on long records: ~4096 x 210 weights)


@functools.lru_cache(maxsize=16)
def sinc_taps(n_in: int, fs_in: float, fs_out: float, start: int, stop: int, num_zeros: int, precision: int,
              rolloff: float, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """The input indices and weights that output samples ``start .. stop - 1`` sum, in resampy's order.

    Returns ``(index, weight)``, ``(stop - start, taps)`` arrays: the left wing (``x[n], x[n-1], ...``) then the
    right wing (``x[n+1], ...``) of each output, padded with ``weight = 0``, ``index = 0`` where an output has
    fewer taps (near the edges). Cached, so the 2.5 s windows of a dataset share one computation.
    """
    ratio = fs_out / fs_in
    num_table = 2**precision
    nwin = num_table * num_zeros + 1
    scale = min(1.0, ratio)
    index_step = int(scale * num_table)
    t_out = np.arange(start, stop) * (1.0 / ratio)  # resampy: np.arange(n_out) * time_increment
    n = t_out.astype(np.int64)
    frac = scale * (t_out - n)

    def wing(f: np.ndarray, limit: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        index_frac = f * num_table
        offset = index_frac.astype(np.int64)
        taps = np.clip(np.minimum(limit, (nwin - offset) // index_step), 0, None)
        return offset, index_frac - offset, taps

    off_l, eta_l, taps_l = wing(frac, n + 1)
    off_r, eta_r, taps_r = wing(scale - frac, n_in - n - 1)  # resampy inverts the fraction for the right wing
    slot = np.arange(int((taps_l + taps_r).max(initial=0)))[None, :]
    left = slot < taps_l[:, None]
    k = slot - taps_l[:, None]  # position in the right wing
    valid = left | (k < taps_r[:, None])
    m = np.where(left, off_l[:, None] + slot * index_step, off_r[:, None] + k * index_step)
    eta = np.where(left, eta_l[:, None], eta_r[:, None])
    m = np.where(valid, m, 0)
    table, delta = _table(num_zeros, precision, rolloff, beta, scale)
    weight = np.where(valid, table[m] + eta * delta[m], 0.0)
    index = np.where(valid, np.where(left, n[:, None] - slot, n[:, None] + 1 + k), 0)
    index.setflags(write=False)
    weight.setflags(write=False)
    return index, weight


def sinc_resample(x: np.ndarray, fs_in: float, fs_out: float, num_zeros: int = 50, precision: int = 13,
                  rolloff: float = 0.9173473712608761, beta: float = 12.984585247040032) -> np.ndarray:
    """Resample ``x`` along its last axis as ``resampy.resample(x, fs_in, fs_out, axis=-1)`` does (defaults:
    ``kaiser_best``), in the input's float precision (float32 input accumulates in float32, as resampy).

    Output length ``int(n * fs_out / fs_in)``."""
    fs_in, fs_out = float(fs_in), float(fs_out)
    if fs_in <= 0 or fs_out <= 0:
        raise ValueError(f"sampling rates must be positive, got {fs_in:g} -> {fs_out:g} Hz")
    if fs_in == fs_out:
        return x.copy()
    n_in = x.shape[-1]
    n_out = int(n_in * fs_out / fs_in)
    if n_out < 1:
        raise ValueError(f"Cannot resample {n_in} samples from {fs_in:g} Hz to {fs_out:g} Hz: no output sample")
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    # Time first, every lead/window a column: each tap then gathers whole contiguous rows.
    lead_shape = x.shape[:-1]
    xt = np.ascontiguousarray(x.reshape(-1, n_in).T.astype(dtype, copy=False))  # (n_in, M)
    y = np.zeros((n_out, xt.shape[1]), dtype=dtype)
    for start in range(0, n_out, _CHUNK):
        stop = min(n_out, start + _CHUNK)
        index, weight = sinc_taps(n_in, fs_in, fs_out, start, stop, num_zeros, precision, rolloff, beta)
        pad = weight == 0.0  # padding slots (weight 0, index 0) add exactly 0.0, even where x[0] is NaN
        if dtype == np.float64:
            # float64: one contraction per block (the sum order differs from resampy's loop by ~1e-16)
            gathered = xt[index]  # (rows, taps, M)
            if pad.any():
                gathered[pad] = 0.0
            y[start:stop] = np.einsum("tsm,ts->tm", gathered, weight)
            continue
        acc = y[start:stop]
        for s in range(index.shape[1]):
            term = xt[index[:, s]] * weight[:, s, None]  # float64 products, as in resampy's loop
            if pad[:, s].any():
                term[pad[:, s]] = 0.0
            # float32 + float64 computed in float64 and stored as float32: resampy's `y[t] += weight * x[...]`
            np.add(acc, term, out=acc, casting="unsafe")
    return np.ascontiguousarray(y.T).reshape(*lead_shape, n_out)


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
    # Resample float32 values with float32 accumulation, as resampy does on the benchmark's float32 memmaps
    # (the 240 Hz step); False keeps the processor's float64 (the dataset preparation resamples wfdb's float64).
    float32: bool = False
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
        x = sinc_resample(state.x.astype(np.float32) if self.float32 else state.x, fs, target, self.num_zeros, self.precision, self.rolloff, self.beta)
        src = np.minimum(np.round(np.arange(x.shape[-1]) * fs / target).astype(int), n - 1)
        state.mask = state.mask[..., src]
        state.x = x
        state.fs = target
        state.notes.append(f"resampled {fs:g} Hz -> {target:g} Hz (band-limited sinc, resampy kaiser_best)")
        return state
