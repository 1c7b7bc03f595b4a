"""Named, serialisable preprocessing steps.

A processor is a list of these steps (braindecode-style), saved in ``preprocessor_config.json`` so that the
exact preprocessing of a model travels with its weights. Each step is a small dataclass that transforms a
:class:`SignalState` and can be written to / read from a plain dict (``{"name": ..., **params}``).

Filters and resamplers are thin wrappers around ``scipy.signal``; they are written here only to pin the exact
call (taps, padding, zero-phase) that each original model used, which is what parity depends on.
"""

from __future__ import annotations

import dataclasses
import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, ClassVar, Literal

import numpy as np
from scipy import signal as sps


@dataclass
class SignalState:
    """The signal as it moves through a processor.

    Before windowing ``x`` holds the whole record as one "window": shape ``(1, leads, time)``. After
    :class:`Window` it holds ``(n_windows, leads, time)``, and after :class:`Flatten` ``(n_windows, leads*time)``.
    ``mask`` has the same shape (``True`` = a real sample, ``False`` = padding or a masked lead).
    ``lead_present`` marks contract leads that exist in the record (absent leads stay exactly zero).
    """

    x: np.ndarray
    mask: np.ndarray
    fs: float
    lead_present: np.ndarray
    flat: bool = False
    windowed: bool = False
    window_starts: list[float] = field(default_factory=list)  # window start times in seconds
    notes: list[str] = field(default_factory=list)


_STEP_REGISTRY: dict[str, type[Step]] = {}


def register_step(cls: type[Step]) -> type[Step]:
    """Class decorator: make a step constructible from its saved dict by its ``name``."""
    if cls.name in _STEP_REGISTRY:
        raise ValueError(f"Duplicate processing step name {cls.name!r}")
    _STEP_REGISTRY[cls.name] = cls
    return cls


@dataclass
class Step(ABC):
    """Base class of a processing step (a subclass that does not implement :meth:`__call__` cannot be created)."""

    name: ClassVar[str] = ""

    @abstractmethod
    def __call__(self, state: SignalState) -> SignalState:
        """Apply the step to ``state``; return the new state."""

    def to_dict(self) -> dict[str, Any]:
        params = dataclasses.asdict(self)
        for key, value in params.items():
            if isinstance(value, tuple):
                params[key] = list(value)
        return {"name": self.name, **params}


def step_from_dict(d: dict[str, Any] | Step) -> Step:
    """Rebuild a step from its saved dict, with a clear error for unknown names or parameters."""
    if isinstance(d, Step):
        return d
    d = dict(d)
    name = d.pop("name", None)
    if name not in _STEP_REGISTRY:
        raise ValueError(f"Unknown processing step {name!r}; known steps: {sorted(_STEP_REGISTRY)}")
    cls = _STEP_REGISTRY[name]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"Unknown parameters {sorted(unknown)} for step {name!r}; known: {sorted(known)}")
    return cls(**d)


def _require_unwindowed(state: SignalState, step: str) -> None:
    if state.flat:
        raise ValueError(f"Step {step!r} needs (leads, time) data; it cannot run after 'flatten'")


