"""Data loading for every data source: the processed Arrow cache vs reading each unit from its files, in one run.

    python benchmarks/data_loading.py [--source all] [--units 1000] [--windows all] [--workdir DIR]

For each source, about ``--units`` labelled units (a record, a beat, a minute, a window or a 30 s epoch) are laid
out in the source's real on-disk layout, from the real samples in ``../shared/ecg-samples`` where they exist:

* ``ptbxl``: the synthetic PTB-XL generator (real layout, WFDB format 16, 100 Hz; no real PTB-XL is shipped);
* ``cinc2021``: the 30 real CinC 2021 records (Georgia ``E*``, PTB-XL ``HR*``) copied under new names into the
  challenge tree ``training/georgia/g1/`` and ``training/ptb-xl/g1/``;
* ``cpsc2018``: the real CinC signals whose ``Dx`` codes include one of the nine CPSC 2018 classes (17 of 30),
  written in the original CPSC 2018 layout (``TrainingSet1-3/A*.mat``, MATLAB struct ``ECG``, ``REFERENCE.csv``);
* ``mitdb``: beats of the real record 100 (2,270 usable; more copies of it under other record names if needed);
* ``apnea_ecg``: minutes of the real ``a01``/``a02`` headers and ``.apn`` labels, with a signal of the header's
  length synthesised from record 100's MLII (resampled to 100 Hz, tiled); more renamed copies if needed;
* ``cpsc2021``: 10 s windows of the 18 real records, then copies under new patient numbers;
* ``slpdb``: 30 s epochs of records written in the slpdb geometry (250 Hz, 4 signals, format 212, ``.st``
  stages), the ECG being record 100's MLII resampled to 250 Hz (no real slpdb is shipped);
* ``shhs``: 30 s epochs of an SHHS-1-style NSRR tree (``polysomnography/edfs/shhs1/*.edf`` with the 14-channel
  SHHS-1 montage, ECG at 125 Hz, and ``annotations-events-nsrr/shhs1/*-nsrr.xml``), written with the test
  suite's EDF writer (``tests/edf_writer.py``), the ECG being record 100's MLII resampled to 125 Hz.

Every unit goes through a HuBERT-ECG-shaped processor (12 leads, 100 Hz, 5 s windows: ``default_processor_steps``
with ``--windows``, ``all`` as in the recipes' ``data.windows`` default). Sources with fewer than 12 leads use it
with ``missing_leads="mask"`` (their leads are placed by name, the others masked); apnea and sleep ECGs are named
``II`` (``lead_name="II"``). For each source the script reports

* index: opening the source and listing its units (headers and annotations);
* build: ``build_cache`` (read + preprocess + write) per 1,000 units, wall time (and this process's CPU time:
  on a shared machine the wall time also counts other programs' load);
* (a) the naive per-item path a user writes today: read the unit's whole record (``wfdb.rdrecord`` /
  ``wfdb.rdsamp``; ``scipy.io.loadmat`` for CPSC 2018; ``read_edf_signal`` for EDF, the best reader installed:
  wfdb's ``read_edf`` averages mixed-rate PSGs down to the rates' GCD), cut the unit out, run the processor;
* ranged: the same, but reading only the unit's samples (``sampfrom``/``sampto``; WFDB long recordings only);
* (b) the cache one unit's windows at a time (``WindowDataset[i]``);
* (c) the cache through a ``DataLoader`` (batch 64, shuffled): the training path;

in units per second (a unit counts once all its windows are delivered), and the ratios (b)/(a) and (c)/(a).
The per-item paths are timed on units drawn at random (seeded) until ``--naive-seconds`` have passed; the
number of units timed is shown. Before timing, the per-item path is checked to give exactly the cached
windows for a few units. Torch runs on one thread.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import scipy.signal
import torch
import wfdb

from ecg_adapt.data import PTBXL, build_cache
from ecg_adapt.data.apnea import ApneaECG
from ecg_adapt.data.cache import ECGCache, WindowDataset, make_loader
from ecg_adapt.data.cinc import CinC2021
from ecg_adapt.data.cpsc2018 import CPSC2018, CPSC2018_CLASSES
from ecg_adapt.data.cpsc2021 import CPSC2021
from ecg_adapt.data.edf import mv_scale, read_edf_header, read_edf_signal
from ecg_adapt.data.mitdb import MITDB_RECORDS, MITBIHArrhythmia
from ecg_adapt.data.sleep import NSRRSleep, SlpDB
from ecg_adapt.data.synthetic import make_synthetic_ptbxl
from ecg_adapt.models.hubert_ecg import HUBERT_ECG_CONTRACT, default_processor_steps
from ecg_adapt.processing import ECGProcessor
from ecg_adapt.processing.processor import ProcessedRecord
from ecg_adapt.tasks.challenge import class_codes

REPO = Path(__file__).resolve().parents[1]
SOURCE_NAMES: tuple[str, ...] = ("ptbxl", "cinc2021", "cpsc2018", "mitdb", "apnea_ecg", "cpsc2021", "slpdb", "shhs")
NaivePath = Callable[[Any], ProcessedRecord]


@dataclass
class Prepared:
    """One source laid out on disk, its units, its processor and its per-item reading paths."""

    name: str
    unit: str  # what one unit is, in words
    source: Any
    ids: list[Any]
    processor: ECGProcessor
    naive: NaivePath  # whole record per item + cut + processor
    ranged: NaivePath | None  # only the unit's samples per item + processor (None: no such reader)
    fixture_s: float = 0.0
    index_s: float = 0.0


# ---------------------------------------------------------------------------------------------- helpers
def _default_samples() -> Path:
    """``$ECG_ADAPT_SHARED/ecg-samples`` or ``../shared/ecg-samples`` next to the repository (as the tests find it)."""
    shared = Path(os.environ.get("ECG_ADAPT_SHARED", REPO.parent / "shared"))
    return shared / "ecg-samples"


def _processor(windows: str, masked: bool) -> ECGProcessor:
    """The HuBERT-ECG processor; ``masked`` for sources with fewer than its 12 leads."""
    return ECGProcessor(HUBERT_ECG_CONTRACT, default_processor_steps(windows), missing_leads="mask" if masked else "error")


def _load_edf_writer() -> Any:
    """``tests/edf_writer.py`` (a plain module: no pytest), loaded by path so tests/ need not be a package."""
    path = REPO / "tests" / "edf_writer.py"
    spec = importlib.util.spec_from_file_location("ecg_adapt_bench_edf_writer", path)
    if spec is None or spec.loader is None or not path.exists():
        raise FileNotFoundError(f"{path} is needed to write the SHHS-style EDF files")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def _real_ecg(samples: Path, fs: float, n: int) -> np.ndarray:
    """``n`` samples in mV at ``fs`` Hz of a real ECG: MIT-BIH record 100, lead MLII, resampled and tiled."""
    mlii = wfdb.rdrecord(str(samples / "mitdb" / "100"), channels=[0]).p_signal[:, 0]
    ratio = Fraction(fs).limit_denominator(1000) / 360
    x = scipy.signal.resample_poly(mlii, ratio.numerator, ratio.denominator)
    return np.resize(x, n)


def _copy_wfdb(src: Path, dst: Path, extensions: Sequence[str]) -> None:
    """Copy a WFDB record under a new name; the header's record and file names are renamed with it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    lines = (src.parent / f"{src.name}.hea").read_text().splitlines(keepends=True)
    record_line = True
    for i, line in enumerate(lines):
        token, sep, rest = line.partition(" ")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if record_line:  # "<record> <signals> <fs> <samples>"
            if token == src.name:
                lines[i] = dst.name + sep + rest
            record_line = False
        elif token.startswith(f"{src.name}."):  # "<record>.<ext> <format> ..." signal lines
            lines[i] = dst.name + token[len(src.name):] + sep + rest
    (dst.parent / f"{dst.name}.hea").write_text("".join(lines))
    for ext in extensions:
        shutil.copyfile(src.parent / f"{src.name}.{ext}", dst.parent / f"{dst.name}.{ext}")


