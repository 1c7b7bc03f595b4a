"""MIT-BIH Arrhythmia Database (Moody & Mark 2001; PhysioNet ``mitdb`` 1.0.0, ODC-By 1.0): beats, AAMI classes.

Reads the database as PhysioNet distributes it, one folder holding every record::

    <root>/<record>.hea    2 signals at 360 Hz, format 212 (lead 0 is MLII except in 102 and 104)
    <root>/<record>.dat
    <root>/<record>.atr    reference annotations: beats, rhythm changes (``+`` with ``aux_note``), noise, ...

One labelled unit is one beat annotation of ``.atr``, with id ``"<record>/<beat_index>"`` (``beat_index`` counts
the beat annotations of the record from 0, in file order; non-beat annotations are not counted). Its label is
the AAMI EC57 class of the beat symbol (:data:`AAMI_CLASSES`), and the segment given to the processor is a
window of ``window_seconds`` centred on the annotation: sample ``n // 2`` of the ``n``-sample window is the
annotated R peak. Beats whose window would run off either end of the recording are left out of every task
(counted in :meth:`MITBIHArrhythmia.beat_table`), since padding one side would move the peak off centre.

Splits follow the inter-patient protocol of de Chazal, O'Dwyer & Reilly (IEEE TBME 51(7), 2004): train on DS1,
test on DS2, the four paced records (102, 104, 107, 217) in neither. The validation split is carved out of DS1
by record (:data:`MITDB_VALIDATION_RECORDS`), never by beat, so no patient is on both sides. Caveat of the
protocol itself, kept as published: records 201 (DS1) and 202 (DS2) come from the same subject (PhysioNet's
``mitdbdir/intro.htm``).

Tasks: ``aami`` (five classes N, S, V, F, Q, one per beat) and ``aami4`` (N, S, V, F; Q beats left out). In the
de Chazal protocol Q (paced, fusion of paced and normal, unclassifiable) is almost empty once the paced records
are removed, and results are reported for N, S, V and F only; ``aami4`` is that evaluation, ``aami`` keeps the
full EC57 class list.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import wfdb

from ..tasks.task import ClassificationTask
from .base import OnError, SkipReport, index_records
from .record import ECGRecord, RecordError, read_wfdb

logger = logging.getLogger(__name__)

# All 48 records of the database.
MITDB_RECORDS: tuple[str, ...] = (
    "100", "101", "102", "103", "104", "105", "106", "107", "108", "109", "111", "112", "113", "114", "115", "116",
    "117", "118", "119", "121", "122", "123", "124", "200", "201", "202", "203", "205", "207", "208", "209", "210",
    "212", "213", "214", "215", "217", "219", "220", "221", "222", "223", "228", "230", "231", "232", "233", "234",
)
# de Chazal et al. 2004, inter-patient partition.
MITDB_DS1: tuple[str, ...] = (
    "101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122",
    "124", "201", "203", "205", "207", "208", "209", "215", "220", "223", "230",
)
MITDB_DS2: tuple[str, ...] = (
    "100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210",
    "212", "213", "214", "219", "221", "222", "228", "231", "232", "233", "234",
)
MITDB_PACED: tuple[str, ...] = ("102", "104", "107", "217")
# Validation records carved out of DS1 (4 of 22 patients), chosen from the beat tables of the MIT-BIH directory so
# that validation holds S, V and F beats while DS1's largest S and F sources (209, 208) stay in training; check
# the counts on your copy with ``beat_table()``. Override with ``validation_records=``.
MITDB_VALIDATION_RECORDS: tuple[str, ...] = ("106", "114", "124", "220")

AAMI_CLASSES: tuple[str, ...] = ("N", "S", "V", "F", "Q")
# ANSI/AAMI EC57 grouping of the MIT-BIH beat symbols.
AAMI_MAP: dict[str, str] = {
    "N": "N", "L": "N", "R": "N", "e": "N", "j": "N",  # normal, bundle branch blocks, escape beats
    "A": "S", "a": "S", "J": "S", "S": "S",  # supraventricular ectopic
    "V": "V", "E": "V",  # ventricular ectopic
    "F": "F",  # fusion of ventricular and normal
    "/": "Q", "f": "Q", "Q": "Q",  # paced, fusion of paced and normal, unclassifiable
}
# WFDB annotation codes that do not mark a beat (PhysioNet "Annotations" documentation): rhythm and signal-quality
# changes, waves, flutter, comments. Counted and ignored. A symbol in neither table is reported.
NON_BEAT_SYMBOLS: frozenset[str] = frozenset(
    ["[", "!", "]", "x", "(", ")", "p", "t", "u", "`", "'", "^", "|", "~", "+", "s", "T", "*", "D", "=", '"', "@"]
)

MITDB_TASKS: dict[str, tuple[str, ...]] = {"aami": AAMI_CLASSES, "aami4": ("N", "S", "V", "F")}
SPLIT_NAMES: tuple[str, ...] = ("train", "validation", "test", "ds1", "ds2")

CITATION = (
    "Moody, G.B., Mark, R.G. The impact of the MIT-BIH Arrhythmia Database. IEEE Eng in Med and Biol 20(3):45-50 "
    "(2001). de Chazal, P., O'Dwyer, M., Reilly, R.B. Automatic classification of heartbeats using ECG morphology "
    "and heartbeat interval features. IEEE Trans Biomed Eng 51(7):1196-1206 (2004). Goldberger et al., PhysioBank, "
    "PhysioToolkit, and PhysioNet, Circulation 101(23) (2000)."
)


def beat_id(record: str, beat_index: int) -> str:
    """The id of one beat: ``beat_id("100", 7) == "100/0007"``."""
    return f"{record}/{beat_index:04d}"


def parse_segment_id(segment_id: Any) -> tuple[str, int]:
    """Split ``"<record>/<index>"`` into ``(record, index)``; a clear ``ValueError`` for anything else."""
    text = str(segment_id)
    record, sep, index = text.rpartition("/")
    if not sep or not record or not index.isdigit():
        raise ValueError(f"{segment_id!r} is not a segment id of the form '<record>/<index>' (e.g. '100/0007')")
    return record, int(index)


@dataclass
class _RecordBeats:
    """The beat index of one record, built from its header and ``.atr`` (no signal is read)."""

    record: str
    fs: float
    sig_len: int
    samples: np.ndarray  # (beats,) int64, annotation sample of each beat
    symbols: list[str]
    classes: list[str | None]  # AAMI class, None for a beat symbol outside the EC57 table
    in_window: np.ndarray  # (beats,) bool: the centred window fits inside the recording
    non_beats: Counter[str]


class MITBIHArrhythmia:
    """The MIT-BIH Arrhythmia Database on disk, one labelled unit per annotated beat.

    Args:
        root: the folder holding ``<record>.hea/.dat/.atr`` (PhysioNet's ``mitdb/1.0.0``).
        window_seconds: length of the segment centred on each beat (default 2 s: the beat with about one
            neighbour on each side at a normal rate, so RR context is visible).
        records: records to use (default: every record of :data:`MITDB_RECORDS` present under ``root``).
            Records asked for explicitly but absent are reported as ``missing_file``.
        validation_records: the DS1 records held out for validation (default :data:`MITDB_VALIDATION_RECORDS`).
        leads: keep only these leads, in this order (e.g. ``["MLII"]``); default: both leads of each record.
        annotator: annotation file extension (``atr``, the reference annotations).
        on_error: ``"skip"`` (default) lists problems in :attr:`report`; ``"raise"`` stops at the first one.

    Example:
        >>> ds = MITBIHArrhythmia("/data/mitdb/1.0.0")                        # doctest: +SKIP
        >>> task = ds.task("aami4"); task.labels                                # doctest: +SKIP
        ['N', 'S', 'V', 'F']
        >>> test_ids = ds.split_ids(task, "test")                   # DS2 beats, e.g. '100/0001'  # doctest: +SKIP
        >>> labels = ds.label_sets("aami4")[test_ids]                          # doctest: +SKIP
    """

    name = "mitdb"
    citation = CITATION

    def __init__(
        self,
        root: str | os.PathLike,
        window_seconds: float = 2.0,
        records: Sequence[str] | None = None,
        validation_records: Sequence[str] = MITDB_VALIDATION_RECORDS,
        leads: Sequence[str] | None = None,
        annotator: str = "atr",
        on_error: OnError = "skip",
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"MIT-BIH folder {self.root} does not exist; download mitdb from PhysioNet")
        if not window_seconds > 0:
            raise ValueError(f"window_seconds must be positive, got {window_seconds}")
        self.window_seconds = float(window_seconds)
        self.validation_records = tuple(str(r) for r in validation_records)
        wrong = sorted(set(self.validation_records) - set(MITDB_DS1))
        if wrong:
            raise ValueError(f"validation_records must be DS1 records (the training patients); {wrong} are not in DS1")
        self.leads = list(leads) if leads is not None else None
        self.annotator = annotator
        self.report = SkipReport(self.name, on_error)
        if records is None:
            self.records = [r for r in MITDB_RECORDS if (self.root / f"{r}.hea").exists()]
            absent = [r for r in MITDB_RECORDS if r not in self.records]
            if absent:
                logger.info("MIT-BIH: %d of 48 records are not under %s: %s", len(absent), self.root, absent)
        else:
            self.records = []
            for r in (str(r) for r in records):
                if (self.root / f"{r}.hea").exists():
                    self.records.append(r)
                else:
                    self.report.add(r, "missing_file", f"no header {self.root / (r + '.hea')}")
        if not self.records:
            raise FileNotFoundError(f"No MIT-BIH record header (e.g. 100.hea) under {self.root}")
        self._index: dict[str, _RecordBeats] | None = None

    # ------------------------------------------------------------------ index (lazy, in memory)
    def _read_index(self, record: str) -> _RecordBeats | None:
        path = self.root / record
        try:
            header = wfdb.rdheader(str(path))
        except Exception as e:  # noqa: BLE001 - wfdb raises many types for malformed files
            self.report.add(record, "corrupt_header", f"{type(e).__name__}: {e}")
            return None
        if not header.sig_len or not header.fs:
            self.report.add(record, "corrupt_header", f"{path}.hea gives no signal length or sampling rate")
            return None
        ann_file = path.with_name(f"{record}.{self.annotator}")
        if not ann_file.exists():
            self.report.add(record, "missing_file", f"no annotation file {ann_file}")
            return None
        try:
            ann = wfdb.rdann(str(path), self.annotator)
        except Exception as e:  # noqa: BLE001 - wfdb raises many types for malformed files
            self.report.add(record, "unreadable", f"{ann_file.name}: {type(e).__name__}: {e}")
            return None
        samples = np.asarray(ann.sample, dtype=np.int64)
        fs, sig_len = float(header.fs), int(header.sig_len)
        if ann.fs is not None and abs(float(ann.fs) - fs) > 1e-6:
            self.report.add(record, "annotation_mismatch", f"{ann_file.name} is at {ann.fs} Hz, the record at {fs} Hz")
            return None
        if len(samples) and (samples.min() < 0 or samples.max() >= sig_len):
            self.report.add(
                record, "annotation_mismatch",
                f"{ann_file.name} has annotations up to sample {samples.max()} but the record has {sig_len} samples: "
                "the annotation file does not belong to this record",
            )
            return None
        beat_samples, symbols, classes = [], [], []
        non_beats: Counter[str] = Counter()
        unknown: Counter[str] = Counter()
        for s, sym in zip(samples, ann.symbol):
            if sym in NON_BEAT_SYMBOLS:
                non_beats[sym] += 1
                continue
            if sym not in AAMI_MAP:
                unknown[sym] += 1
            beat_samples.append(int(s))
            symbols.append(sym)
            classes.append(AAMI_MAP.get(sym))
        if unknown:
            self.report.add(record, "unknown_code", f"beat symbols with no AAMI class left out: {dict(unknown)}")
        n = self._window_samples(fs)
        starts = np.asarray(beat_samples, dtype=np.int64) - n // 2
        in_window = (starts >= 0) & (starts + n <= sig_len)
        return _RecordBeats(record, fs, sig_len, np.asarray(beat_samples, np.int64), symbols, classes, in_window, non_beats)

    def _window_samples(self, fs: float) -> int:
        return round(self.window_seconds * fs)

    @property
    def index(self) -> dict[str, _RecordBeats]:
        """The beat index of every usable record (built on first use from headers and annotations only)."""
        if self._index is None:
            index = self._index = index_records(self.records, self._read_index)
            edge = sum(int((~b.in_window).sum()) for b in index.values())
            logger.info("MIT-BIH: %d beats indexed in %d records; %d beats too close to a record end for a centred "
                        "%.2f s window are left out", sum(len(b.samples) for b in index.values()), len(index), edge,
                        self.window_seconds)
            self.report.log()
        return self._index

    def beat_table(self) -> pd.DataFrame:
        """One row per beat annotation: ``record``, ``beat_index``, ``sample``, ``symbol``, ``aami`` and
        ``in_window`` (False for beats too close to a record end), indexed by beat id."""
        rows = []
        for record, b in self.index.items():
            for i in range(len(b.samples)):
                rows.append((beat_id(record, i), record, i, int(b.samples[i]), b.symbols[i], b.classes[i], bool(b.in_window[i])))
        cols = ["id", "record", "beat_index", "sample", "symbol", "aami", "in_window"]
        return pd.DataFrame(rows, columns=cols).set_index("id")

    @property
    def non_beat_counts(self) -> dict[str, dict[str, int]]:
        """Non-beat annotations ignored, per record (``{"100": {"+": 1}}``)."""
        return {r: dict(b.non_beats) for r, b in self.index.items()}

    # ------------------------------------------------------------------ labels and splits
    def label_sets(self, task: str) -> pd.Series:
        """The AAMI class of every usable beat (a one-element list per beat id) for ``aami`` or ``aami4``."""
        if task not in MITDB_TASKS:
            raise ValueError(f"Unknown MIT-BIH task {task!r}; available: {list(MITDB_TASKS)}")
        keep = set(MITDB_TASKS[task])
        ids, labels = [], []
        for record, b in self.index.items():
            for i, cls in enumerate(b.classes):
                if cls in keep and b.in_window[i]:
                    ids.append(beat_id(record, i))
                    labels.append([cls])
        return pd.Series(labels, index=pd.Index(ids, dtype=object), dtype=object)

    def task(self, name: str) -> ClassificationTask:
        """``aami`` (N, S, V, F, Q) or ``aami4`` (N, S, V, F): one class per beat (softmax)."""
        if name not in MITDB_TASKS:
            raise ValueError(f"Unknown MIT-BIH task {name!r}; available: {list(MITDB_TASKS)}")
        labels = list(MITDB_TASKS[name])
        return ClassificationTask(
            name=f"mitdb/{name}",
            labels=labels,
            problem_type="single_label_classification",
            description=f"MIT-BIH beats in AAMI EC57 classes {labels}, inter-patient DS1/DS2 (de Chazal 2004)",
            primary_metric="macro_f1",
        )

    def split_records(self, split: str) -> list[str]:
        """Records of a split: ``train`` (DS1 minus validation), ``validation``, ``test`` (DS2), ``ds1``, ``ds2``."""
        if split not in SPLIT_NAMES:
            raise ValueError(f"Unknown split {split!r}; available: {list(SPLIT_NAMES)}")
        members = {
            "train": [r for r in MITDB_DS1 if r not in self.validation_records],
            "validation": list(self.validation_records),
            "test": list(MITDB_DS2),
            "ds1": list(MITDB_DS1),
            "ds2": list(MITDB_DS2),
        }[split]
        return [r for r in members if r in self.records]

    def split_ids(self, task: ClassificationTask | str, split: str) -> list[str]:
        """Beat ids of one split that have a label in ``task`` (records in file order, beats in time order)."""
        name = task.name.split("/", 1)[-1] if isinstance(task, ClassificationTask) else task
        records = set(self.split_records(split))
        return [i for i in self.label_sets(name).index if parse_segment_id(i)[0] in records]

    # ------------------------------------------------------------------ signals
    def read_record(self, record: str) -> ECGRecord:
        """The whole recording in mV (raises :class:`RecordError` for missing, truncated or corrupt files)."""
        rec = read_wfdb(self.root / record, record_id=record)
        if self.leads is not None:
            missing = [lead for lead in self.leads if lead not in rec.lead_names]
            if missing:
                raise RecordError(record, "missing_lead", f"record has leads {rec.lead_names}, not {missing}")
            rows = [rec.lead_names.index(lead) for lead in self.leads]
            rec = ECGRecord(rec.signal[rows], rec.sampling_rate, list(self.leads), record, ["mV"] * len(rows), rec.comments)
        return rec

    def iter_records(self, ids: list[Any] | None = None) -> Iterator[tuple[str, ECGRecord | RecordError]]:
        """Yield ``(beat_id, window)`` for each requested beat (all usable beats by default).

        Each recording is read once and all of its requested beats are cut from that one read; a recording
        that cannot be read yields ``(beat_id, RecordError)`` for each of its requested beats.

        Raises:
            ValueError: for an id that is not a usable beat of this source (unknown record or beat, or a beat
                too close to a record end).
        """
        if ids is None:
            ids = list(self.label_sets("aami").index)
        by_record: dict[str, list[tuple[str, int]]] = {}
        for i in ids:
            record, k = parse_segment_id(i)
            b = self.index.get(record)
            if b is None or k >= len(b.samples) or not b.in_window[k]:
                why = "is not an indexed record" if b is None else (
                    f"has {len(b.samples)} beats" if k >= len(b.samples) else "puts this beat too close to an end")
                raise ValueError(f"{i!r} is not a usable MIT-BIH beat: record {record} {why} (see beat_table())")
            by_record.setdefault(record, []).append((str(i), k))
        for record, wanted in by_record.items():
            b = self.index[record]
            try:
                full = self.read_record(record)
                if full.signal.shape[1] != b.sig_len:
                    raise RecordError(record, "truncated", f"{full.signal.shape[1]} samples read, header says {b.sig_len}")
            except RecordError as e:
                for sid, _ in wanted:
                    yield sid, e
                continue
            n = self._window_samples(b.fs)
            for sid, k in wanted:
                start = int(b.samples[k]) - n // 2
                yield sid, ECGRecord(
                    signal=full.signal[:, start : start + n].copy(),
                    sampling_rate=full.sampling_rate,
                    lead_names=list(full.lead_names),
                    record_id=sid,
                    units=full.units,
                    comments=list(full.comments),
                    meta={"record": record, "beat_index": k, "sample": int(b.samples[k]), "start": start,
                          "symbol": b.symbols[k], "aami": b.classes[k]},
                )
            del full

    def fingerprint(self) -> dict[str, object]:
        """What identifies this source's segments in a cache key."""
        return {
            "source": self.name,
            "root": str(self.root.resolve()),
            "window_seconds": self.window_seconds,
            "leads": self.leads,
            "annotator": self.annotator,
        }


__all__ = [
    "AAMI_CLASSES",
    "AAMI_MAP",
    "MITDB_DS1",
    "MITDB_DS2",
    "MITDB_PACED",
    "MITDB_RECORDS",
    "MITDB_TASKS",
    "MITDB_VALIDATION_RECORDS",
    "NON_BEAT_SYMBOLS",
    "MITBIHArrhythmia",
    "beat_id",
    "parse_segment_id",
]
