"""Lead names: canonical spelling and the mapping of a record's leads onto a contract's leads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

MissingLeads = Literal["error", "zero", "mask"]

# Canonical spelling of the standard leads, keyed by their lower-case form. Files spell them as
# "AVR" (PTB-XL), "avr" (PTB), "aVR" (CinC 2021): all are the same lead.
_CANONICAL = {name.lower(): name for name in ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")}

# Names that are not spelled like a standard lead but are recorded with (almost) the same electrode
# placement. Using them is an approximation, so every use is reported.
APPROXIMATE_ALIASES = {
    "mlii": "II",  # MIT-BIH "modified lead II" (Mason-Likar torso placement)
    "mli": "I",
    "mliii": "III",
}


def canonical_lead_name(name: str) -> str:
    """Return the canonical spelling of a lead name (``'AVR'`` → ``'aVR'``); unknown names are stripped only.

    Example:
        >>> canonical_lead_name("avf"), canonical_lead_name(" V5 ")
        ('aVF', 'V5')
    """
    key = name.strip().lower()
    return _CANONICAL.get(key, name.strip())


@dataclass
class LeadMapping:
    """How the leads of one record were mapped onto a contract.

    ``source_index[i]`` is the row of the record that feeds contract lead ``i`` (``None`` when missing).
    """

    contract_leads: tuple[str, ...]
    record_leads: tuple[str, ...]
    source_index: list[int | None]
    missing: list[str] = field(default_factory=list)
    approximations: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def reordered(self) -> bool:
        present = [i for i in self.source_index if i is not None]
        return present != sorted(present) or len(present) != len(self.record_leads)


def map_leads(record_leads: Sequence[str], contract_leads: Sequence[str]) -> LeadMapping:
    """Match record lead names to contract lead names, case-insensitively.

    Exact (case-insensitive) matches win over approximate aliases such as ``MLII`` → ``II``.

    Raises:
        ValueError: if two record leads map to the same contract lead.
    """
    canon_record = [canonical_lead_name(n) for n in record_leads]
    lookup: dict[str, int] = {}
    for i, name in enumerate(canon_record):
        key = name.lower()
        if key in lookup:
            raise ValueError(f"Record has two leads named {name!r} (positions {lookup[key]} and {i}): {list(record_leads)}")
        lookup[key] = i
    approx: dict[str, tuple[int, str]] = {}
    for i, name in enumerate(canon_record):
        target = APPROXIMATE_ALIASES.get(name.lower())
        if target is not None and target.lower() not in lookup:
            approx.setdefault(target.lower(), (i, name))

    source: list[int | None] = []
    missing: list[str] = []
    approximations: list[str] = []
    used: set[int] = set()
    for lead in contract_leads:
        key = canonical_lead_name(lead).lower()
        if key in lookup:
            source.append(lookup[key])
            used.add(lookup[key])
        elif key in approx:
            idx, name = approx[key]
            source.append(idx)
            used.add(idx)
            approximations.append(f"{name} used as {lead}")
        else:
            source.append(None)
            missing.append(lead)
    ignored = [record_leads[i] for i in range(len(record_leads)) if i not in used]
    return LeadMapping(
        contract_leads=tuple(contract_leads),
        record_leads=tuple(record_leads),
        source_index=source,
        missing=missing,
        approximations=approximations,
        ignored=ignored,
    )