def _whole_wfdb(path: Path, start: int, stop: int, channels: list[int] | None = None) -> tuple[np.ndarray, float, list[str]]:
    """Read the whole record, keep ``[start, stop)``: ``(leads x samples in mV, fs, lead names)``."""
    rec = wfdb.rdrecord(str(path), channels=channels)
    return rec.p_signal[start:stop].T, float(rec.fs), list(rec.sig_name)


def _ranged_wfdb(path: Path, start: int, stop: int, channels: list[int] | None = None) -> tuple[np.ndarray, float, list[str]]:
    """Read only ``[start, stop)`` of the record (``sampfrom``/``sampto``)."""
    rec = wfdb.rdrecord(str(path), sampfrom=start, sampto=stop, channels=channels)
    return rec.p_signal.T, float(rec.fs), list(rec.sig_name)


def _segment_paths(
    processor: ECGProcessor, spans: dict[str, tuple[Path, int, int]], channels: list[int] | None = None,
    lead_names: list[str] | None = None,
) -> tuple[NaivePath, NaivePath]:
    """The whole-record and ranged per-item paths for units that are ``[start, stop)`` of a WFDB record."""

    def run(reader: Callable[..., tuple[np.ndarray, float, list[str]]], uid: Any) -> ProcessedRecord:
        path, start, stop = spans[str(uid)]
        x, fs, names = reader(path, start, stop, channels)
        return processor.process(x, fs, lead_names or names, record_id=str(uid))

    return (lambda uid: run(_whole_wfdb, uid)), (lambda uid: run(_ranged_wfdb, uid))


