"""Training-time augmentations of processed ECG batches.

The cache (:mod:`ecg_adapt.data.cache`) stores every processed window once; an augmentation must be drawn
afresh at every epoch, so it cannot be a processor step. It runs on the *batch* instead, after the cache and
before the model: an :class:`Augmenter` holds a list of augmentation steps and the backbone's
:class:`~ecg_adapt.processing.contract.SignalContract`, and maps a batch dict (``input_values``,
``attention_mask``, anything else passed through) to an augmented one. ``augmenter.eval()`` makes it the
identity (the very same batch object is returned).

Each augmentation is a registered, serialisable step with the processors' naming (``{"name": ..., **params}``,
built by :func:`~ecg_adapt.processing.steps.step_from_dict`; the names share one registry, so they can never
collide with a preprocessing step's), a probability ``p`` of being applied to each window, and a torch
implementation on ``(batch, leads, time)``. Both layouts of the contract are handled: a ``lead_major_flat``
batch ``(B, leads*T)`` is viewed as ``(B, leads, T)``, so e.g. lead dropout blanks one lead's segment. Leading
dimensions beyond the batch (the ``(B, K, ...)`` context windows of
:class:`~ecg_adapt.data.context.ContextWindowDataset`) are flattened: every window is augmented on its own.

Rules every step follows:

- randomness comes only from the ``torch.Generator`` passed in (same generator state, same output);
- padding stays exactly zero (``attention_mask == 0`` samples are never written to), and a lead that is
  entirely zero in a window (a lead the record lacks, under ``missing_leads="zero"`` or ``"mask"``, or an empty
  context neighbour) is left untouched;
- nothing is done in place: the input tensors are not modified.

Amplitude units. After the processor the signal is no longer in millivolts: HuBERT-ECG maps each lead to
``[-1, 1]`` (min-max), ST-MEM and ECGFounder divide by a standard deviation (z-score), only ECG-JEPA keeps mV.
Additive steps therefore take their amplitude with ``units``:

- ``"mv"`` (default): millivolts *of a lead of typical amplitude*. Each lead's conversion factor to the input's
  units is estimated from the window itself as ``std(lead) / REFERENCE_LEAD_STD_MV``; the reference, 0.13 mV,
  is the median standard deviation of the 360 leads of the 30 real CinC 2021 records in
  ``../shared/ecg-samples/cinc2021`` after a 0.5-40 Hz band-pass (interquartile range 0.09-0.18 mV). The noise
  thus keeps the same size relative to the ECG whatever the normalisation. For a contract whose
  ``normalization`` is ``"none"`` and whose ``units`` are ``mV`` (ECG-JEPA) the factor is exactly 1.
- ``"input"``: the processed signal's own units (z-score units, min-max units, or mV for ECG-JEPA).

Filtering caveat: an augmentation that the contract's own filters remove never occurs at inference time.
Baseline wander below 0.5 Hz survives HuBERT-ECG's 0.05 Hz high-pass, but not ECGFounder's 0.67 Hz band-pass
plus median baseline removal; powerline noise cannot be represented at all at 100 Hz (HuBERT-ECG: 50 Hz is the
Nyquist frequency and its preprocessing low-passes at 47 Hz), which :class:`PowerlineNoise` reports as an error.
"""

from __future__ import annotations

import dataclasses
import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from ..utils import did_you_mean
from .contract import SignalContract
from .steps import _STEP_REGISTRY, SignalState, Step, register_step

REFERENCE_LEAD_STD_MV = 0.13
"""Median per-lead standard deviation (mV) of real 12-lead ECGs (30 CinC 2021 records, 0.5-40 Hz); see the module doc."""

Units = Literal["mv", "input"]


# --------------------------------------------------------------------------------------------- helpers
@dataclass(frozen=True)
class BatchContext:
    """What a step needs to know about the batch beyond its values: sampling rate and units."""

    sampling_rate: float
    millivolts: bool  # True when the processed signal is still in mV (no normalisation)


def _as_float(step: str, name: str, value: Any) -> float:
    # Recipes are YAML: PyYAML reads 1e-3 as a string, so numeric strings are accepted (as the recipe loader does).
    if isinstance(value, bool):
        raise TypeError(f"{step}.{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{step}.{name} must be a number, got {value!r}") from None


