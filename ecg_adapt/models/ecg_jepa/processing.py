"""Preprocessing steps ECG-JEPA needs that ``ecg_adapt.processing.steps`` does not have (yet).

ECG-JEPA's fine-tuning pipeline (``downstream_tasks/finetuning.py`` → ``augmentation.HighpassFilter`` and
``LowpassFilter``) runs two *separate* order-5 Butterworth filters, each designed with
``scipy.signal.butter(order, cutoff, btype, fs=fs, output="sos")`` and applied zero-phase with
``scipy.signal.sosfiltfilt`` along the last axis. The shared :class:`~ecg_adapt.processing.steps.Butterworth`
step designs one band-pass filter instead, which is a different filter (different poles, different
``sosfiltfilt`` padding), so parity needs this single-edge step. It is generic (any ``btype``, any order) and
can move to ``processing/steps.py`` as it is; only its registered ``name`` carries the family prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from scipy import signal as sps

from ...processing.steps import SignalState, Step, register_step


@register_step
@dataclass
class SOSButterworth(Step):
    """One zero-phase Butterworth filter: ``sosfiltfilt(butter(order, cutoff_hz, btype, fs, output="sos"), x)``.

    Args:
        btype: ``"highpass"``, ``"lowpass"``, ``"bandpass"`` or ``"bandstop"`` (scipy's names).
        cutoff_hz: the edge in Hz, or ``[low, high]`` for band filters.
        order: Butterworth order (ECG-JEPA uses 5).
        input_dtype: round the signal to this dtype before filtering (``"float32"``), or ``None`` to filter it
            as it is. ECG-JEPA filters the float32 tensor made by its dataset, not the float64 array, so its
            first filter sees float32-rounded samples (the difference is ~6e-8 mV; this makes it exact). The
            output is float64 either way, as scipy returns it.

    Filtering runs along the time axis of every window (after :class:`~ecg_adapt.processing.steps.Window`,
    each window is filtered on its own, as the original filters each dataset item). ``sosfiltfilt`` keeps
    scipy's default odd-extension padding, as the original does; a window shorter than that padding raises
    scipy's error. A cutoff at or above Nyquist is an error (the original would fail the same way).
    """

    name: ClassVar[str] = "ecg_jepa_sos_butterworth"
    btype: Literal["highpass", "lowpass", "bandpass", "bandstop"] = "highpass"
    cutoff_hz: float | list[float] = 0.67
    order: int = 5
    input_dtype: Literal["float32", "float64"] | None = None

    def __call__(self, state: SignalState) -> SignalState:
        if state.flat:
            raise ValueError(f"Step {self.name!r} needs (leads, time) data; it cannot run after 'flatten'")
        if self.btype not in ("highpass", "lowpass", "bandpass", "bandstop"):
            raise ValueError(f"{self.name}: unknown btype {self.btype!r}")
        edges = np.atleast_1d(np.asarray(self.cutoff_hz, dtype=float))
        if (edges >= state.fs / 2).any() or (edges <= 0).any():
            raise ValueError(
                f"{self.name}: cutoff {self.cutoff_hz} Hz must lie strictly between 0 and Nyquist ({state.fs / 2:g} Hz); "
                "put this step after the resampling step"
            )
        cutoff = float(edges[0]) if edges.size == 1 else [float(e) for e in edges]
        sos = sps.butter(int(self.order), cutoff, btype=self.btype, fs=state.fs, output="sos")
        x = state.x if self.input_dtype is None else state.x.astype(self.input_dtype)
        state.x = sps.sosfiltfilt(sos, x, axis=-1).astype(np.float64, copy=False)
        state.notes.append(f"{self.name}: order-{self.order} {self.btype} {self.cutoff_hz} Hz (zero-phase sosfiltfilt)")
        return state