# ---------------------------------------------------------------------------------------------- sources
def prepare_ptbxl(work: Path, units: int, samples: Path, windows: str) -> Prepared:
    """Synthetic PTB-XL (real layout), 100 Hz; the unit is a 10 s record."""
    root = make_synthetic_ptbxl(work / "ptbxl", n_records=units, progress=False)
    t = time.perf_counter()
    ds = PTBXL(root, sampling_rate=100)
    ids = list(ds.database.index)
    index_s = time.perf_counter() - t
    processor = _processor(windows, masked=False)
    paths = {i: str(ds.record_path(i)) for i in ids}

    def naive(uid: Any) -> ProcessedRecord:
        x, fields = wfdb.rdsamp(paths[uid])
        return processor.process(x.T, fields["fs"], fields["sig_name"], record_id=str(uid))

    return Prepared("ptbxl", "10 s record, 12 leads @ 100 Hz (synthetic)", ds, ids, processor, naive, None, index_s=index_s)


def _cinc_names(samples: Path) -> list[str]:
    """The names of the real CinC 2021 records in the samples folder."""
    real = sorted(p.stem for p in (samples / "cinc2021").glob("*.hea"))
    if not real:
        raise FileNotFoundError(f"no CinC 2021 records under {samples / 'cinc2021'}")
    return real


def prepare_cinc2021(work: Path, units: int, samples: Path, windows: str) -> Prepared:
    """The real CinC 2021 records copied under new names into the challenge tree; the unit is a 10 s record."""
    real = _cinc_names(samples)
    root = work / "cinc2021" / "training"
    for k in range(units):
        name = real[k % len(real)]
        prefix, folder = ("HR", "ptb-xl") if name.startswith("HR") else ("E", "georgia")
        new = f"{prefix}{50000 + k:05d}"  # beyond the real numbering, so no copy takes a real record's name
        _copy_wfdb(samples / "cinc2021" / name, root / folder / "g1" / new, ["mat"])
    t = time.perf_counter()
    ds = CinC2021(root)
    ids = list(ds.records.index)
    index_s = time.perf_counter() - t
    processor = _processor(windows, masked=False)
    paths = {i: str(ds.record_path(i)) for i in ids}

    def naive(uid: Any) -> ProcessedRecord:
        x, fields = wfdb.rdsamp(paths[uid])
        return processor.process(x.T, fields["fs"], fields["sig_name"], record_id=str(uid))

    return Prepared("cinc2021", "10 s record, 12 leads @ 500 Hz (.mat)", ds, ids, processor, naive, None, index_s=index_s)


def prepare_cpsc2018(work: Path, units: int, samples: Path, windows: str) -> Prepared:
    """The real CinC signals in the original CPSC 2018 MATLAB layout; the unit is a record."""
    real = _cinc_names(samples)
    code_of = {c: cls.code for cls in CPSC2018_CLASSES for c in class_codes(cls.snomed)}
    signals, labels = [], []
    for name in real:
        x, fields = wfdb.rdsamp(str(samples / "cinc2021" / name))
        dx = next((c.split(":", 1)[1] for c in fields["comments"] if c.startswith("Dx:")), "")
        codes = list(dict.fromkeys(code_of[c.strip()] for c in dx.split(",") if c.strip() in code_of))[:3]
        if codes:  # every row of the real REFERENCE.csv has a First_label: use the records that map to one
            signals.append(np.ascontiguousarray(x.T))
            labels.append(codes)
    if not signals:
        raise ValueError(f"none of the CinC records under {samples / 'cinc2021'} has a Dx code of the nine CPSC classes")
    root = work / "cpsc2018"
    rows = ["Recording,First_label,Second_label,Third_label"]
    for k in range(units):
        rid = f"A{k + 1:04d}"
        folder = root / f"TrainingSet{1 + k * 3 // units}"  # the release's three parts
        folder.mkdir(parents=True, exist_ok=True)
        ecg = {"sex": "Male" if k % 2 else "Female", "age": np.array([[50 + k % 30]], dtype=np.uint8),
               "data": signals[k % len(signals)]}
        scipy.io.savemat(folder / f"{rid}.mat", {"ECG": ecg}, do_compression=True)
        codes = labels[k % len(labels)]
        rows.append(",".join([rid] + [str(c) for c in codes] + [""] * (3 - len(codes))))
    (root / "REFERENCE.csv").write_text("\n".join(rows) + "\n")
    t = time.perf_counter()
    ds = CPSC2018(root)
    ids = list(ds.records.index)
    index_s = time.perf_counter() - t
    processor = _processor(windows, masked=False)
    paths = {i: ds.records.at[i, "path"] for i in ids}
    leads = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]  # CPSC 2018's order

    def naive(uid: Any) -> ProcessedRecord:
        data = scipy.io.loadmat(paths[uid], simplify_cells=True)["ECG"]["data"]
        return processor.process(np.asarray(data, dtype=np.float64), 500.0, leads, record_id=str(uid))

    return Prepared("cpsc2018", "record, 12 leads @ 500 Hz (MATLAB)", ds, ids, processor, naive, None, index_s=index_s)