def _as_int(step: str, name: str, value: Any) -> int:
    f = _as_float(step, name, value)
    if f != int(f):
        raise ValueError(f"{step}.{name} must be an integer, got {value!r}")
    return int(f)


def _choice(step: str, name: str, value: Any, choices: Sequence[Any]) -> Any:
    if isinstance(value, str) and value.lower() in choices:  # "mV" is the field's own spelling of "mv"
        return value.lower()
    if value not in choices:
        raise ValueError(f"{step}.{name} must be one of {list(choices)}, got {value!r}{did_you_mean(value, choices)}")
    return value


def _uniform(shape: tuple[int, ...], low: float, high: float, g: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    # Drawn on the generator's device (a CPU generator cannot fill a CUDA tensor), then moved to the batch's.
    u = torch.rand(shape, generator=g, device=g.device, dtype=torch.float32)
    return (low + (high - low) * u).to(device=like.device, dtype=like.dtype)


def _normal(shape: tuple[int, ...], g: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=g, device=g.device, dtype=torch.float32).to(device=like.device, dtype=like.dtype)


def _write_mask(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor | None:
    """Where an additive step may write, as a float ``(N, L, T)`` mask: real (mask set) samples of leads that are
    not entirely zero. ``None`` when that is every sample (the usual case, which then costs no extra pass)."""
    lead_on = (x != 0).any(-1, keepdim=True)
    if bool(lead_on.all()) and bool(valid.all()):
        return None
    return (valid & lead_on).to(x.dtype)


def _lead_std(x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """Standard deviation of each lead over the samples where ``w`` is set: ``(N, L, T) -> (N, L, 1)``."""
    if w is None:
        return x.std(-1, correction=0, keepdim=True)
    n = w.sum(-1, keepdim=True).clamp_min(1.0)
    mean = (x * w).sum(-1, keepdim=True) / n
    return (((x - mean) * w) ** 2).sum(-1, keepdim=True).div(n).sqrt()


def _to_input_units(units: str, x: torch.Tensor, w: torch.Tensor | None, ctx: BatchContext) -> torch.Tensor | float:
    """Factor turning an amplitude given in ``units`` into the input's units, per lead (``(N, L, 1)`` or 1.0)."""
    if units == "input" or ctx.millivolts:
        return 1.0
    return _lead_std(x, w) / REFERENCE_LEAD_STD_MV


def _add(x: torch.Tensor, noise: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    return x + noise if w is None else x + noise * w


# --------------------------------------------------------------------------------------------- steps
@dataclass
class Augmentation(Step):
    """Base class of a training-time augmentation (a :class:`Step` that runs on batches, not records).

    Subclasses implement :meth:`augment` on the windows it was drawn for (abstract: an augmentation without it
    cannot be created). ``p`` is the probability that the
    augmentation is applied to a window (drawn independently for every window of the batch).
    """

    p: float = 0.5
    changes_mask: ClassVar[bool] = False  # True for steps that move or clear mask samples (crop, lead dropout)

    def __post_init__(self) -> None:
        self.p = _as_float(self.name, "p", self.p)
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"{self.name}.p is a probability in [0, 1], got {self.p}")

    def __call__(self, state: SignalState) -> SignalState:
        raise TypeError(
            f"{self.name!r} is a training-time augmentation, not a preprocessing step: a processor's output is cached "
            "once, so the augmentation would be frozen. Put it in an Augmenter (recipe key data.augmentations) instead."
        )

    def check_contract(self, contract: SignalContract) -> None:
        """Raise ``ValueError`` if this augmentation cannot be applied to inputs of ``contract``."""

    @abstractmethod
    def augment(
        self, x: torch.Tensor, valid: torch.Tensor, ctx: BatchContext, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment ``x`` ``(N, leads, T)`` with mask ``valid`` (bool, same shape); return new ``(x, valid)``."""


@register_step
@dataclass
class RandomCrop(Augmentation):
    """Keep a random contiguous span of the window and move it to the start; the rest becomes masked padding.

    The span length is drawn uniformly in ``[ceil(min_fraction * n), n]`` samples, where ``n`` is the window's
    real length (its padding is at the end, as the processor makes it), and its start uniformly among the
    positions where it fits. The span is shifted to ``t = 0`` and followed by zeros with ``attention_mask = 0``:
    exactly what the processor produces for a record shorter than the window, so the model learns to classify
    shorter recordings and is not tied to where in the window a beat falls. All leads of a window are cropped
    alike (the leads are simultaneous); in the flat layout each lead's segment is cropped within itself.
    """

    name: ClassVar[str] = "random_crop"
    changes_mask: ClassVar[bool] = True
    min_fraction: float = 0.8

    def __post_init__(self) -> None:
        super().__post_init__()
        self.min_fraction = _as_float(self.name, "min_fraction", self.min_fraction)
        if not 0.0 < self.min_fraction <= 1.0:
            raise ValueError(f"{self.name}.min_fraction must be in (0, 1], got {self.min_fraction}")

    def augment(
        self, x: torch.Tensor, valid: torch.Tensor, ctx: BatchContext, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See the class docstring."""
        n_win, n_leads, t_len = x.shape
        real = valid.any(1).sum(-1).clamp_min(1)  # (N,) real samples per window
        u_len, u_start = torch.rand((2, n_win), generator=generator, device=generator.device).to(x.device)
        min_len = torch.ceil(self.min_fraction * real.to(torch.float32)).long().clamp(1)
        length = min_len + (u_len * (real - min_len + 1)).long().clamp_max(real - min_len)
        start = (u_start * (real - length + 1)).long().clamp_max(real - length)
        t = torch.arange(t_len, device=x.device)
        src = (start[:, None] + t[None, :]).clamp_max(t_len - 1)
        keep = (t[None, :] < length[:, None])[:, None, :]
        idx = src[:, None, :].expand(n_win, n_leads, t_len)
        return torch.gather(x, 2, idx) * keep, torch.gather(valid, 2, idx) & keep


@register_step
@dataclass
class AmplitudeScale(Augmentation):
    """Multiply the window by a factor drawn log-uniformly in ``[min_scale, max_scale]``.

    Log-uniform makes ``0.8`` and ``1/0.8 = 1.25`` equally likely. ``per_lead=False`` (default) scales all leads
    by one factor, which keeps the relations between leads (Einthoven's ``III = II - I``, the augmented limb
    leads); ``per_lead=True`` draws one factor per lead (electrode contact, gain differences).
    """

    name: ClassVar[str] = "amplitude_scale"
    min_scale: float = 0.8
    max_scale: float = 1.25
    per_lead: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.min_scale = _as_float(self.name, "min_scale", self.min_scale)
        self.max_scale = _as_float(self.name, "max_scale", self.max_scale)
        if not 0.0 < self.min_scale <= self.max_scale:
            raise ValueError(f"{self.name}: need 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}")
        self.per_lead = bool(_choice(self.name, "per_lead", self.per_lead, (True, False)))

    def augment(
        self, x: torch.Tensor, valid: torch.Tensor, ctx: BatchContext, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See the class docstring."""
        shape = (x.shape[0], x.shape[1] if self.per_lead else 1, 1)
        log_s = _uniform(shape, math.log(self.min_scale), math.log(self.max_scale), generator, x)
        return x * log_s.exp(), valid


@register_step
@dataclass
class BaselineWander(Augmentation):
    """Add a slow baseline drift: a sum of ``n_components`` sinusoids below ``max_hz`` (respiration, movement).

    Each window draws ``n_components`` frequencies uniformly in ``[min_hz, max_hz)`` and phases in ``[0, 2π)``,
    shared by its leads (one physical cause), and for each lead and component an amplitude uniform in
    ``[0, amplitude / n_components]``, so the drift never exceeds ``amplitude`` (in ``units``, see the module
    doc). Breathing at 9-20 breaths per minute moves the baseline at 0.15-0.33 Hz, inside the default 0.05-0.5 Hz band.
    """

    name: ClassVar[str] = "baseline_wander"
    amplitude: float = 0.2
    min_hz: float = 0.05
    max_hz: float = 0.5
    n_components: int = 3
    units: Units = "mv"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.amplitude = _as_float(self.name, "amplitude", self.amplitude)
        self.min_hz = _as_float(self.name, "min_hz", self.min_hz)
        self.max_hz = _as_float(self.name, "max_hz", self.max_hz)
        self.n_components = _as_int(self.name, "n_components", self.n_components)
        self.units = _choice(self.name, "units", self.units, ("mv", "input"))
        if self.amplitude < 0:
            raise ValueError(f"{self.name}.amplitude must be >= 0, got {self.amplitude}")
        if not 0.0 <= self.min_hz < self.max_hz:
            raise ValueError(f"{self.name}: need 0 <= min_hz < max_hz, got {self.min_hz}, {self.max_hz}")
        if self.n_components < 1:
            raise ValueError(f"{self.name}.n_components must be >= 1, got {self.n_components}")

    def check_contract(self, contract: SignalContract) -> None:
        """Raise ``ValueError`` if the contract cannot carry this augmentation (see the class docstring)."""
        if self.max_hz >= contract.sampling_rate / 2:
            raise ValueError(f"{self.name}.max_hz {self.max_hz} Hz is not below the Nyquist frequency of "
                             f"{contract.sampling_rate:g} Hz input")

    def augment(
        self, x: torch.Tensor, valid: torch.Tensor, ctx: BatchContext, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See the class docstring."""
        n_win, n_leads, t_len = x.shape
        c = self.n_components
        freq = _uniform((n_win, c, 1), self.min_hz, self.max_hz, generator, x)
        phase = _uniform((n_win, c, 1), 0.0, 2 * math.pi, generator, x)
        amp = _uniform((n_win, n_leads, c), 0.0, self.amplitude / c, generator, x)
        t = torch.arange(t_len, device=x.device, dtype=x.dtype) / ctx.sampling_rate
        waves = torch.sin(2 * math.pi * freq * t + phase)  # (N, C, T)
        w = _write_mask(x, valid)
        return _add(x, torch.bmm(amp, waves) * _to_input_units(self.units, x, w, ctx), w), valid


@register_step
@dataclass
class GaussianNoise(Augmentation):
    """Add white Gaussian noise at a signal-to-noise ratio drawn uniformly in ``[min_snr_db, max_snr_db]``.

    The SNR is per lead: noise std = ``std(lead) * 10 ** (-snr / 20)`` over the lead's real samples (one SNR per
    window). With ``std`` set, the noise has that fixed standard deviation (in ``units``) instead.
    """

    name: ClassVar[str] = "gaussian_noise"
    min_snr_db: float = 20.0
    max_snr_db: float = 40.0
    std: float | None = None
    units: Units = "mv"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.min_snr_db = _as_float(self.name, "min_snr_db", self.min_snr_db)
        self.max_snr_db = _as_float(self.name, "max_snr_db", self.max_snr_db)
        if self.min_snr_db > self.max_snr_db:
            raise ValueError(f"{self.name}: min_snr_db {self.min_snr_db} > max_snr_db {self.max_snr_db}")
        if self.std is not None:
            self.std = _as_float(self.name, "std", self.std)
            if self.std < 0:
                raise ValueError(f"{self.name}.std must be >= 0, got {self.std}")
        self.units = _choice(self.name, "units", self.units, ("mv", "input"))

    def augment(
        self, x: torch.Tensor, valid: torch.Tensor, ctx: BatchContext, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See the class docstring."""
        w = _write_mask(x, valid)
        if self.std is None:
            snr = _uniform((x.shape[0], 1, 1), self.min_snr_db, self.max_snr_db, generator, x)
            sigma = _lead_std(x, w) * torch.pow(10.0, -snr / 20)
        else:
            sigma = self.std * _to_input_units(self.units, x, w, ctx)
        return _add(x, _normal(tuple(x.shape), generator, x) * sigma, w), valid


@register_step
@dataclass
class PowerlineNoise(Augmentation):
    """Add mains interference: ``frequency_hz`` (50 or 60; ``None`` draws one of them per window) and harmonics.

    Harmonic ``k`` (``k = 1 .. harmonics``) has amplitude ``a / k`` and its own phase; ``a`` is drawn per lead
    uniformly in ``[0, amplitude]`` (in ``units``). The mains frequency is jittered by up to
    ``± frequency_jitter_hz`` per window (grids hold it within a few tenths of a hertz). Harmonics at or above
    the Nyquist frequency of the contract's sampling rate are left out (the original preprocessing's
    anti-aliasing removes them); a contract that cannot represent the fundamental at all (100 Hz input) is an
    error, because such noise never reaches that model.
    """

    name: ClassVar[str] = "powerline_noise"
    amplitude: float = 0.05
    frequency_hz: float | None = None
    harmonics: int = 3
    frequency_jitter_hz: float = 0.2
    units: Units = "mv"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.amplitude = _as_float(self.name, "amplitude", self.amplitude)
        if self.amplitude < 0:
            raise ValueError(f"{self.name}.amplitude must be >= 0, got {self.amplitude}")
        if self.frequency_hz is not None:
            self.frequency_hz = _as_float(self.name, "frequency_hz", self.frequency_hz)
            if self.frequency_hz <= 0:
                raise ValueError(f"{self.name}.frequency_hz must be positive (50 or 60), got {self.frequency_hz}")
        self.harmonics = _as_int(self.name, "harmonics", self.harmonics)
        if self.harmonics < 1:
            raise ValueError(f"{self.name}.harmonics must be >= 1, got {self.harmonics}")
        self.frequency_jitter_hz = abs(_as_float(self.name, "frequency_jitter_hz", self.frequency_jitter_hz))
        self.units = _choice(self.name, "units", self.units, ("mv", "input"))

    def _base_frequencies(self) -> tuple[float, ...]:
        return (50.0, 60.0) if self.frequency_hz is None else (self.frequency_hz,)

    def check_contract(self, contract: SignalContract) -> None:
        """Raise ``ValueError`` if the contract cannot carry this augmentation (see the class docstring)."""
        nyquist = contract.sampling_rate / 2
        bad = [f for f in self._base_frequencies() if f + self.frequency_jitter_hz >= nyquist]
        if bad:
            raise ValueError(
                f"{self.name}: {bad} Hz mains cannot be represented in {contract.sampling_rate:g} Hz input (Nyquist "
                f"{nyquist:g} Hz); the model's preprocessing removes it, so remove this augmentation"
                + ("" if self.frequency_hz is not None else " or set frequency_hz to a frequency below Nyquist")
            )

    def augment(
        self, x: torch.Tensor, valid: torch.Tensor, ctx: BatchContext, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See the class docstring."""
        n_win, n_leads, t_len = x.shape
        bases = torch.tensor(self._base_frequencies(), dtype=x.dtype, device=x.device)
        pick = (_uniform((n_win,), 0.0, float(len(bases)), generator, x).long()).clamp_max(len(bases) - 1)
        f0 = bases[pick] + _uniform((n_win,), -self.frequency_jitter_hz, self.frequency_jitter_hz, generator, x)
        k = torch.arange(1, self.harmonics + 1, device=x.device, dtype=x.dtype)
        freq = f0[:, None] * k[None, :]  # (N, H)
        weight = (1.0 / k)[None, :] * (freq < ctx.sampling_rate / 2)  # harmonics past Nyquist are left out
        phase = _uniform((n_win, self.harmonics), 0.0, 2 * math.pi, generator, x)
        t = torch.arange(t_len, device=x.device, dtype=x.dtype) / ctx.sampling_rate
        wave = (weight[..., None] * torch.sin(2 * math.pi * freq[..., None] * t + phase[..., None])).sum(1, keepdim=True)
        w = _write_mask(x, valid)
        amp = _uniform((n_win, n_leads, 1), 0.0, self.amplitude, generator, x) * _to_input_units(self.units, x, w, ctx)
        return _add(x, amp * wave, w), valid


@register_step
@dataclass
class LeadDropout(Augmentation):
    """Zero whole leads: each present lead of a window is dropped with probability ``rate``.

    At least ``min_leads`` present leads are always kept (never all of them): when the draw drops too many,
    randomly chosen dropped leads are restored. Leads already absent (entirely zero) do not count as present.
    With ``mask_dropped=True`` (default) the dropped lead's ``attention_mask`` is cleared too, which is what the
    processor's ``missing_leads="mask"`` produces (HuBERT-ECG, ST-MEM and ECG-JEPA then ignore the lead exactly);
    ``False`` keeps the mask, like ``missing_leads="zero"``. In the flat layout the lead's segment is blanked.
    """

    name: ClassVar[str] = "lead_dropout"
    changes_mask: ClassVar[bool] = True
    rate: float = 0.25
    min_leads: int = 1
    mask_dropped: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.rate = _as_float(self.name, "rate", self.rate)
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"{self.name}.rate is a probability in [0, 1], got {self.rate}")
        self.min_leads = _as_int(self.name, "min_leads", self.min_leads)
        if self.min_leads < 1:
            raise ValueError(f"{self.name}.min_leads must be >= 1 (never drop every lead), got {self.min_leads}")
        self.mask_dropped = bool(_choice(self.name, "mask_dropped", self.mask_dropped, (True, False)))

    def check_contract(self, contract: SignalContract) -> None:
        """Raise ``ValueError`` if the contract cannot carry this augmentation (see the class docstring)."""
        if contract.n_leads <= self.min_leads:
            raise ValueError(f"{self.name}: the contract has {contract.n_leads} lead(s) and min_leads={self.min_leads}, "
                             "so no lead could ever be dropped; remove this augmentation")

    def augment(
        self, x: torch.Tensor, valid: torch.Tensor, ctx: BatchContext, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See the class docstring."""
        n_win, n_leads, _ = x.shape
        present = ((x != 0) & valid).any(-1)  # (N, L): leads with real, non-zero samples
        u = torch.rand((2, n_win, n_leads), generator=generator, device=generator.device).to(x.device)
        drop = (u[0] < self.rate) & present
        # Restore the dropped leads with the highest priority u[1] until min_leads (or all present) are kept.
        need = (present.sum(1).clamp_max(self.min_leads) - (present & ~drop).sum(1)).clamp_min(0)
        priority = torch.where(drop, u[1], torch.full_like(u[1], -1.0))
        rank = priority.argsort(dim=1, descending=True).argsort(dim=1)
        drop &= ~(rank < need[:, None])
        keep = ~drop[..., None]
        return x * keep, (valid & keep) if self.mask_dropped else valid


AUGMENTATIONS: tuple[type[Augmentation], ...] = (
    RandomCrop, AmplitudeScale, BaselineWander, GaussianNoise, PowerlineNoise, LeadDropout,
)


def augmentation_names() -> list[str]:
    """Names of every registered augmentation step (including ones registered outside this module)."""
    return sorted(n for n, cls in _STEP_REGISTRY.items() if issubclass(cls, Augmentation))


def augmentation_from_dict(d: Mapping[str, Any] | Augmentation, where: str = "augmentation") -> Augmentation:
    """Build one augmentation from ``{"name": ..., **params}``, with did-you-mean errors.

    Raises:
        ValueError: unknown or missing name (a preprocessing step's name says so), unknown parameter, bad value.
    """
    if isinstance(d, Augmentation):
        return d
    if not isinstance(d, Mapping):
        raise TypeError(f"{where}: expected a mapping like {{'name': 'gaussian_noise', 'p': 0.5}}, got {d!r}")
    params = dict(d)
    name = params.pop("name", None)
    known = augmentation_names()
    if name is None:
        raise ValueError(f"{where}: missing 'name'; known augmentations: {known}")
    cls = _STEP_REGISTRY.get(name)
    if cls is None or not issubclass(cls, Augmentation):
        if cls is not None:
            raise ValueError(f"{where}: {name!r} is a preprocessing step (it belongs in the processor), not an "
                             f"augmentation; known augmentations: {known}")
        raise ValueError(f"{where}: unknown augmentation {name!r}{did_you_mean(name, known)}; known augmentations: {known}")
    fields = [f.name for f in dataclasses.fields(cls)]
    for key in params:
        if key not in fields:
            raise ValueError(f"{where} ({name!r}): unknown parameter {key!r}{did_you_mean(key, fields)}; "
                             f"parameters of {name!r}: {fields}")
    try:
        return cls(**params)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where}: {e}") from None


def batch_generator(seed: int, epoch: int, step: int, rank: int = 0, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator seeded from ``(seed, epoch, step, rank)`` only (numpy ``SeedSequence`` mixing).

    Seeding each batch from its position, rather than carrying one generator along, makes augmentation
    reproducible across resumes (a run resumed at step ``s`` draws what the uninterrupted run drew) and distinct
    across ranks, with no generator state to checkpoint.
    """
    state = np.random.SeedSequence([int(seed), int(epoch), int(step), int(rank)]).generate_state(2, np.uint32)
    g = torch.Generator(device=device)
    g.manual_seed((int(state[0]) << 32) | int(state[1]))
    return g


class Augmenter:
    """Applies a list of augmentations to training batches; the identity in eval mode.

    Args:
        steps: augmentation steps, as objects or their dicts (``{"name": ..., **params}``), applied in order.
        contract: the backbone's :class:`SignalContract` (or its dict): layout, leads and sampling rate.

    Defaults (``p`` is the probability per window; amplitudes in ``units``, ``"mv"`` unless said otherwise):

    ===================  ====  ==================================================================================
    name                 p     parameters (defaults)
    ===================  ====  ==================================================================================
    ``random_crop``      0.5   ``min_fraction=0.8``
    ``amplitude_scale``  0.5   ``min_scale=0.8``, ``max_scale=1.25``, ``per_lead=False``
    ``baseline_wander``  0.5   ``amplitude=0.2``, ``min_hz=0.05``, ``max_hz=0.5``, ``n_components=3``, ``units="mv"``
    ``gaussian_noise``   0.5   ``min_snr_db=20.0``, ``max_snr_db=40.0``, ``std=None``, ``units="mv"``
    ``powerline_noise``  0.5   ``amplitude=0.05``, ``frequency_hz=None``, ``harmonics=3``, ``frequency_jitter_hz=0.2``,
                               ``units="mv"``
    ``lead_dropout``     0.5   ``rate=0.25``, ``min_leads=1``, ``mask_dropped=True``
    ===================  ====  ==================================================================================

    Example:
        >>> from ecg_adapt.processing import SignalContract
        >>> contract = SignalContract(leads=("I", "II"), sampling_rate=250, window_samples=500)
        >>> aug = Augmenter.from_config([{"name": "gaussian_noise", "p": 1.0}, {"name": "lead_dropout"}], contract)
        >>> batch = {"input_values": torch.randn(4, 2, 500), "attention_mask": torch.ones(4, 2, 500, dtype=torch.long)}
        >>> out = aug(batch, torch.Generator().manual_seed(0))
        >>> bool((out["input_values"] != batch["input_values"]).any()), aug.eval()(batch, None) is batch
        (True, True)
    """

    def __init__(self, steps: Sequence[Mapping[str, Any] | Augmentation], contract: SignalContract | Mapping[str, Any]) -> None:
        self.contract = SignalContract.from_dict(dict(contract) if isinstance(contract, Mapping) else contract)
        self.steps: list[Augmentation] = [augmentation_from_dict(s, f"augmentation {i}") for i, s in enumerate(steps)]
        for i, step in enumerate(self.steps):
            try:
                step.check_contract(self.contract)
            except ValueError as e:
                raise ValueError(f"augmentation {i}: {e}") from None
        unit, norm = self.contract.units.strip().lower(), self.contract.normalization.strip().lower()
        self._ctx = BatchContext(
            sampling_rate=float(self.contract.sampling_rate),
            millivolts=unit == "mv" and (norm == "" or norm.split(":")[0].strip() == "none"),
        )
        self.training = True

    # ------------------------------------------------------------------ mode
    def train(self, mode: bool = True) -> Augmenter:
        """Switch augmentation on (``mode=True``) or off; returns ``self`` like ``nn.Module.train``."""
        self.training = bool(mode)
        return self

    def eval(self) -> Augmenter:
        """Switch augmentation off: ``__call__`` returns its batch unchanged."""
        return self.train(False)

    # ------------------------------------------------------------------ serialisation
    @classmethod
    def from_config(cls, config: Sequence[Mapping[str, Any]] | None, contract: SignalContract | Mapping[str, Any]) -> Augmenter:
        """Build from a recipe's list of ``{"name": ..., **params}`` (``None`` or ``[]``: no augmentation)."""
        if config is None:
            config = []
        if isinstance(config, (str, bytes, Mapping)) or not isinstance(config, Sequence):
            raise TypeError(f"augmentations must be a list of {{'name': ..., **params}} mappings, got {config!r}")
        return cls(list(config), contract)

    def config(self) -> list[dict[str, Any]]:
        """The steps as a recipe list (``from_config`` reads it back)."""
        return [s.to_dict() for s in self.steps]

    def to_dict(self) -> dict[str, Any]:
        """``{"signal_contract": ..., "steps": [...]}`` (JSON-able)."""
        return {"signal_contract": self.contract.to_dict(), "steps": self.config()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Augmenter:
        """Inverse of :meth:`to_dict`."""
        missing = {"signal_contract", "steps"} - set(d)
        if missing:
            raise ValueError(f"Augmenter.from_dict: missing keys {sorted(missing)} (have {sorted(d)})")
        return cls(d["steps"], d["signal_contract"])

    def __repr__(self) -> str:
        steps = ", ".join(f"{s.name}(p={s.p:g})" for s in self.steps)
        return f"Augmenter([{steps}], {'train' if self.training else 'eval'})"

    # ------------------------------------------------------------------ apply
    def __call__(self, batch: dict[str, Any], generator: torch.Generator | None) -> dict[str, Any]:
        """Augment ``batch`` (a new dict; other keys passed through). In eval mode, ``batch`` itself is returned.

        ``input_values`` must have shape ``(..., *contract.input_shape)``; ``attention_mask`` (optional, added to
        the output when absent) the same shape. ``generator`` is required in train mode (see
        :func:`batch_generator`); a generator on the batch's device avoids a host-to-device copy of the noise.
        """
        if not self.training or not self.steps:
            return batch
        if generator is None:
            raise ValueError("Augmenter in train mode needs a torch.Generator (e.g. batch_generator(seed, epoch, step, rank))")
        if "input_values" not in batch:
            raise ValueError(f"Augmenter: the batch has no 'input_values' (keys: {sorted(batch)})")
        x_in = batch["input_values"]
        shape = tuple(self.contract.input_shape)
        if tuple(x_in.shape[x_in.ndim - len(shape):]) != shape or x_in.ndim <= len(shape):
            raise ValueError(f"Augmenter: input_values of shape {tuple(x_in.shape)} do not end with the contract's input shape "
                             f"{shape} ({self.contract.layout}); expected (batch, *{shape})")
        m_in = batch.get("attention_mask")
        if m_in is not None and m_in.shape != x_in.shape:
            raise ValueError(f"Augmenter: attention_mask shape {tuple(m_in.shape)} differs from input_values {tuple(x_in.shape)}")
        n_leads, t_len = self.contract.n_leads, self.contract.window_samples
        with torch.no_grad():
            # (…, leads*T) and (…, leads, T) are both viewed as (N, leads, T): lead i is x[:, i] in either layout.
            x = x_in.reshape(-1, n_leads, t_len)
            valid = m_in.reshape(-1, n_leads, t_len) != 0 if m_in is not None else torch.ones_like(x, dtype=torch.bool)
            valid_in, owned = valid, False  # steps return new tensors; x is copied only before a partial in-place write
            for step in self.steps:
                chosen = torch.rand(x.shape[0], generator=generator, device=generator.device).to(x.device) < step.p
                idx = chosen.nonzero().squeeze(1)
                if idx.numel() == 0:
                    continue
                if idx.numel() == x.shape[0]:
                    x, valid = step.augment(x, valid, self._ctx, generator)
                    owned = True
                else:
                    xs, vs = step.augment(x[idx], valid[idx], self._ctx, generator)
                    if not owned:
                        x, owned = x.clone(), True
                    x[idx] = xs
                    if step.changes_mask:
                        if valid is valid_in:
                            valid = valid.clone()
                        valid[idx] = vs
        out = dict(batch)
        out["input_values"] = x.reshape(x_in.shape) if owned else x_in
        if m_in is not None and (valid is valid_in or torch.equal(valid, valid_in)):
            out["attention_mask"] = m_in  # unchanged (no crop or lead dropout happened): no conversion
        else:
            out["attention_mask"] = valid.reshape(x_in.shape).to(m_in.dtype if m_in is not None else torch.long)
        return out


__all__ = [
    "AUGMENTATIONS",
    "REFERENCE_LEAD_STD_MV",
    "AmplitudeScale",
    "Augmentation",
    "Augmenter",
    "BaselineWander",
    "GaussianNoise",
    "LeadDropout",
    "PowerlineNoise",
    "RandomCrop",
    "augmentation_from_dict",
    "augmentation_names",
    "batch_generator",
]
