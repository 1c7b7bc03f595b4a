"""A minimal EDF writer for test fixtures (https://www.edfplus.info/specs/edf.html).

Written by hand on purpose: it is the independent counterpart of the reader under test, and no installed
library writes EDF (wfdb's ``wfdb_to_edf`` needs a WFDB record on disk and writes one rate per record).
An EDF file is a 256-byte ASCII header, 256 bytes per signal (fields stored signal after signal), then
data records holding ``samples_per_record[i]`` little-endian int16 samples of each signal in turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


# The SHHS-1 EDF montage: label, unit, physical min/max, digital min/max, samples per 1 s data record (the header
# of NSRR's SHHS-style test EDF in nsrr/edfize, test/edf_test.rb).
SHHS1_MONTAGE: tuple[tuple[str, str, float, float, int, int, int], ...] = (
    ("SaO2", "", 0.0, 100.0, -32768, 32767, 1), ("H.R.", "", 0.0, 250.0, -32768, 32767, 1),
    ("EEG(sec)", "uV", -125.0, 125.0, -128, 127, 125), ("ECG", "mV", -1.25, 1.25, -128, 127, 125),
    ("EMG", "uV", -31.25, 31.25, -128, 127, 125), ("EOG(L)", "uV", -125.0, 125.0, -128, 127, 50),
    ("EOG(R)", "uV", -125.0, 125.0, -128, 127, 50), ("EEG", "uV", -125.0, 125.0, -128, 127, 125),
    ("THOR RES", "", 1.0, -1.0, -128, 127, 10), ("ABDO RES", "", 1.0, -1.0, -128, 127, 10),
    ("POSITION", "", 0.0, 3.0, 0, 3, 1), ("LIGHT", "", 0.0, 1.0, 0, 1, 1),
    ("NEW AIR", "uV", -125.0, 125.0, -128, 127, 10), ("OX stat", "", 0.0, 3.0, 0, 3, 1),
)


@dataclass
class EDFChannel:
    """One signal: its digital samples and the header fields that give them physical meaning."""

    label: str
    digital: np.ndarray
    samples_per_record: int
    physical_dimension: str = "mV"
    physical_min: float = -1.0
    physical_max: float = 1.0
    digital_min: int = -32768
    digital_max: int = 32767
    transducer: str = ""
    prefiltering: str = ""

    def physical(self) -> np.ndarray:
        """The values an EDF reader must return: the spec's linear map of the digital samples."""
        gain = (self.physical_max - self.physical_min) / (self.digital_max - self.digital_min)
        return (self.digital.astype(np.float64) - self.digital_min) * gain + self.physical_min


def to_digital(physical: np.ndarray, ch: EDFChannel) -> np.ndarray:
    """Quantise physical values into ``ch``'s digital range (for building fixtures from a waveform)."""
    gain = (ch.digital_max - ch.digital_min) / (ch.physical_max - ch.physical_min)
    d = np.round((np.asarray(physical, dtype=np.float64) - ch.physical_min) * gain + ch.digital_min)
    return np.clip(d, ch.digital_min, ch.digital_max).astype(np.int16)


def _field(value: object, width: int) -> bytes:
    text = str(value)
    if len(text) > width:
        raise ValueError(f"EDF header field {text!r} is longer than {width} characters")
    return text.ljust(width).encode("latin-1")


def _number(value: float) -> str:
    text = repr(float(value)) if not float(value).is_integer() else str(int(value))
    return text[:8]


def write_edf(
    path: str | Path,
    channels: list[EDFChannel],
    record_seconds: float = 1.0,
    start_date: str = "01.01.85",
    start_time: str = "22.00.00",
    reserved: str = "",
    patient: str = "X X X X",
    recording: str = "Startdate X X X X",
) -> Path:
    """Write ``channels`` as an EDF file; every channel must hold a whole number of data records."""
    path = Path(path)
    n_records = {len(ch.digital) // ch.samples_per_record for ch in channels}
    if len(n_records) != 1 or any(len(ch.digital) % ch.samples_per_record for ch in channels):
        raise ValueError("every channel must hold the same whole number of data records")
    n = n_records.pop()
    ns = len(channels)
    header = (
        _field("0", 8) + _field(patient, 80) + _field(recording, 80) + _field(start_date, 8) + _field(start_time, 8)
        + _field(256 * (ns + 1), 8) + _field(reserved, 44) + _field(n, 8) + _field(_number(record_seconds), 8)
        + _field(ns, 4)
    )
    for attr, width in (("label", 16), ("transducer", 80), ("physical_dimension", 8)):
        header += b"".join(_field(getattr(ch, attr), width) for ch in channels)
    for attr in ("physical_min", "physical_max", "digital_min", "digital_max"):
        header += b"".join(_field(_number(getattr(ch, attr)), 8) for ch in channels)
    header += b"".join(_field(ch.prefiltering, 80) for ch in channels)
    header += b"".join(_field(ch.samples_per_record, 8) for ch in channels)
    header += b"".join(_field("", 32) for _ in channels)
    assert len(header) == 256 * (ns + 1)
    blocks = [np.asarray(ch.digital, dtype="<i2").reshape(n, ch.samples_per_record) for ch in channels]
    data = np.concatenate(blocks, axis=1).tobytes()  # record by record, signal after signal
    path.write_bytes(header + data)
    return path
