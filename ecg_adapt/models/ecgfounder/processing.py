"""Preprocessing steps that ECGFounder needs and ``ecg_adapt.processing.steps`` does not (yet) have.

ECGFounder's ``util.filter_bandpass`` (PKUDigitalHealth/ECGFounder@04edac7) runs, lead by lead in float64:

1. a 50 Hz notch, ``b, a = scipy.signal.iirnotch(50, 30, fs)`` applied with ``filtfilt(b, a, x)``;
2. a Butterworth band-pass in *transfer-function* (``ba``) form, ``butter(N=4, Wn=[0.67, 40], btype='bandpass',
   fs=fs)`` applied with ``filtfilt`` (the shared :class:`~ecg_adapt.processing.steps.Butterworth` step uses
   ``sos`` + ``sosfiltfilt``, which differs from the original by ~3e-6 after the z-score);
3. baseline removal, ``x - scipy.signal.medfilt(x, int(0.4 * fs) + 1)`` (``medfilt`` zero-pads the edges;
   ``scipy.ndimage.median_filter`` with its default reflect mode would change the first and last 0.2 s).

Each step here is generic (frequency, quality, order and window are parameters), works on any ``(..., time)``
array (before or after windowing, never after flattening), leaves the mask alone, and records a note when it
has to deviate from the plain call (a record too short for the default ``filtfilt`` padding, a cut-off above
Nyquist). Their names carry the family prefix only so they cannot clash with steps other families add; they
can move to ``ecg_adapt/processing/steps.py`` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy import signal as sps

from ...processing.steps import SignalState, Step, register_step


def _require_channels(state: SignalState, step: str) -> None:
    if state.flat:
        raise ValueError(f"Step {step!r} needs (leads, time) data; it cannot run after 'flatten'")


def _filtfilt_ba(b: np.ndarray, a: np.ndarray, x: np.ndarray, step: str, state: SignalState) -> np.ndarray:
    """``scipy.signal.filtfilt(b, a, x)`` along the last axis with scipy's default padding.

    The default ``padlen`` is ``3 * max(len(a), len(b))``; filtfilt refuses signals not longer than that, so
    for such (very short) records the padding is shortened and a note says so.
    """
    padlen = 3 * max(len(a), len(b))
    n = x.shape[-1]
    if n <= padlen:
        state.notes.append(f"{step}: record of {n} samples shorter than the filter padding {padlen}; padlen={n - 1}")
        return sps.filtfilt(b, a, x, axis=-1, padlen=n - 1)
    # Same numbers as the original's per-lead 1-D calls: filtfilt filters each row of the last axis alone.
    return sps.filtfilt(b, a, x, axis=-1)


@register_step
@dataclass
class NotchIIR(Step):
    """Zero-phase IIR notch: ``b, a = scipy.signal.iirnotch(freq_hz, quality, fs)``, then ``filtfilt(b, a, x)``.

    ECGFounder always uses 50 Hz with Q = 30 (also for 60 Hz mains data such as MIMIC-IV-ECG). Skipped, with a
    note, when ``freq_hz`` is not below the Nyquist frequency of the record.
    """

    name: ClassVar[str] = "ecgfounder_notch"
    freq_hz: float = 50.0
    quality: float = 30.0

    def __call__(self, state: SignalState) -> SignalState:
        _require_channels(state, self.name)
        if self.freq_hz >= state.fs / 2:
            state.notes.append(f"{self.name}: {self.freq_hz} Hz is not below Nyquist ({state.fs / 2} Hz), skipped")
            return state
        b, a = sps.iirnotch(self.freq_hz, self.quality, fs=state.fs)
        state.x = _filtfilt_ba(b, a, state.x, self.name, state)
        return state


@register_step
@dataclass
class ButterworthBA(Step):
    """Zero-phase Butterworth filter in transfer-function form: ``butter(order, Wn, fs=fs)`` then ``filtfilt``.

    Exactly the call of ECGFounder's ``util.filter_bandpass`` (``order=4``, 0.67-40 Hz band-pass). ``low_hz``
    or ``high_hz`` of ``None`` drops that edge (high-pass / low-pass); a ``high_hz`` at or above Nyquist is
    dropped with a note. Prefer the shared ``butterworth`` step (``sos`` form, numerically safer for high
    orders) unless parity with a ``ba``-form original matters, as it does here.
    """

    name: ClassVar[str] = "ecgfounder_butterworth_ba"
    low_hz: float | None = 0.67
    high_hz: float | None = 40.0
    order: int = 4

    def __call__(self, state: SignalState) -> SignalState:
        _require_channels(state, self.name)
        fs = state.fs
        high = self.high_hz if self.high_hz is not None and self.high_hz < fs / 2 else None
        if self.high_hz is not None and high is None:
            state.notes.append(f"{self.name}: high edge {self.high_hz} Hz >= Nyquist {fs / 2} Hz, dropped")
        if self.low_hz and high:
            b, a = sps.butter(N=self.order, Wn=[self.low_hz, high], btype="bandpass", fs=fs)
        elif self.low_hz:
            b, a = sps.butter(N=self.order, Wn=self.low_hz, btype="highpass", fs=fs)
        elif high:
            b, a = sps.butter(N=self.order, Wn=high, btype="lowpass", fs=fs)
        else:
            return state
        state.x = _filtfilt_ba(b, a, state.x, self.name, state)
        return state


@register_step
@dataclass
class MedianBaseline(Step):
    """Baseline-wander removal: ``x - scipy.signal.medfilt(x, k)`` lead by lead, ``k = int(window_seconds*fs)+1``
    made odd.

    ``medfilt`` pads both ends with zeros (not reflection), as in the original; that is part of the contract,
    since the first and last ``k // 2`` samples depend on it. ECGFounder uses 0.4 s (201 samples at 500 Hz).
    """

    name: ClassVar[str] = "ecgfounder_median_baseline"
    window_seconds: float = 0.4

    def __call__(self, state: SignalState) -> SignalState:
        _require_channels(state, self.name)
        kernel = int(self.window_seconds * state.fs) + 1
        if kernel % 2 == 0:
            kernel += 1
        x = state.x
        flat = x.reshape(-1, x.shape[-1])
        # 1-D medfilt per row: the N-D call would need a (1, ..., k) kernel and is ~25x slower.
        baseline = np.stack([sps.medfilt(row, kernel_size=kernel) for row in flat]).reshape(x.shape)
        state.x = x - baseline
        return state
