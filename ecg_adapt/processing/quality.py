"""Signal quality checks that decide whether a training record is used: flat leads and all-zero records.

A lead that never moves (a disconnected electrode, a zero-filled channel) carries no signal, yet the record
keeps its diagnostic labels: training on it teaches the model that the label comes with a flat line. The
processor only *reports* flat leads (``ProcessingReport.flat_leads``), since at prediction time the caller
decides; the cache builder applies :class:`QualityThresholds` and skips failing records with a reason
(``flat_signal``: every lead flat, e.g. an all-zero record; ``flat_leads``: more flat leads than allowed), listed
in ``report.json`` like every other skipped record. The recipe sets the thresholds in ``data.quality``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass
class QualityThresholds:
    """When a record is too poor to train on (``data.quality`` in a recipe).

    Attributes:
        flat_lead_max_ptp_mv: a lead whose peak-to-peak amplitude (NaN ignored) is at most this many mV is
            flat. ``0.0`` counts only exactly constant leads (the processor's notion of a flat lead).
        max_flat_leads: a record with more flat leads than this is skipped (reason ``flat_leads``); ``null``
            disables the check (every record is kept, flat leads are only counted in ``processing_notes``).
            A record whose every lead is flat is skipped as ``flat_signal`` unless the check is disabled.
    """

    flat_lead_max_ptp_mv: float = 0.0
    max_flat_leads: int | None = 0

    def __post_init__(self) -> None:
        if not np.isfinite(self.flat_lead_max_ptp_mv) or self.flat_lead_max_ptp_mv < 0:
            raise ValueError(f"flat_lead_max_ptp_mv must be >= 0 mV, got {self.flat_lead_max_ptp_mv!r}")
        if self.max_flat_leads is not None and self.max_flat_leads < 0:
            raise ValueError(f"max_flat_leads must be >= 0 (or null to disable), got {self.max_flat_leads!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat_leads(self, signal: np.ndarray, lead_names: Sequence[str]) -> list[str]:
        """Names of the flat leads of a ``(leads, time)`` signal (a lead that is entirely NaN is not judged here:
        the processor treats it as missing)."""
        out = []
        for name, lead in zip(lead_names, np.asarray(signal, dtype=np.float64)):
            finite = lead[np.isfinite(lead)]
            if finite.size and float(np.ptp(finite)) <= self.flat_lead_max_ptp_mv:
                out.append(str(name))
        return out

    def check(self, signal: np.ndarray, lead_names: Sequence[str]) -> tuple[str, str] | None:
        """``(reason, detail)`` when the record should be skipped, else ``None``."""
        if self.max_flat_leads is None:
            return None
        judged = [i for i, lead in enumerate(np.asarray(signal, dtype=np.float64)) if np.isfinite(lead).any()]
        if not judged:
            return None
        names = [str(lead_names[i]) for i in judged]
        flat = self.flat_leads(np.asarray(signal)[judged], names)
        limit = f"peak-to-peak <= {self.flat_lead_max_ptp_mv:g} mV"
        if len(flat) == len(names):
            return "flat_signal", f"every lead is flat ({limit}), e.g. an all-zero record"
        if len(flat) > self.max_flat_leads:
            return "flat_leads", (f"{len(flat)} flat lead(s) {flat} ({limit}), more than data.quality.max_flat_leads="
                                  f"{self.max_flat_leads}")
        return None


__all__ = ["QualityThresholds"]
