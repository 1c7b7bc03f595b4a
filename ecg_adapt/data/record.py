"""One ECG recording in memory, and reading it from WFDB files with errors that say what is wrong."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import wfdb

# Bytes per sample of the WFDB formats whose size we can check against the header.
_BYTES_PER_SAMPLE = {"8": 1.0, "16": 2.0, "61": 2.0, "80": 1.0, "160": 2.0, "212": 1.5, "310": 4 / 3, "311": 4 / 3, "24": 3.0, "32": 4.0}


class RecordError(ValueError):
    """A record that cannot be used. ``reason`` is a short code for summaries (``missing_file``,
    ``corrupt_header``, ``truncated``, ``length_mismatch``, ``unreadable``, ``bad_signal``)."""

    def __init__(self, record: str, reason: str, detail: str) -> None:
        super().__init__(f"{record}: {reason}: {detail}")
        self.record = record
        self.reason = reason
        self.detail = detail


@dataclass
class ECGRecord:
    """A recording: ``signal`` is ``(leads, time)`` in physical units (mV), leads named in ``lead_names``.

    Example:
        >>> rec = ECGRecord(np.zeros((2, 1000)), 500.0, ["I", "II"], record_id="x")
        >>> rec.seconds
        2.0
    """

    signal: np.ndarray
    sampling_rate: float
    lead_names: list[str]
    record_id: str | None = None
    units: list[str] | None = None
    comments: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.signal = np.asarray(self.signal)
        if self.signal.ndim != 2 or self.signal.shape[0] != len(self.lead_names):
            raise ValueError(
                f"ECGRecord {self.record_id!r}: signal shape {self.signal.shape} does not match "
                f"{len(self.lead_names)} lead names (expected (leads, time))"
            )

    @property
    def seconds(self) -> float:
        return self.signal.shape[1] / self.sampling_rate


def mv_scale(unit: str) -> float | None:
    """Factor from a voltage unit to mV (``uV``/``µV`` 1e-3, ``mV`` 1, ``V`` 1e3), ``None`` when it is not one."""
    u = unit.strip().replace("\u00b5", "u").replace("\u03bc", "u").lower()
    return {"uv": 1e-3, "microvolt": 1e-3, "mv": 1.0, "v": 1e3}.get(u)


def _units_to_mv(units: list[str] | None, signal: np.ndarray) -> np.ndarray:
    """Scale leads recorded in µV/V to mV (WFDB headers may say 'mV', 'mv', 'uV' ...); a lead whose unit is
    missing or not a voltage is kept as it is."""
    if not units:
        return signal
    scale = np.array([mv_scale(u or "") or 1.0 for u in units])
    return signal * scale[:, None]


def find_channel(labels: Sequence[str], names: Sequence[str]) -> int | None:
    """Index of the first of ``labels`` equal to one of ``names`` (case-insensitive, blanks stripped), trying
    ``names`` in order (a PSG's ECG is found by its label, e.g. ``["ECG", "EKG"]``); ``None`` when none is there."""
    lowered = [label.strip().lower() for label in labels]
    for name in names:
        if name.strip().lower() in lowered:
            return lowered.index(name.strip().lower())
    return None


def read_wfdb_header(path: str | os.PathLike, record_id: str | None = None) -> wfdb.Record:
    """The parsed header of a WFDB record (``path`` without extension).

    Raises:
        RecordError: ``missing_file`` (no ``.hea``) or ``corrupt_header``.
    """
    path = Path(path)
    rid = record_id or path.name
    hea = path.with_name(path.name + ".hea")
    if not hea.exists():
        raise RecordError(rid, "missing_file", f"no header {hea}")
    try:
        return wfdb.rdheader(str(path))
    except Exception as e:  # wfdb raises many types for malformed headers
        raise RecordError(rid, "corrupt_header", f"{type(e).__name__}: {e}") from e


def read_wfdb_channel(path: str | os.PathLike, index: int, record_id: str | None = None) -> np.ndarray:
    """Signal ``index`` of a WFDB record, alone (the others are not read), as float64 in mV.

    Raises:
        RecordError: ``missing_file``, ``unreadable`` (a short or corrupt signal file) or ``bad_signal`` (its
            unit is not uV, mV or V).
    """
    path = Path(path)
    rid = record_id or path.name
    try:
        rec = wfdb.rdrecord(str(path), channels=[index])
    except FileNotFoundError as e:
        raise RecordError(rid, "missing_file", str(e)) from e
    except Exception as e:  # wfdb raises ValueError etc. for a short or corrupt .dat
        raise RecordError(rid, "unreadable", f"{type(e).__name__}: {e}") from e
    scale = mv_scale(rec.units[0] if rec.units else "mV")
    if scale is None:
        raise RecordError(rid, "bad_signal", f"{path.name}: ECG unit {rec.units[0]!r} is not uV, mV or V")
    return rec.p_signal[:, 0].astype(np.float64) * scale


def read_wfdb(path: str | os.PathLike, record_id: str | None = None) -> ECGRecord:
    """Read a WFDB record (``path`` without extension) into an :class:`ECGRecord` in mV.

    Checks that the header and signal files exist, that the header parses, and that the signal file holds as
    many samples as the header says (for formats whose size is known). Raises :class:`RecordError`.
    """
    path = Path(path)
    rid = record_id or path.name
    hea = path.with_name(path.name + ".hea")
    if not hea.exists():
        raise RecordError(rid, "missing_file", f"no header {hea}")
    # The header is parsed once, by rdrecord: wfdb 4.3's header parser costs about 8 ms of CPU for a 12-lead
    # header here (a pandas lookup per field), more than reading a 10 s signal, and parsing it a second time
    # beforehand nearly doubled the cost of every short record. Only a record that fails to read is diagnosed
    # from its header alone.
    try:
        rec = wfdb.rdrecord(str(path))
    except Exception as e:
        try:
            header = wfdb.rdheader(str(path))
        except Exception as e2:  # wfdb raises many types for malformed headers
            raise RecordError(rid, "corrupt_header", f"{type(e2).__name__}: {e2}") from e2
        _check_header(rid, path, header)
        raise RecordError(rid, "unreadable", f"{type(e).__name__}: {e}") from e
    _check_header(rid, path, rec)
    if rec.p_signal is None:
        raise RecordError(rid, "bad_signal", "no physical signal")
    signal = _units_to_mv(rec.units, rec.p_signal.T.astype(np.float64))
    return ECGRecord(
        signal=signal,
        sampling_rate=float(rec.fs),
        lead_names=list(rec.sig_name),
        record_id=rid,
        units=["mV"] * len(rec.sig_name),
        comments=list(rec.comments or []),
    )


def _check_header(rid: str, path: Path, header: wfdb.Record) -> None:
    """Raise :class:`RecordError` when the header lists no signal, a signal file is missing, or is shorter
    (``truncated``) or longer (``length_mismatch``) than the header declares (for single-file records in a
    format of known size: PTB-XL, MIT-BIH, CinC)."""
    if not header.file_name or header.sig_len is None or not header.n_sig:
        raise RecordError(rid, "corrupt_header", "header lists no signals or no length")
    for fname in sorted(set(header.file_name)):
        data = path.parent / fname
        if not data.exists():
            raise RecordError(rid, "missing_file", f"no signal file {data}")
    if len(set(header.file_name)) == 1 and len(set(header.fmt)) == 1 and header.fmt[0] in _BYTES_PER_SAMPLE:
        data = path.parent / header.file_name[0]
        offset = (header.byte_offset or [0])[0] or 0
        expected = header.sig_len * header.n_sig * _BYTES_PER_SAMPLE[header.fmt[0]] + offset
        actual = data.stat().st_size
        if actual + 2 < expected:  # format 212 rounds to whole bytes
            raise RecordError(
                rid, "truncated", f"{data.name} has {actual} bytes but the header promises {int(expected)} "
                f"({header.sig_len} samples x {header.n_sig} signals, format {header.fmt[0]})"
            )
        if actual > expected + 2:
            # wfdb reads only the header's sig_len samples: the rest of the file would be dropped unseen.
            held = int((actual - offset) / (header.n_sig * _BYTES_PER_SAMPLE[header.fmt[0]]))
            raise RecordError(
                rid, "length_mismatch", f"{data.name} holds {held} samples x {header.n_sig} signals ({actual} bytes) "
                f"but the header declares {header.sig_len} samples; reading it would cut the signal silently. "
                "Fix the header's length (or the file)"
            )
