"""CPSC 2021 (4th China Physiological Signal Challenge: paroxysmal AF events in dynamic ECG; PhysioNet
``cpsc2021`` 1.0.0, CC BY 4.0): AF / non-AF windows of long two-lead recordings.

Reads the records as PhysioNet distributes them (``training_I/`` and ``training_II/``, any nesting)::

    <root>/**/data_<patient>_<n>.hea   2 leads (I, II), 200 Hz; a comment line gives the record class
    <root>/**/data_<patient>_<n>.dat
    <root>/**/data_<patient>_<n>.atr   beats, and rhythm changes in ``aux_note``: ``(AFIB``, ``(AFL``, ``(N``

Record classes (header comment): ``non atrial fibrillation``, ``persistent atrial fibrillation``, ``paroxysmal
atrial fibrillation``. Rhythm follows the challenge's scoring code (``score_2021.py``: an AF episode starts at an
annotation whose ``aux_note`` is ``(AFIB`` or ``(AFL`` and ends at the next ``(N``): every rhythm annotation starts
a rhythm that lasts until the next one, the rhythm before the first annotation is ``N`` (non-AF records carry no
rhythm annotation at all), and a closing ``(N`` may sit one sample past the last sample (it ends the record).

One labelled unit is one window of ``window_seconds`` (every ``stride_seconds``, default no overlap), id
``"<record>/<window>"``; the tail shorter than a window is not used, and a record shorter than one window gives
one short window (the processor pads and masks it). A window is ``AF`` under ``label_rule="majority"`` when more
than half of its samples are in AF (atrial fibrillation or flutter), or under ``label_rule="any"`` when any
sample is. There is no public test set: records are split by patient (the first number of ``data_<patient>_<n>``)
into ten folds by a hash of the patient number (:func:`patient_fold`), folds 0-7 train, 8 validation, 9 test.
The fold of a patient does not depend on which other records are on disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import wfdb

from ..tasks.task import ClassificationTask
from .base import OnError, SkipReport, index_records
from .record import ECGRecord, RecordError, read_wfdb

logger = logging.getLogger(__name__)

RECORD_CLASSES: dict[str, str] = {
    "non atrial fibrillation": "non_af",
    "persistent atrial fibrillation": "persistent_af",
    "paroxysmal atrial fibrillation": "paroxysmal_af",
}
AF_RHYTHMS: frozenset[str] = frozenset({"AFIB", "AFL"})
KNOWN_RHYTHMS: frozenset[str] = frozenset({"N", "AFIB", "AFL"})
CPSC2021_LABELS: tuple[str, ...] = ("non-AF", "AF")
CPSC2021_SPLIT_FOLDS: dict[str, tuple[int, ...]] = {"train": tuple(range(8)), "validation": (8,), "test": (9,)}
_RECORD_NAME = re.compile(r"data_(\d+)_(\d+)")

CITATION = (
    "Wang, X., Ma, C., Zhang, X., Gao, H., Clifford, G.D., Liu, C. Paroxysmal Atrial Fibrillation Events Detection "
    "from Dynamic ECG Recordings: The 4th China Physiological Signal Challenge 2021 (version 1.0.0). PhysioNet "
    "(2021). Goldberger et al., PhysioBank, PhysioToolkit, and PhysioNet, Circulation 101(23) (2000)."
)


def patient_of(record: str) -> int:
    """The patient number of a record: ``patient_of("data_21_7") == 21``."""
    m = _RECORD_NAME.fullmatch(record)
    if m is None:
        raise ValueError(f"{record!r} is not a CPSC 2021 record name 'data_<patient>_<n>'")
    return int(m.group(1))


def patient_fold(patient: int, n_folds: int = 10) -> int:
    """The fold (0 to ``n_folds - 1``) of a patient: a SHA-256 hash of its number, stable across machines."""
    digest = hashlib.sha256(f"cpsc2021-patient-{int(patient)}".encode()).hexdigest()
    return int(digest, 16) % n_folds


def patient_split(patient: int) -> str:
    """``train``, ``validation`` or ``test`` for a patient (folds 0-7, 8 and 9 of :func:`patient_fold`)."""
    fold = patient_fold(patient)
    return next(s for s, folds in CPSC2021_SPLIT_FOLDS.items() if fold in folds)


def rhythm_intervals(samples: Sequence[int], aux_notes: Sequence[str], sig_len: int) -> list[tuple[int, int, str]]:
    """Rhythm intervals ``(start, stop, rhythm)`` (stop exclusive) covering ``[0, sig_len)`` from annotations.

    Rhythm annotations are those whose ``aux_note`` starts with ``(`` (trailing NULs and blanks ignored);
    each starts its rhythm at its sample. Before the first one the rhythm is ``N``. Samples past the end are
    clipped (a closing annotation at ``sig_len`` is how the records end their last episode).

    Example:
        >>> rhythm_intervals([0, 50, 80], ["(AFIB", "None", "(N"], 100)
        [(0, 80, 'AFIB'), (80, 100, 'N')]
    """
    changes: list[tuple[int, str]] = []
    for s, note in zip(samples, aux_notes):
        text = (note or "").replace("\x00", "").strip()
        if text.startswith("("):
            changes.append((min(int(s), sig_len), text[1:]))
    intervals: list[tuple[int, int, str]] = []
    start, rhythm = 0, "N"
    for s, new in changes:
        if s > start:
            intervals.append((start, s, rhythm))
        start, rhythm = max(start, s), new
    if start < sig_len:
        intervals.append((start, sig_len, rhythm))
    return intervals


@dataclass
class _RecordWindows:
    """The windows of one record and their AF fractions (from header and annotations; no signal read)."""

    record: str
    path: Path
    patient: int
    record_class: str | None
    fs: float
    sig_len: int
    intervals: list[tuple[int, int, str]]
    starts: np.ndarray  # (windows,) first sample of each window
    lengths: np.ndarray  # (windows,) samples in each window
    af_fraction: np.ndarray  # (windows,) fraction of the window's samples in AF


class CPSC2021:
    """CPSC 2021 on disk, one labelled unit per fixed-length window.

    Args:
        root: the folder holding the records (or ``training_I``/``training_II`` below it).
        window_seconds: window length (default 10 s).
        stride_seconds: distance between window starts (default ``window_seconds``: no overlap).
        label_rule: ``"majority"`` (AF if more than half of the window is AF) or ``"any"`` (AF if any sample is).
        records: records to use (default: every ``data_*_*`` header found under ``root``).
        on_error: ``"skip"`` (default) lists problems in :attr:`report`; ``"raise"`` stops at the first one.

    Example:
        >>> ds = CPSC2021("/data/cpsc2021/1.0.0", window_seconds=10)          # doctest: +SKIP
        >>> task = ds.task("af"); task.labels                                  # doctest: +SKIP
        ['non-AF', 'AF']
        >>> ds.record_table()[["patient", "record_class", "af_fraction"]]      # doctest: +SKIP
    """

    name = "cpsc2021"
    citation = CITATION

    def __init__(
        self,
        root: str | os.PathLike,
        window_seconds: float = 10.0,
        stride_seconds: float | None = None,
        label_rule: Literal["majority", "any"] = "majority",
        records: Sequence[str] | None = None,
        on_error: OnError = "skip",
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"CPSC 2021 folder {self.root} does not exist; download cpsc2021 from PhysioNet")
        if not window_seconds > 0:
            raise ValueError(f"window_seconds must be positive, got {window_seconds}")
        if stride_seconds is not None and not stride_seconds > 0:
            raise ValueError(f"stride_seconds must be positive, got {stride_seconds}")
        if label_rule not in ("majority", "any"):
            raise ValueError(f"label_rule must be 'majority' or 'any', got {label_rule!r}")
        self.window_seconds = float(window_seconds)
        self.stride_seconds = float(stride_seconds) if stride_seconds is not None else self.window_seconds
        self.label_rule = label_rule
        self.report = SkipReport(self.name, on_error)
        found: dict[str, Path] = {}
        for hea in sorted(self.root.rglob("data_*_*.hea")):
            name = hea.stem
            if not _RECORD_NAME.fullmatch(name):
                continue
            if name in found:
                raise ValueError(f"Record {name} is under {self.root} twice: {found[name]} and {hea.parent}; "
                                 "point root at one copy")
            found[name] = hea.parent
        if records is None:
            self.paths = dict(sorted(found.items(), key=lambda kv: (patient_of(kv[0]), int(kv[0].rsplit("_", 1)[1]))))
        else:
            self.paths = {}
            for r in (str(r) for r in records):
                patient_of(r)  # validates the name
                if r in found:
                    self.paths[r] = found[r]
                else:
                    self.report.add(r, "missing_file", f"no {r}.hea under {self.root}")
        if not self.paths:
            raise FileNotFoundError(f"No CPSC 2021 record header (data_<patient>_<n>.hea) under {self.root}")
        self.records = list(self.paths)
        self._index: dict[str, _RecordWindows] | None = None

    # ------------------------------------------------------------------ index (lazy)
    def _read_index(self, record: str) -> _RecordWindows | None:
        path = self.paths[record] / record
        try:
            header = wfdb.rdheader(str(path))
        except Exception as e:  # noqa: BLE001 - wfdb raises many types for malformed files
            self.report.add(record, "corrupt_header", f"{type(e).__name__}: {e}")
            return None
        if not header.sig_len or not header.fs:
            self.report.add(record, "corrupt_header", f"{path}.hea gives no signal length or sampling rate")
            return None
        fs, sig_len = float(header.fs), int(header.sig_len)
        comments = [c.strip().lower() for c in (header.comments or [])]
        classes = [RECORD_CLASSES[c] for c in comments if c in RECORD_CLASSES]
        record_class = classes[0] if len(classes) == 1 else None
        if record_class is None:
            self.report.add(record, "unknown_code", f"header comments {header.comments} name no single record class "
                            f"of {list(RECORD_CLASSES)}")
        if not path.with_suffix(".atr").exists():
            self.report.add(record, "missing_file", f"no annotation file {path}.atr")
            return None
        try:
            ann = wfdb.rdann(str(path), "atr")
        except Exception as e:  # noqa: BLE001 - wfdb raises many types for malformed files
            self.report.add(record, "unreadable", f"{record}.atr: {type(e).__name__}: {e}")
            return None
        samples = np.asarray(ann.sample, dtype=np.int64)
        if len(samples) and (samples.min() < 0 or samples.max() > sig_len):
            self.report.add(record, "annotation_mismatch", f"{record}.atr has annotations up to sample {samples.max()} "
                            f"but the record has {sig_len} samples: the annotation file does not belong to it")
            return None
        intervals = rhythm_intervals(samples, list(ann.aux_note or [""] * len(samples)), sig_len)
        unknown = sorted({r for _, _, r in intervals} - KNOWN_RHYTHMS)
        if unknown:
            self.report.add(record, "unknown_code", f"rhythms {unknown} are not N/AFIB/AFL; counted as non-AF")
        af_intervals = [(a, b) for a, b, r in intervals if r in AF_RHYTHMS]
        self._check_class(record, record_class, sum(b - a for a, b in af_intervals), sig_len)
        n, stride = self._samples(self.window_seconds, fs), self._samples(self.stride_seconds, fs)
        if sig_len >= n:
            starts = np.arange(0, sig_len - n + 1, stride, dtype=np.int64)
            lengths = np.full(len(starts), n, dtype=np.int64)
        else:
            starts, lengths = np.zeros(1, np.int64), np.array([sig_len], np.int64)
        # AF samples per window: overlap of each window with each AF interval (no per-sample array: records
        # last up to hours)
        af_samples = np.zeros(len(starts), dtype=np.int64)
        for a, b in af_intervals:
            af_samples += np.clip(np.minimum(b, starts + lengths) - np.maximum(a, starts), 0, None)
        fractions = af_samples / lengths
        return _RecordWindows(record, path, patient_of(record), record_class, fs, sig_len, intervals, starts, lengths, fractions)

    def _check_class(self, record: str, record_class: str | None, n_af: int, n: int) -> None:
        """Report a header class that the rhythm annotations contradict (labels still follow the annotations)."""
        problem = None
        if record_class == "non_af" and n_af:
            problem = f"header says non-AF but {n_af} samples are annotated AF"
        elif record_class == "persistent_af" and n - n_af > 1:  # a closing (N on the last sample is allowed
            problem = f"header says persistent AF but {n - n_af} samples are annotated non-AF"
        elif record_class == "paroxysmal_af" and (n_af == 0 or n_af == n):
            problem = f"header says paroxysmal AF but {'no' if n_af == 0 else 'every'} sample is annotated AF"
        if problem:
            self.report.add(record, "annotation_mismatch", problem)

    @staticmethod
    def _samples(seconds: float, fs: float) -> int:
        return max(1, round(seconds * fs))

    @property
    def index(self) -> dict[str, _RecordWindows]:
        """The windows of every usable record (built on first use from headers and annotations)."""
        if self._index is None:
            self._index = index_records(self.records, self._read_index)
            self.report.log()
        return self._index

    def record_table(self) -> pd.DataFrame:
        """One row per usable record: patient, split, record class, length, AF fraction, AF episodes, windows."""
        rows = []
        for record, w in self.index.items():
            af = [(a, b) for a, b, r in w.intervals if r in AF_RHYTHMS]
            rows.append({
                "record": record,
                "patient": w.patient,
                "split": patient_split(w.patient),
                "record_class": w.record_class,
                "seconds": w.sig_len / w.fs,
                "af_fraction": sum(b - a for a, b in af) / w.sig_len,
                "af_episodes": len(af),
                "windows": len(w.starts),
                "af_windows": int(self._is_af(w.af_fraction).sum()),
            })
        return pd.DataFrame(rows).set_index("record")

    def rhythm_intervals(self, record: str) -> list[tuple[int, int, str]]:
        """The rhythm intervals ``(start, stop, rhythm)`` of one record, in samples (stop exclusive)."""
        if record not in self.index:
            raise ValueError(f"{record!r} is not a usable CPSC 2021 record here (see report)")
        return list(self.index[record].intervals)

    # ------------------------------------------------------------------ tasks and splits
    def _is_af(self, fraction: np.ndarray) -> np.ndarray:
        return fraction > 0.5 if self.label_rule == "majority" else fraction > 0

    def label_sets(self, task: str) -> pd.Series:
        """``["AF"]`` or ``["non-AF"]`` per window id for the ``af`` task (rule: ``label_rule``)."""
        if task != "af":
            raise ValueError(f"Unknown CPSC 2021 task {task!r}; available: ['af']")
        ids, labs = [], []
        for record, w in self.index.items():
            for k, is_af in enumerate(self._is_af(w.af_fraction)):
                ids.append(f"{record}/{k:04d}")
                labs.append(["AF" if is_af else "non-AF"])
        return pd.Series(labs, index=pd.Index(ids, dtype=object), dtype=object)

    def task(self, name: str) -> ClassificationTask:
        """The ``af`` task: one label per window, ``non-AF`` or ``AF`` (softmax, index 1 is AF)."""
        if name != "af":
            raise ValueError(f"Unknown CPSC 2021 task {name!r}; available: ['af']")
        return ClassificationTask(
            name="cpsc2021/af",
            labels=list(CPSC2021_LABELS),
            problem_type="single_label_classification",
            description=f"CPSC 2021 {self.window_seconds:g} s windows, AF ({self.label_rule} rule) vs non-AF",
            primary_metric="macro_f1",
        )

    def split_records(self, split: str) -> list[str]:
        """Records whose patient falls in ``train``, ``validation`` or ``test`` (:func:`patient_split`)."""
        if split not in CPSC2021_SPLIT_FOLDS:
            raise ValueError(f"Unknown split {split!r}; available: {list(CPSC2021_SPLIT_FOLDS)}")
        return [r for r in self.records if patient_split(patient_of(r)) == split]

    def split_ids(self, task: ClassificationTask | str, split: str) -> list[str]:
        """Window ids of one split (patient-wise), records in order, windows in time order."""
        name = task.name.split("/", 1)[-1] if isinstance(task, ClassificationTask) else task
        records = set(self.split_records(split))
        return [i for i in self.label_sets(name).index if i.rpartition("/")[0] in records]

    # ------------------------------------------------------------------ signals
    def iter_records(self, ids: list[Any] | None = None) -> Iterator[tuple[str, ECGRecord | RecordError]]:
        """Yield ``(window_id, window)`` for each requested window (all windows by default).

        Each recording is read once; all of its requested windows are cut from that read.

        Raises:
            ValueError: for an id that is not a window of this source.
        """
        if ids is None:
            ids = list(self.label_sets("af").index)
        by_record: dict[str, list[tuple[str, int]]] = {}
        for i in ids:
            record, _, k = str(i).rpartition("/")
            w = self.index.get(record)
            if w is None or not k.isdigit() or int(k) >= len(w.starts):
                raise ValueError(f"{i!r} is not a CPSC 2021 window id of this source ('<record>/<window>', see record_table())")
            by_record.setdefault(record, []).append((str(i), int(k)))
        for record, wanted in by_record.items():
            w = self.index[record]
            try:
                full = read_wfdb(w.path, record_id=record)
                if full.signal.shape[1] != w.sig_len:
                    raise RecordError(record, "truncated", f"{full.signal.shape[1]} samples read, header says {w.sig_len}")
            except RecordError as e:
                for sid, _ in wanted:
                    yield sid, e
                continue
            for sid, k in wanted:
                start, n = int(w.starts[k]), int(w.lengths[k])
                yield sid, ECGRecord(
                    signal=full.signal[:, start : start + n].copy(),
                    sampling_rate=full.sampling_rate,
                    lead_names=list(full.lead_names),
                    record_id=sid,
                    units=full.units,
                    comments=list(full.comments),
                    meta={"record": record, "patient": w.patient, "window": k, "start": start,
                          "af_fraction": float(w.af_fraction[k]), "record_class": w.record_class},
                )
            del full

    def fingerprint(self) -> dict[str, object]:
        """What identifies this source's segments in a cache key."""
        return {
            "source": self.name,
            "root": str(self.root.resolve()),
            "window_seconds": self.window_seconds,
            "stride_seconds": self.stride_seconds,
        }


__all__ = [
    "AF_RHYTHMS",
    "CPSC2021",
    "CPSC2021_LABELS",
    "CPSC2021_SPLIT_FOLDS",
    "RECORD_CLASSES",
    "patient_fold",
    "patient_of",
    "patient_split",
    "rhythm_intervals",
]