def prepare_mitdb(work: Path, units: int, samples: Path, windows: str) -> Prepared:
    """Beats of the real record 100 (2 s centred windows, 2 leads @ 360 Hz); copies of it if more are asked."""
    root = work / "mitdb"
    per_record = 2270  # usable beats of record 100 (tests/test_long_sources.py)
    n_records = -(-units // per_record)
    names = ["100"] + [r for r in MITDB_RECORDS if r != "100"][: n_records - 1]
    for name in names:
        _copy_wfdb(samples / "mitdb" / "100", root / name, ["dat", "atr"])
    t = time.perf_counter()
    ds = MITBIHArrhythmia(root, records=names)
    ids = list(ds.label_sets("aami").index[:units])
    index_s = time.perf_counter() - t
    processor = _processor(windows, masked=True)
    table = ds.beat_table()
    n = round(ds.window_seconds * 360)
    spans = {}
    for uid in ids:
        start = int(table.at[uid, "sample"]) - n // 2
        spans[uid] = (root / str(table.at[uid, "record"]), start, start + n)
    naive, ranged = _segment_paths(processor, spans)
    return Prepared("mitdb", "beat: 2 s, 2 leads @ 360 Hz", ds, ids, processor, naive, ranged, index_s=index_s)


def prepare_apnea(work: Path, units: int, samples: Path, windows: str) -> Prepared:
    """Minutes of the real a01/a02 headers and labels, signals synthesised at the header's length."""
    src = samples / "apnea-ecg"
    root = work / "apnea_ecg"
    root.mkdir(parents=True, exist_ok=True)
    real = ["a01", "a02"]
    names: list[str] = []
    minutes = 0
    while minutes < units:
        k = len(names)
        name = f"a{k + 1:02d}"  # a01, a02 are the real pair; a03... are renamed copies of them
        if k >= 20:
            raise ValueError(f"--units {units}: more minutes than 20 copies of a01/a02 give")
        _copy_wfdb(src / real[k % 2], root / name, ["apn"])
        header = wfdb.rdheader(str(root / name))
        ecg = _real_ecg(samples, header.fs, header.sig_len)
        adu = np.round(ecg * header.adc_gain[0]) + header.baseline[0]
        np.clip(adu, -32768, 32767).astype("<i2").tofile(root / header.file_name[0])  # format 16
        names.append(name)
        minutes += header.sig_len // 6000
    t = time.perf_counter()
    ds = ApneaECG(root, records=names, lead_name="II")
    ids = list(ds.label_sets("apnea").index[:units])
    index_s = time.perf_counter() - t
    processor = _processor(windows, masked=True)
    spans = {}
    for uid in ids:
        record, minute = uid.split("/")
        spans[uid] = (root / record, int(minute) * 6000, (int(minute) + 1) * 6000)
    naive, ranged = _segment_paths(processor, spans, lead_names=["II"])
    return Prepared("apnea_ecg", "minute: 60 s, 1 lead @ 100 Hz", ds, ids, processor, naive, ranged, index_s=index_s)


def prepare_cpsc2021(work: Path, units: int, samples: Path, windows: str) -> Prepared:
    """10 s windows of the 18 real records, then of copies under new patient numbers."""
    src = samples / "cpsc2021"
    real = sorted(p.stem for p in src.glob("data_*_*.hea"))
    if not real:
        raise FileNotFoundError(f"no CPSC 2021 records under {src}")
    root = work / "cpsc2021"
    for name in real:
        _copy_wfdb(src / name, root / "training_I" / name, ["dat", "atr"])
    headers = [wfdb.rdheader(str(src / n)) for n in real]
    windows_per_pass = sum(h.sig_len // round(10 * h.fs) for h in headers)  # CPSC2021's default 10 s windows
    for copy in range(1, -(-units // windows_per_pass)):
        for name in real:
            _, patient, n = name.split("_")
            new = f"data_{200 * copy + int(patient)}_{n}"  # patient numbers past the real 0-104
            _copy_wfdb(src / name, root / "training_II" / new, ["dat", "atr"])
    t = time.perf_counter()
    ds = CPSC2021(root)
    ids = list(ds.label_sets("af").index[:units])
    index_s = time.perf_counter() - t
    processor = _processor(windows, masked=True)
    spans = {}
    for uid in ids:
        record, k = uid.rsplit("/", 1)
        w = ds.index[record]
        start = int(w.starts[int(k)])
        spans[uid] = (w.path, start, start + int(w.lengths[int(k)]))
    naive, ranged = _segment_paths(processor, spans)
    return Prepared("cpsc2021", "window: 10 s, 2 leads @ 200 Hz", ds, ids, processor, naive, ranged, index_s=index_s)


# A plausible night: runs of (stage, epochs), repeated (the stage order does not affect timing).
_SLEEP_CYCLE: tuple[tuple[str, int], ...] = (("W", 20), ("1", 10), ("2", 40), ("3", 15), ("4", 20), ("2", 25), ("R", 20))


def _night(n_epochs: int) -> list[str]:
    """slpdb stage codes (``W``, ``1``-``4``, ``R``) of ``n_epochs`` epochs."""
    cycle = [stage for stage, n in _SLEEP_CYCLE for _ in range(n)]
    return [cycle[k % len(cycle)] for k in range(n_epochs)]


def _split_nights(units: int, longest: int) -> list[int]:
    """Epochs per recording: as many nights of ``longest`` epochs as fit in ``units``, then the rest."""
    nights = [longest] * (units // longest)
    if units % longest:
        nights.append(units % longest)
    return nights


def prepare_slpdb(work: Path, units: int, samples: Path, windows: str) -> Prepared:
    """30 s epochs of records in the slpdb geometry (4 signals, 250 Hz, format 212, stages in ``.st``)."""
    root = work / "slpdb"
    root.mkdir(parents=True, exist_ok=True)
    names = ["slp01a", "slp01b", "slp02a", "slp02b", "slp03", "slp04", "slp14", "slp16", "slp32", "slp37", "slp41",
             "slp45", "slp48", "slp59", "slp60", "slp61", "slp66", "slp67x"]  # PhysioNet's RECORDS
    nights = _split_nights(units, 720)  # slpdb records are 2-7 h long
    if len(nights) > len(names):
        raise ValueError(f"--units {units}: more epochs than 18 six-hour slpdb records hold")
    fs, e = 250, 30 * 250
    rng = np.random.default_rng(0)
    for name, n_epochs in zip(names, nights):
        n = n_epochs * e
        # slp01a.hea gives the ECG a gain of -200 adu/mV; wfdb.wrsamp only writes positive gains
        ecg = np.round(_real_ecg(samples, fs, n) * 200)
        other = rng.integers(-500, 500, size=(n, 3))
        d = np.column_stack([ecg, other]).astype(np.int64)
        wfdb.wrsamp(name, fs=fs, units=["mV", "mmHg", "mV", "l"], sig_name=["ECG", "BP", "EEG (C4-A1)", "Resp (sum)"],
                    d_signal=d, fmt=["212"] * 4, adc_gain=[200.0, 4.77778, 6430.0, 690.0], baseline=[0] * 4,
                    comments=["44 M 89 32-01-89"], write_dir=str(root))
        samples_at = np.array([1] + [k * e for k in range(1, n_epochs)])  # slpdb's first stage sits at sample 1
        wfdb.wrann(name, "st", samples_at, symbol=['"'] * n_epochs, aux_note=_night(n_epochs), write_dir=str(root))
    (root / "RECORDS").write_text("".join(f"{r}\n" for r in names[: len(nights)]))
    t = time.perf_counter()
    ds = SlpDB(root, lead_name="II")
    ids = [u for r in ds.recordings for u in ds.epochs_of(r)][:units]
    index_s = time.perf_counter() - t
    processor = _processor(windows, masked=True)
    spans = {}
    for uid in ids:
        start, stop = ds.epoch_span(uid)
        spans[uid] = (root / ds.parse_unit(uid)[0], start, stop)
    naive, ranged = _segment_paths(processor, spans, channels=[0], lead_names=["II"])
    return Prepared("slpdb", "epoch: 30 s, ECG of 4 signals @ 250 Hz", ds, ids, processor, naive, ranged, index_s=index_s)


_NSRR_CONCEPTS = {"W": "Wake|0", "1": "Stage 1 sleep|1", "2": "Stage 2 sleep|2", "3": "Stage 3 sleep|3",
                  "4": "Stage 4 sleep|4", "R": "REM sleep|5"}


def _nsrr_xml(path: Path, stages: list[str]) -> None:
    """An NSRR ``-nsrr.xml`` file: runs of equal stages as one ``Stages|Stages`` event each, as NSRR writes them."""
    events = [("<ScoredEvent><EventType/><EventConcept>Recording Start Time</EventConcept><Start>0</Start>"
               f"<Duration>{30.0 * len(stages)}</Duration><ClockTime>00.00.00 22.00.00</ClockTime></ScoredEvent>")]
    k = 0
    while k < len(stages):
        j = k
        while j < len(stages) and stages[j] == stages[k]:
            j += 1
        events.append(f"<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>{_NSRR_CONCEPTS[stages[k]]}"
                      f"</EventConcept><Start>{30.0 * k}</Start><Duration>{30.0 * (j - k)}</Duration></ScoredEvent>")
        k = j
    path.write_text('<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n<PSGAnnotation>\n'
                    "<SoftwareVersion>Compumedics</SoftwareVersion>\n<EpochLength>30</EpochLength>\n<ScoredEvents>\n"
                    + "\n".join(events) + "\n</ScoredEvents>\n</PSGAnnotation>\n")


def write_shhs_nights(root: Path, night_epochs: list[int], samples: Path, phase_step: int = 0) -> Path:
    """SHHS-1-style nights under ``root`` (NSRR layout): one EDF of the 14-channel SHHS-1 montage (ECG: record
    100's MLII at 125 Hz, rolled by ``phase_step`` samples per night; the rest random) and its NSRR XML per entry of
    ``night_epochs`` (30 s epochs). Returns the EDF folder."""
    edf_writer = _load_edf_writer()
    edf_dir = root / "polysomnography" / "edfs" / "shhs1"
    xml_dir = root / "polysomnography" / "annotations-events-nsrr" / "shhs1"
    edf_dir.mkdir(parents=True, exist_ok=True)
    xml_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, n_epochs in enumerate(night_epochs):
        seconds = 30 * n_epochs
        channels = []
        for label, unit, pmin, pmax, dmin, dmax, spr in edf_writer.SHHS1_MONTAGE:
            ch = edf_writer.EDFChannel(label, np.zeros(0, np.int16), spr, unit, pmin, pmax, dmin, dmax)
            if label == "ECG":
                ch.digital = edf_writer.to_digital(np.roll(_real_ecg(samples, spr, seconds * spr), phase_step * i), ch)
            else:
                ch.digital = rng.integers(dmin, dmax + 1, seconds * spr).astype(np.int16)
            channels.append(ch)
        record = f"shhs1-{200001 + i}"
        edf_writer.write_edf(edf_dir / f"{record}.edf", channels)
        _nsrr_xml(xml_dir / f"{record}-nsrr.xml", _night(n_epochs))
    return edf_dir


def prepare_shhs(work: Path, units: int, samples: Path, windows: str) -> Prepared:
    """30 s epochs of SHHS-1-style EDF + NSRR XML nights (ECG at 125 Hz among 14 channels of 1-125 Hz)."""
    root = work / "shhs"
    edf_dir = write_shhs_nights(root, _split_nights(units, 1080), samples)  # SHHS nights are about 9 h
    t = time.perf_counter()
    ds = NSRRSleep(root, cohort="shhs", visit="shhs1", lead_name="II")
    ids = [u for r in ds.recordings for u in ds.epochs_of(r)][:units]
    index_s = time.perf_counter() - t
    processor = _processor(windows, masked=True)
    spans = {uid: ds.epoch_span(uid) for uid in ids}
    edfs = {uid: edf_dir / f"{ds.parse_unit(uid)[0]}.edf" for uid in ids}

    def naive(uid: Any) -> ProcessedRecord:
        header = read_edf_header(edfs[uid])
        ch = header.find(["ECG"])
        assert ch is not None
        ecg = read_edf_signal(edfs[uid], ch, header) * (mv_scale(header.physical_dimension[ch]) or 1.0)
        start, stop = spans[uid]
        return processor.process(ecg[None, start:stop], header.sampling_rate(ch), ["II"], record_id=str(uid))

    return Prepared("shhs", "epoch: 30 s, ECG of 14 EDF signals @ 125 Hz", ds, ids, processor, naive, None,
                    index_s=index_s)


PREPARERS: dict[str, Callable[[Path, int, Path, str], Prepared]] = {
    "ptbxl": prepare_ptbxl, "cinc2021": prepare_cinc2021, "cpsc2018": prepare_cpsc2018, "mitdb": prepare_mitdb,
    "apnea_ecg": prepare_apnea, "cpsc2021": prepare_cpsc2021, "slpdb": prepare_slpdb, "shhs": prepare_shhs,
}


# ---------------------------------------------------------------------------------------------- measuring
@dataclass
class Result:
    """The measurements of one source (rates in units per second)."""

    name: str
    unit: str
    n_units: int
    windows_per_unit: float
    fixture_s: float
    index_s: float
    build_s: float
    build_cpu_s: float  # CPU time of this process: less sensitive than wall time to other load on the machine
    cache_mb: float
    naive: float
    naive_n: int
    ranged: float | None
    ranged_n: int
    item: float
    loader: float


def _cached_windows(cache: ECGCache, uid: Any) -> np.ndarray:
    """Every cached window of one unit, ``(windows, leads, samples)``."""
    return cache.take("input_values", np.flatnonzero(cache.row_record_ids == str(uid)))


def check_same_windows(prep: Prepared, cache: ECGCache, n: int = 3) -> None:
    """The per-item paths must give exactly the cached windows (so the paths compared do the same work)."""
    picks = [prep.ids[i] for i in np.linspace(0, len(prep.ids) - 1, n).round().astype(int)]
    for uid in picks:
        want = _cached_windows(cache, uid)
        for label, path in (("naive", prep.naive), ("ranged", prep.ranged)):
            if path is None:
                continue
            got = path(uid).input_values.reshape(want.shape)
            if not np.array_equal(got, want):
                raise AssertionError(f"{prep.name} {uid}: the {label} per-item path differs from the cache "
                                     f"(max |diff| {np.abs(got - want).max():.3g})")


def time_per_item(path: NaivePath, ids: list[Any], budget_s: float, seed: int = 0) -> tuple[float, int]:
    """Units per second of ``path`` over ids in a seeded random order, stopping once ``budget_s`` has passed."""
    order = np.random.default_rng(seed).permutation(len(ids))
    t0 = time.perf_counter()
    n = 0
    for i in order:
        path(ids[i])
        n += 1
        if time.perf_counter() - t0 > budget_s:
            break
    return n / (time.perf_counter() - t0), n


def measure(prep: Prepared, work: Path, naive_seconds: float, repeats: int) -> Result:
    """Build the cache of ``prep`` and time every path."""
    t, cpu = time.perf_counter(), time.process_time()
    cache = build_cache(prep.source, prep.processor, prep.ids, cache_dir=work / "cache" / prep.name, progress=False)
    build_s, build_cpu_s = time.perf_counter() - t, time.process_time() - cpu
    if cache.skipped:
        print(f"  [{prep.name}] {len(cache.skipped)} units skipped: {cache.report['skipped_by_reason']}", flush=True)
    n_units = cache.report["n_cached"]
    check_same_windows(prep, cache)
    naive, naive_n = time_per_item(prep.naive, prep.ids, naive_seconds)
    ranged, ranged_n = time_per_item(prep.ranged, prep.ids, naive_seconds) if prep.ranged else (None, 0)

    wds = WindowDataset(cache, prep.ids, np.zeros((len(prep.ids), 1), np.float32), prep.processor.contract.input_shape)
    item_s = batch_s = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(len(wds)):
            wds[i]
        item_s = min(item_s, time.perf_counter() - t)
        loader = make_loader(wds, batch_size=64, shuffle=True)
        t = time.perf_counter()
        seen = 0
        for batch in loader:
            seen += batch["input_values"].shape[0]
        batch_s = min(batch_s, time.perf_counter() - t)
        if seen != len(wds):
            raise AssertionError(f"{prep.name}: the loader gave {seen} windows of {len(wds)}")
    return Result(
        name=prep.name, unit=prep.unit, n_units=n_units, windows_per_unit=cache.report["n_windows"] / max(n_units, 1),
        fixture_s=prep.fixture_s, index_s=prep.index_s, build_s=build_s, build_cpu_s=build_cpu_s,
        cache_mb=sum(f.stat().st_size for f in cache.path.iterdir()) / 1e6,
        naive=naive, naive_n=naive_n, ranged=ranged, ranged_n=ranged_n,
        item=n_units / item_s, loader=n_units / batch_s,
    )


def _fmt_rate(rate: float | None, n: int | None = None) -> str:
    """``1,234`` (or ``2.5`` below 10), with the number of units timed in brackets when given."""
    if rate is None:
        return "—"
    text = f"{rate:,.0f}" if rate >= 10 else f"{rate:.1f}"
    return f"{text} ({n})" if n is not None else text


def print_table(results: list[Result]) -> None:
    """The results as one Markdown table, one row per source."""
    head = ["source", "unit", "units", "win/unit", "index s", "build s/1k (cpu)", "(a) naive u/s (n)", "ranged u/s (n)",
            "(b) cache item u/s", "(c) loader u/s", "(b)/(a)", "(c)/(a)"]
    rows = []
    for r in results:
        rows.append([
            r.name, r.unit, f"{r.n_units:,}", f"{r.windows_per_unit:.1f}", f"{r.index_s:.1f}",
            f"{r.build_s / r.n_units * 1000:.1f} ({r.build_cpu_s / r.n_units * 1000:.1f})", _fmt_rate(r.naive, r.naive_n),
            _fmt_rate(r.ranged, r.ranged_n) if r.ranged is not None else "—", _fmt_rate(r.item), _fmt_rate(r.loader),
            f"{r.item / r.naive:,.0f}x", f"{r.loader / r.naive:,.0f}x",
        ])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    right = set(range(2, len(head)))

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    print(line(head))
    print("|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|")
    for row in rows:
        print(line(row))


def main() -> None:
    """Lay out, cache and time every requested source, then print one table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", action="append", choices=("all",) + SOURCE_NAMES,
                    help="a source to measure (repeat for several; default: all)")
    ap.add_argument("--units", type=int, default=1000, help="labelled units per source (default 1000)")
    ap.add_argument("--windows", choices=("all", "first"), default="all",
                    help="the processor's window mode: every 5 s window of a unit (the recipes' default) or the first")
    ap.add_argument("--naive-seconds", type=float, default=10.0,
                    help="time budget of each per-item path per source (units drawn at random until it is spent)")
    ap.add_argument("--repeats", type=int, default=3, help="passes over the cache (best is reported)")
    ap.add_argument("--samples", default=str(_default_samples()), help="the ecg-samples folder (real records)")
    ap.add_argument("--workdir", default=None, help="where to write data and caches (default: a temp dir, removed)")
    args = ap.parse_args()
    if args.units < 1:
        ap.error("--units must be at least 1")
    names = list(SOURCE_NAMES) if not args.source or "all" in args.source else list(dict.fromkeys(args.source))
    samples = Path(args.samples)
    if any(n != "ptbxl" for n in names) and not samples.is_dir():
        sys.exit(f"{samples} does not exist: every source but ptbxl is built from the real samples there "
                 "(pass --samples DIR, or --source ptbxl)")
    logging.getLogger("ecg_adapt").setLevel(logging.ERROR)  # fixtures are complete; skip reports would be noise
    torch.set_num_threads(1)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="ecg_adapt_bench_"))
    start = time.perf_counter()
    results = []
    try:
        for name in names:
            t = time.perf_counter()
            prep = PREPARERS[name](work / "data", args.units, samples, args.windows)
            prep.fixture_s = time.perf_counter() - t - prep.index_s
            r = measure(prep, work, args.naive_seconds, args.repeats)
            print(f"[{name}] {r.n_units} units ({r.windows_per_unit:.1f} windows each): fixture {r.fixture_s:.1f} s, "
                  f"index {r.index_s:.1f} s, build {r.build_s:.1f} s ({r.cache_mb:.0f} MB), naive {_fmt_rate(r.naive)} u/s",
                  flush=True)
            results.append(r)
            if args.workdir is None:  # free the disk as we go
                shutil.rmtree(work / "data" / name, ignore_errors=True)
                shutil.rmtree(work / "cache" / name, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{len(results)} sources, HuBERT-ECG-shaped processor (12 leads, 100 Hz, 5 s windows, --windows "
          f"{args.windows}); torch threads 1; total {time.perf_counter() - start:.0f} s\n")
    print_table(results)
    print("\nu/s: units per second (a unit counts when all its windows are delivered). (a): read the unit's whole "
          "record + cut + processor, per item; ranged: read only the unit's samples (WFDB sampfrom/sampto; '—' where "
          "the unit is the whole record, or for EDF); (b), (c): the cache. (n): units timed.")


if __name__ == "__main__":
    main()