@register_step
@dataclass
class BandpassFIR(Step):
    """Zero-phase FIR band-pass, as ``biosppy.signals.tools.filter_signal(ftype='FIR', band='bandpass')``.

    ``numtaps = int(order_seconds * fs)``, bumped to the next odd number (biosppy does the same), designed with
    ``scipy.signal.firwin(numtaps, [low, high], pass_zero=False, fs=fs)`` (Hamming window) and applied with
    ``scipy.signal.filtfilt(b, [1], x)``. HuBERT-ECG uses ``[0.05, 47]`` Hz with ``order_seconds=0.3``.
    """

    name: ClassVar[str] = "bandpass_fir"
    low_hz: float = 0.05
    high_hz: float = 47.0
    order_seconds: float = 0.3

    def __call__(self, state: SignalState) -> SignalState:
        _require_unwindowed(state, self.name)
        fs = state.fs
        numtaps = int(self.order_seconds * fs)
        if numtaps % 2 == 0:
            numtaps += 1
        high = self.high_hz
        nyq = fs / 2
        if high >= nyq:
            # The record is sampled too slowly for the low-pass edge: keep only the high-pass part.
            state.notes.append(f"bandpass_fir: high edge {high} Hz >= Nyquist {nyq} Hz, applied high-pass only")
            b, zi = _fir_bandpass(numtaps, self.low_hz, None, fs)
        else:
            b, zi = _fir_bandpass(numtaps, self.low_hz, high, fs)
        padlen = 3 * numtaps
        n = state.x.shape[-1]
        if n <= padlen:
            state.notes.append(f"bandpass_fir: record of {n} samples shorter than the filter padding {padlen}; padlen={n - 1}")
            padlen = n - 1
        state.x = _fir_filtfilt(b, zi, state.x, padlen)
        return state


