"""The signal contract: what a backbone expects to be fed.

Every backbone config carries one (``config.signal_contract``), and every processor carries a copy that must
agree with it. Getting any of these fields wrong (lead order, sampling rate, window length, normalisation)
silently ruins a pretrained ECG model, so they are written down once, typed, and checked.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

STANDARD_12_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

Layout = Literal["channels_first", "lead_major_flat"]
_LAYOUTS = ("channels_first", "lead_major_flat")


@dataclass(frozen=True)
class SignalContract:
    """A typed description of the input a backbone was pretrained on.

    Attributes:
        leads: lead names in the order the model expects them (canonical spelling, e.g. ``aVR``).
        sampling_rate: samples per second of the model input, in Hz.
        window_samples: samples per lead in one model input window (at ``sampling_rate``).
        layout: ``"channels_first"`` for ``(batch, leads, time)`` input, or ``"lead_major_flat"`` for
            ``(batch, leads * time)`` where lead ``i`` occupies ``[i*T, (i+1)*T)`` (HuBERT-ECG).
        units: physical units expected before normalisation (``"mV"``).
        filtering: human-readable description of the filters of the original preprocessing.
        normalization: human-readable description of the amplitude normalisation.
        source: where the contract was read from (repository, commit, file).

    Example:
        >>> c = SignalContract(leads=("I", "II"), sampling_rate=250, window_samples=2250, layout="channels_first")
        >>> c.window_seconds, c.input_shape
        (9.0, (2, 2250))
    """

    leads: tuple[str, ...]
    sampling_rate: float
    window_samples: int
    layout: Layout = "channels_first"
    units: str = "mV"
    filtering: str = "none"
    normalization: str = "none"
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "leads", tuple(self.leads))
        if not self.leads:
            raise ValueError("SignalContract.leads must name at least one lead")
        if len(set(self.leads)) != len(self.leads):
            raise ValueError(f"SignalContract.leads has duplicates: {self.leads}")
        if self.sampling_rate <= 0:
            raise ValueError(f"SignalContract.sampling_rate must be positive, got {self.sampling_rate}")
        if int(self.window_samples) != self.window_samples or self.window_samples <= 0:
            raise ValueError(f"SignalContract.window_samples must be a positive integer, got {self.window_samples}")
        object.__setattr__(self, "window_samples", int(self.window_samples))
        if self.layout not in _LAYOUTS:
            raise ValueError(f"SignalContract.layout must be one of {_LAYOUTS}, got {self.layout!r}")

    @property
    def n_leads(self) -> int:
        return len(self.leads)

    @property
    def window_seconds(self) -> float:
        return self.window_samples / self.sampling_rate

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one model input (without the batch dimension)."""
        if self.layout == "lead_major_flat":
            return (self.n_leads * self.window_samples,)
        return (self.n_leads, self.window_samples)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["leads"] = list(self.leads)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | SignalContract) -> SignalContract:
        if isinstance(d, SignalContract):
            return d
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"Unknown SignalContract fields {sorted(unknown)}; known fields: {sorted(known)}")
        return cls(**d)

    def describe(self) -> str:
        """One paragraph a user can paste into a model card."""
        shape = "x".join(str(s) for s in self.input_shape)
        return (
            f"{self.n_leads} leads ({', '.join(self.leads)}) at {self.sampling_rate:g} Hz, "
            f"{self.window_seconds:g} s windows ({self.window_samples} samples per lead), layout {self.layout} "
            f"(input {shape} per window), units {self.units}; filtering: {self.filtering}; "
            f"normalisation: {self.normalization}."
        )
