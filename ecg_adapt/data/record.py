"""One ECG recording in memory, and reading it from WFDB files with errors that say what is wrong."""

from __future__ import annotations

import os
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


def _units_to_mv(units: list[str] | None, signal: np.ndarray) -> np.ndarray:
    """Scale leads recorded in µV/V to mV (WFDB headers may say 'mV', 'mv', 'uV' ...)."""
    if not units:
        return signal
    scale = np.ones(signal.shape[0])
    for i, u in enumerate(units):
        u = (u or "").strip().lower()
        if u in ("uv", "µv", "microvolt"):
            scale[i] = 1e-3
        elif u == "v":
            scale[i] = 1e3
    return signal * scale[:, None]


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
