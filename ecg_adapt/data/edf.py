"""EDF reading: the header and single channels of an EDF/EDF+C file, in physical units.

Used by the NSRR sleep sources (SHHS, MESA) and by ``ecg-adapt predict`` on ``.edf`` inputs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .record import ECGRecord, RecordError, find_channel, mv_scale

# Why EDF is read here and not with wfdb: wfdb 4.3.1's rdrecord does not open .edf files, and
# wfdb.io.convert.edf.read_edf resamples a file with mixed rates (every PSG: ECG 125 Hz, SaO2 1 Hz, ...) to
# the greatest common divisor of the rates by averaging frames (the ECG comes back at 1 Hz), and offsets
# the physical values by up to one digital step (its baseline adds 1 and truncates). The format is a
# fixed-width ASCII header followed by little-endian int16 data records (https://www.edfplus.info/specs/edf.html);
# reading one channel of it takes a memory map and the spec's linear scaling.
_EDF_SIGNAL_FIELDS: tuple[tuple[str, int], ...] = (
    ("label", 16), ("transducer", 80), ("physical_dimension", 8), ("physical_min", 8), ("physical_max", 8),
    ("digital_min", 8), ("digital_max", 8), ("prefiltering", 80), ("samples_per_record", 8), ("reserved", 32),
)


@dataclass
class EDFHeader:
    """The header of an EDF file: the 256-byte fixed part and one entry per signal."""

    path: Path
    start_date: str
    start_time: str
    header_bytes: int
    reserved: str
    n_records: int
    record_seconds: float
    labels: list[str]
    physical_dimension: list[str]
    physical_min: list[float]
    physical_max: list[float]
    digital_min: list[int]
    digital_max: list[int]
    samples_per_record: list[int]

    def sampling_rate(self, index: int) -> float:
        """Samples per second of signal ``index``."""
        return self.samples_per_record[index] / self.record_seconds

    def n_samples(self, index: int) -> int:
        """Number of samples of signal ``index`` in the whole file."""
        return self.n_records * self.samples_per_record[index]

    def find(self, names: Sequence[str]) -> int | None:
        """Index of the first signal whose label equals one of ``names`` (case-insensitive), in ``names`` order."""
        return find_channel(self.labels, names)


def read_edf_header(path: str | os.PathLike, record_id: str | None = None) -> EDFHeader:
    """Parse the header of an EDF (or EDF+C) file.

    Raises:
        RecordError: ``missing_file``, ``corrupt_header`` (not EDF, inconsistent fields) or ``unsupported``
            (BDF, discontinuous EDF+D).
    """
    path = Path(path)
    rid = record_id or path.stem
    if not path.exists():
        raise RecordError(rid, "missing_file", f"no EDF file {path}")
    with open(path, "rb") as f:
        fixed = f.read(256)
        if len(fixed) < 256:
            raise RecordError(rid, "corrupt_header", f"{path.name} is shorter than the 256-byte EDF header")
        if fixed[:1] == b"\xff":
            raise RecordError(rid, "unsupported", f"{path.name} is BDF (24-bit), not EDF")
        text = fixed.decode("latin-1")
        if text[0:8].strip() != "0":
            raise RecordError(rid, "corrupt_header", f"{path.name} does not start with the EDF version '0'")
        try:
            header_bytes = int(text[184:192])
            n_records = int(text[236:244])
            record_seconds = float(text[244:252])
            n_signals = int(text[252:256])
        except ValueError as e:
            raise RecordError(rid, "corrupt_header", f"{path.name}: unreadable number in the fixed header ({e})") from e
        if n_signals < 1 or header_bytes != 256 * (n_signals + 1):
            raise RecordError(rid, "corrupt_header", f"{path.name}: {n_signals} signals but a {header_bytes}-byte header")
        signal_part = f.read(256 * n_signals)
    if len(signal_part) < 256 * n_signals:
        raise RecordError(rid, "corrupt_header", f"{path.name}: the signal header is cut short")
    reserved = text[192:236].strip()
    if reserved.startswith("EDF+D"):
        raise RecordError(rid, "unsupported", f"{path.name} is discontinuous EDF+D: epochs cannot be placed by sample index")
    if record_seconds <= 0:
        raise RecordError(rid, "corrupt_header", f"{path.name}: data record duration {record_seconds} s")
    values: dict[str, list[str]] = {}
    pos = 0
    stext = signal_part.decode("latin-1")
    for name, width in _EDF_SIGNAL_FIELDS:
        values[name] = [stext[pos + i * width: pos + (i + 1) * width].strip() for i in range(n_signals)]
        pos += width * n_signals
    try:
        header = EDFHeader(
            path=path,
            start_date=text[168:176].strip(),
            start_time=text[176:184].strip(),
            header_bytes=header_bytes,
            reserved=reserved,
            n_records=n_records,
            record_seconds=record_seconds,
            labels=values["label"],
            physical_dimension=values["physical_dimension"],
            physical_min=[float(v) for v in values["physical_min"]],
            physical_max=[float(v) for v in values["physical_max"]],
            digital_min=[int(float(v)) for v in values["digital_min"]],
            digital_max=[int(float(v)) for v in values["digital_max"]],
            samples_per_record=[int(v) for v in values["samples_per_record"]],
        )
    except ValueError as e:
        raise RecordError(rid, "corrupt_header", f"{path.name}: unreadable number in the signal header ({e})") from e
    record_bytes = 2 * sum(header.samples_per_record)
    if record_bytes == 0:
        raise RecordError(rid, "corrupt_header", f"{path.name}: no samples per data record")
    size = path.stat().st_size
    if n_records == -1:  # allowed by the spec while recording: count the complete records on disk
        header.n_records = (size - header_bytes) // record_bytes
    elif size < header_bytes + n_records * record_bytes:
        raise RecordError(
            rid, "truncated", f"{path.name} has {size} bytes but its header promises "
            f"{header_bytes + n_records * record_bytes} ({n_records} records of {record_bytes} bytes)"
        )
    return header


def read_edf_signal(path: str | os.PathLike, index: int, header: EDFHeader | None = None,
                    record_id: str | None = None) -> np.ndarray:
    """The physical values of signal ``index`` of an EDF file (float64, in the header's unit).

    Only that signal's samples are read (a memory map of the data records). Physical value =
    ``physical_min + (digital - digital_min) * (physical_max - physical_min) / (digital_max - digital_min)``.

    Raises:
        RecordError: for a header that cannot be used, a truncated file or inconsistent digital/physical ranges.
    """
    header = header or read_edf_header(path, record_id)
    rid = record_id or Path(path).stem
    if not 0 <= index < len(header.labels):
        raise IndexError(f"{Path(path).name} has {len(header.labels)} signals; no index {index}")
    dmin, dmax = header.digital_min[index], header.digital_max[index]
    pmin, pmax = header.physical_min[index], header.physical_max[index]
    if dmax <= dmin or pmax == pmin:
        raise RecordError(rid, "corrupt_header", f"signal {header.labels[index]!r}: digital range [{dmin}, {dmax}], "
                          f"physical range [{pmin}, {pmax}]")
    per_record = sum(header.samples_per_record)
    if header.n_records <= 0:
        return np.zeros(0, dtype=np.float64)
    data = np.memmap(header.path, dtype="<i2", mode="r", offset=header.header_bytes, shape=(header.n_records, per_record))
    start = sum(header.samples_per_record[:index])
    digital = np.array(data[:, start: start + header.samples_per_record[index]]).reshape(-1)
    del data
    return (digital.astype(np.float64) - dmin) * ((pmax - pmin) / (dmax - dmin)) + pmin


def read_edf_channel(path: str | os.PathLike, index: int, header: EDFHeader | None = None,
                     record_id: str | None = None) -> np.ndarray:
    """Signal ``index`` of an EDF file in mV (float64): :func:`read_edf_signal` scaled by its physical dimension.

    Raises:
        RecordError: ``bad_signal`` when the signal's unit is not a voltage (uV, mV or V: then it is not an ECG,
            e.g. SaO2 in %), or :func:`read_edf_signal`'s errors.
    """
    header = header or read_edf_header(path, record_id)
    dim = header.physical_dimension[index]
    scale = mv_scale(dim)
    if scale is None:
        raise RecordError(record_id or Path(path).stem, "bad_signal", f"{Path(path).name}: channel "
                          f"{header.labels[index].strip()!r} has unit {dim!r}, not a voltage (uV, mV or V): is it the ECG?")
    return read_edf_signal(path, index, header, record_id) * scale


def read_edf(path: str | os.PathLike, channels: list[str] | None = None, record_id: str | None = None) -> ECGRecord:
    """The ECG channels of an EDF file as an :class:`ECGRecord` (mV).

    ``channels`` names the signals to read (default: every signal whose physical dimension is a voltage);
    they must share one sampling rate (a PSG's ECG does not share its rate with SaO2 or EEG: name it).

    Raises:
        RecordError: for an unreadable file, no voltage channel, a named channel that is absent or not in a
            voltage unit (it would be fed to the model as mV), or channels with different sampling rates.
    """
    header = read_edf_header(path, record_id)
    rid = record_id or Path(path).stem
    if channels is None:
        idx = [i for i, u in enumerate(header.physical_dimension) if mv_scale(u) is not None]
        if not idx:
            raise RecordError(rid, "bad_signal", f"no channel in volts among {header.labels}")
    else:
        missing = [c for c in channels if c not in header.labels]
        if missing:
            raise RecordError(rid, "missing_lead", f"channels {missing} not in {header.labels}")
        idx = [header.labels.index(c) for c in channels]
    rates = {header.sampling_rate(i) for i in idx}
    if len(rates) != 1:
        named = {header.labels[i]: header.sampling_rate(i) for i in idx}
        raise RecordError(rid, "bad_signal", f"EDF channels with different sampling rates {named}: select the ECG "
                          "channels (channels=[...])")
    signal = np.stack([read_edf_channel(path, i, header, rid) for i in idx])  # a named non-voltage channel: bad_signal
    return ECGRecord(signal, float(rates.pop()), [header.labels[i] for i in idx], record_id=rid)