@functools.lru_cache(maxsize=32)
def _fir_bandpass(numtaps: int, low: float, high: float | None, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """FIR taps (``firwin``) and their ``lfilter_zi`` steady state, designed once per (taps, band, rate)."""
    b = sps.firwin(numtaps, low if high is None else [low, high], pass_zero=False, fs=fs)
    return b, sps.lfilter_zi(b, [1.0])


def _fir_filtfilt(b: np.ndarray, zi: np.ndarray, x: np.ndarray, padlen: int) -> np.ndarray:
    """``scipy.signal.filtfilt(b, [1], x, axis=-1, padlen=padlen)`` with the steady state ``zi`` given.

    Why not filtfilt itself: it recomputes ``lfilter_zi`` (a dense linear solve in the number of taps) on every
    call, about 90 % of the time of filtering one short segment (a beat or a minute of a long recording). The
    steps are filtfilt's own: odd extension by ``padlen``, a forward ``lfilter`` started at ``zi * first
    sample``, a backward one started at ``zi * last output``; the result is the same to the bit (tested).
    """
    if padlen > 0:
        left = 2 * x[..., :1] - x[..., padlen:0:-1]
        right = 2 * x[..., -1:] - x[..., -2:-(padlen + 2):-1]
        ext = np.concatenate([left, x, right], axis=-1)
    else:
        ext = x
    y, _ = sps.lfilter(b, [1.0], ext, axis=-1, zi=zi * ext[..., :1])
    y, _ = sps.lfilter(b, [1.0], y[..., ::-1], axis=-1, zi=zi * y[..., -1:])
    y = y[..., ::-1]
    return y[..., padlen:-padlen] if padlen > 0 else y


@register_step
@dataclass
class Butterworth(Step):
    """Zero-phase Butterworth filter (``sosfiltfilt``); ``low_hz``/``high_hz`` of ``None`` drop that edge."""

    name: ClassVar[str] = "butterworth"
    low_hz: float | None = 0.67
    high_hz: float | None = 40.0
    order: int = 4

    def __call__(self, state: SignalState) -> SignalState:
        _require_unwindowed(state, self.name)
        fs = state.fs
        high = self.high_hz if self.high_hz is not None and self.high_hz < fs / 2 else None
        if self.high_hz is not None and high is None:
            state.notes.append(f"butterworth: high edge {self.high_hz} Hz >= Nyquist {fs / 2} Hz, dropped")
        if self.low_hz and high:
            sos = sps.butter(self.order, [self.low_hz, high], btype="bandpass", fs=fs, output="sos")
        elif self.low_hz:
            sos = sps.butter(self.order, self.low_hz, btype="highpass", fs=fs, output="sos")
        elif high:
            sos = sps.butter(self.order, high, btype="lowpass", fs=fs, output="sos")
        else:
            return state
        state.x = sps.sosfiltfilt(sos, state.x, axis=-1)
        return state


@register_step
@dataclass
class Resample(Step):
    """Resample every lead to ``target_hz``.

    ``method="fft"`` is ``scipy.signal.resample`` with ``int(n * target / fs)`` output samples (the call of
    HuBERT-ECG's ``utils.ecg_preprocessing``); ``"polyphase"`` is ``scipy.signal.resample_poly`` (anti-aliased,
    no periodicity assumption); ``"linear"`` is linear interpolation (ECG-FM). A no-op when rates match.
    """

    name: ClassVar[str] = "resample"
    target_hz: float = 500.0
    method: Literal["fft", "polyphase", "linear"] = "fft"

    def __call__(self, state: SignalState) -> SignalState:
        _require_unwindowed(state, self.name)
        fs, target = float(state.fs), float(self.target_hz)
        if fs == target:
            return state
        n = state.x.shape[-1]
        n_out = int(n * (target / fs))
        if n_out < 1:
            raise ValueError(f"Record of {n} samples at {fs} Hz is too short to resample to {target} Hz")
        if self.method == "fft":
            x = sps.resample(state.x, n_out, axis=-1)
        elif self.method == "polyphase":
            frac = Fraction(target / fs).limit_denominator(1000)
            x = sps.resample_poly(state.x, frac.numerator, frac.denominator, axis=-1)[..., :n_out]
        elif self.method == "linear":
            t_in = np.arange(n) / fs
            t_out = np.arange(n_out) / target
            x = np.stack([np.stack([np.interp(t_out, t_in, lead) for lead in w]) for w in state.x])
        else:
            raise ValueError(f"Unknown resample method {self.method!r}; use 'fft', 'polyphase' or 'linear'")
        # The mask follows by nearest neighbour: a resampled sample is real iff its nearest source sample was.
        src = np.minimum(np.round(np.arange(x.shape[-1]) * fs / target).astype(int), n - 1)
        state.mask = state.mask[..., src]
        state.x = x
        state.fs = target
        state.notes.append(f"resampled {fs:g} Hz -> {target:g} Hz ({self.method})")
        return state


@register_step
@dataclass
class Normalize(Step):
    """Amplitude normalisation over the current segment (the whole record before windowing).

    ``method``: ``"minmax"`` maps to ``[low, high]`` as ``(high-low)*(x-min)/(max-min+eps)+low`` (HuBERT-ECG
    uses ``[-1, 1]``, ``eps=1e-8``); ``"zscore"`` is ``(x-mean)/(std+eps)``. ``scope``: ``"lead"`` takes
    statistics per lead, ``"global"`` over all present leads together. Absent leads stay zero.
    """

    name: ClassVar[str] = "normalize"
    method: Literal["minmax", "zscore"] = "minmax"
    scope: Literal["lead", "global"] = "lead"
    low: float = -1.0
    high: float = 1.0
    eps: float = 1e-8

    def __call__(self, state: SignalState) -> SignalState:
        _require_unwindowed(state, self.name)
        x = state.x
        present = state.lead_present
        if not present.any():
            return state
        sel = x[:, present, :]
        axes = (-1,) if self.scope == "lead" else (-2, -1)
        if self.scope not in ("lead", "global"):
            raise ValueError(f"Normalize.scope must be 'lead' or 'global', got {self.scope!r}")
        if self.method == "minmax":
            lo = sel.min(axis=axes, keepdims=True)
            hi = sel.max(axis=axes, keepdims=True)
            sel = (self.high - self.low) * (sel - lo) / (hi - lo + self.eps) + self.low
        elif self.method == "zscore":
            mean = sel.mean(axis=axes, keepdims=True)
            std = sel.std(axis=axes, keepdims=True)
            sel = (sel - mean) / (std + self.eps)
        else:
            raise ValueError(f"Normalize.method must be 'minmax' or 'zscore', got {self.method!r}")
        out = np.zeros_like(x)
        out[:, present, :] = sel
        state.x = out
        return state


@register_step
@dataclass
class Window(Step):
    """Cut the record into fixed-length windows of ``seconds`` at the current sampling rate.

    ``mode="first"`` keeps only the window starting at ``offset_seconds`` (what most original test scripts do);
    ``mode="all"`` slides with ``stride_seconds`` (default: no overlap) and, when the end of the record is not
    covered, adds one last window aligned to the end, so every sample is seen. A record shorter than one
    window gives a single window, zero-padded at the end with ``mask=False`` over the padding.
    """

    name: ClassVar[str] = "window"
    seconds: float = 10.0
    mode: Literal["first", "all"] = "all"
    stride_seconds: float | None = None
    offset_seconds: float = 0.0

    def __call__(self, state: SignalState) -> SignalState:
        _require_unwindowed(state, self.name)
        if state.windowed:
            raise ValueError("The processor has two 'window' steps; records can be windowed only once")
        fs = state.fs
        n = int(round(self.seconds * fs))
        x, m = state.x[0], state.mask[0]
        total = x.shape[-1]
        offset = int(round(self.offset_seconds * fs))
        if offset >= total:
            raise ValueError(f"Window offset {self.offset_seconds} s is past the end of a {total / fs:.2f} s record")
        if total - offset <= n:
            starts = [offset]
        elif self.mode == "first":
            starts = [offset]
        elif self.mode == "all":
            stride = int(round((self.stride_seconds or self.seconds) * fs))
            if stride <= 0:
                raise ValueError("Window.stride_seconds must be positive")
            starts = list(range(offset, total - n + 1, stride))
            if starts[-1] + n < total:
                starts.append(total - n)
        else:
            raise ValueError(f"Window.mode must be 'first' or 'all', got {self.mode!r}")
        xs = np.zeros((len(starts), x.shape[0], n), dtype=x.dtype)
        ms = np.zeros((len(starts), x.shape[0], n), dtype=bool)
        for i, s in enumerate(starts):
            seg = x[:, s : s + n]
            xs[i, :, : seg.shape[-1]] = seg
            ms[i, :, : seg.shape[-1]] = m[:, s : s + n]
        if total - offset < n:
            state.notes.append(f"window: record of {(total - offset) / fs:.2f} s padded to {self.seconds:g} s (masked)")
        state.x, state.mask = xs, ms
        state.windowed = True
        state.window_starts = [s / fs for s in starts]
        return state


@register_step
@dataclass
class FillNaN(Step):
    """Replace remaining NaNs by the mean of the finite values of each window (HuBERT-ECG's dataset does this)."""

    name: ClassVar[str] = "fill_nan"

    def __call__(self, state: SignalState) -> SignalState:
        x = state.x
        bad = np.isnan(x)
        if bad.any():
            for i in range(x.shape[0]):
                finite = x[i][~bad[i]]
                x[i][bad[i]] = finite.mean() if finite.size else 0.0
        return state


@register_step
@dataclass
class Flatten(Step):
    """Concatenate the leads of each window lead-major: ``(W, C, T) -> (W, C*T)``."""

    name: ClassVar[str] = "flatten"

    def __call__(self, state: SignalState) -> SignalState:
        if state.flat:
            return state
        w = state.x.shape[0]
        state.x = state.x.reshape(w, -1)
        state.mask = state.mask.reshape(w, -1)
        state.flat = True
        return state


@register_step
@dataclass
class Decimate(Step):
    """``scipy.signal.decimate(x, q)`` along the last axis (order-8 Chebyshev I, zero phase), then ``[::q]``.

    After :class:`Flatten` this filters the concatenated leads as one sequence, exactly as HuBERT-ECG's
    dataset does (the filter crosses lead boundaries; decimating each lead alone differs by up to 0.36).
    """

    name: ClassVar[str] = "decimate"
    q: int = 5

    def __call__(self, state: SignalState) -> SignalState:
        if self.q < 1 or int(self.q) != self.q:
            raise ValueError(f"Decimate.q must be a positive integer, got {self.q}")
        if self.q == 1:
            return state
        state.x = sps.decimate(state.x, int(self.q), axis=-1)
        state.mask = state.mask[..., :: int(self.q)]
        state.fs = state.fs / self.q
        return state

