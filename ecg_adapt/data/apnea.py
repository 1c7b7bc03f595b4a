"""Apnea-ECG Database (Penzel et al., CinC 2000; PhysioNet ``apnea-ecg`` 1.0.0, ODC-By): apnea per minute.

Reads the database as PhysioNet distributes it, one folder holding every record::

    <root>/a01.hea, a01.dat    one ECG signal, 100 Hz, format 16, 200 adu/mV, about 7-10 hours
    <root>/a01.apn             one annotation per minute: ``A`` (apnea) or ``N``, at sample k * 6000
    <root>/event-2-answers     the per-minute answers of the test set x01-x35 (released after the challenge)

Records: the learning set a01-a20 (apnea), b01-b05 (borderline), c01-c10 (control) and the test set x01-x35.
The ``.apn`` annotation at sample ``k * 60 * fs`` labels minute ``k``, i.e. seconds ``[60 k, 60 k + 60)``: per
PhysioNet's ``annotations.shtml`` an ``A`` means apnea (or hypopnea) was in progress at the beginning of that
minute. One labelled unit is one minute, id ``"<record>/<minute>"`` (``"a01/0007"``); with ``context_minutes=c``
the segment given to the processor is ``[60 (k - c), 60 (k + 1 + c))`` s with the labelled minute in the centre,
and minutes whose context runs off either end of the recording are left out (standard practice for ±2 min
context). The test-set labels come from ``x01.apn`` ... when present next to the records, else from the official
``event-2-answers`` file (``answers_path=``, default ``<root>/event-2-answers``), parsed by
:func:`parse_event2_answers`.

Protocol: train on the learning set, test on x01-x35 (the challenge's event 2, per-minute accuracy); the
validation split is carved from the learning set by record (:data:`APNEA_VALIDATION_RECORDS`). Record-level
results use the challenge's class rule (:func:`apnea_record_class`) and :func:`record_level_metrics`.

The channel is named ``ECG`` in the headers, and the database does not say which standard lead it
approximates. Backbones are fed by lead name, so pass ``lead_name=`` (e.g. ``"II"``) to declare which contract
lead this single channel stands for; it is recorded in the fingerprint and in every segment's ``meta``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import wfdb

from ..tasks.task import ClassificationTask
from .base import OnError, SkipReport, index_records
from .record import ECGRecord, RecordError, read_wfdb

logger = logging.getLogger(__name__)

APNEA_LEARNING_RECORDS: tuple[str, ...] = tuple(
    [f"a{i:02d}" for i in range(1, 21)] + [f"b{i:02d}" for i in range(1, 6)] + [f"c{i:02d}" for i in range(1, 11)]
)
APNEA_TEST_RECORDS: tuple[str, ...] = tuple(f"x{i:02d}" for i in range(1, 36))
# 7 of the 35 learning records (4 A, 1 B, 2 C, the class mix of the learning set). c05 and c06 are the same night
# (c05 starts 80 s later), so both stay in training. Override with ``validation_records=``.
APNEA_VALIDATION_RECORDS: tuple[str, ...] = ("a03", "a08", "a13", "a18", "b03", "c03", "c08")
APNEA_SPLITS: tuple[str, ...] = ("train", "validation", "test", "learning")
APNEA_LABELS: tuple[str, ...] = ("N", "A")  # index 1 is apnea
MINUTE_SECONDS = 60

CITATION = (
    "Penzel, T., Moody, G.B., Mark, R.G., Goldberger, A.L., Peter, J.H. The Apnea-ECG Database. Computers in "
    "Cardiology 27:255-258 (2000). Goldberger et al., PhysioBank, PhysioToolkit, and PhysioNet, Circulation "
    "101(23) (2000)."
)

RecordClass = Literal["A", "B", "C"]


def minute_id(record: str, minute: int) -> str:
    """The id of one minute: ``minute_id("a01", 7) == "a01/0007"``."""
    return f"{record}/{minute:04d}"


def _parse_id(segment_id: Any) -> tuple[str, int]:
    record, sep, index = str(segment_id).rpartition("/")
    if not sep or not record or not index.isdigit():
        raise ValueError(f"{segment_id!r} is not a minute id of the form '<record>/<minute>' (e.g. 'a01/0007')")
    return record, int(index)


# ---------------------------------------------------------------------- official answers and the class rule
def parse_event2_answers(path: str | os.PathLike) -> dict[str, str]:
    """Read the challenge's ``event-2-answers`` file: ``{"x01": "NNAA...", ...}``, one ``A``/``N`` per minute.

    The file has one block per record: a line with the record name, then lines ``<hour> <labels>`` holding
    the labels of minutes ``60 * hour`` onwards (60 per line, the last line of a block shorter), blocks separated
    by blank lines. Checked: hours consecutive from 0, full hours have 60 labels, only ``A`` and ``N``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a line that does not follow the format (file and line number in the message).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Apnea-ECG answers file {path} does not exist (PhysioNet apnea-ecg 'event-2-answers')")
    answers: dict[str, list[str]] = {}
    current: str | None = None
    last_len = 60
    for n, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if re.fullmatch(r"[a-z]\d\d", line):
            if line in answers:
                raise ValueError(f"{path}:{n}: record {line} appears twice")
            current, last_len = line, 60
            answers[current] = []
            continue
        m = re.fullmatch(r"(\d+)\s+([A-Za-z]+)", line)
        if current is None or m is None:
            raise ValueError(f"{path}:{n}: expected a record name (e.g. 'x01') or '<hour> <A/N labels>', got {raw!r}")
        hour, labels = int(m.group(1)), m.group(2)
        expected_hour = len(answers[current])
        if hour != expected_hour:
            raise ValueError(f"{path}:{n}: record {current}: hour {hour} where hour {expected_hour} was expected")
        if last_len != 60:
            raise ValueError(f"{path}:{n}: record {current}: hour {hour - 1} has {last_len} labels but is not the last")
        bad = sorted(set(labels) - {"A", "N"})
        if bad:
            raise ValueError(f"{path}:{n}: record {current}: labels other than A/N: {bad}")
        if len(labels) > 60:
            raise ValueError(f"{path}:{n}: record {current}: {len(labels)} labels in one hour (at most 60)")
        answers[current].append(labels)
        last_len = len(labels)
    empty = [r for r, hours in answers.items() if not hours]
    if empty:
        raise ValueError(f"{path}: records without labels: {empty}")
    return {r: "".join(hours) for r, hours in answers.items()}


def apnea_record_summary(labels: Sequence[str] | str, minutes: Sequence[int] | None = None) -> dict[str, Any]:
    """Per-record apnea figures from per-minute labels (``"A"``/``"N"``).

    ``minutes`` are the minute indices of ``labels`` (default ``0, 1, 2, ...``); hours are the non-overlapping
    60-minute blocks ``minute // 60``, as in the challenge's scoring. Returns ``minutes``, ``apnea_minutes``,
    ``max_apnea_minutes_per_hour`` (the most apnea minutes in one hour), ``apnea_index`` (apnea minutes per
    hour of labelled minutes) and ``record_class`` (:func:`apnea_record_class`).
    """
    labs = np.asarray(list(labels))
    idx = np.arange(len(labs)) if minutes is None else np.asarray(minutes, dtype=np.int64)
    if len(idx) != len(labs):
        raise ValueError(f"{len(labs)} labels but {len(idx)} minute indices")
    bad = sorted(set(labs.tolist()) - {"A", "N"})
    if bad:
        raise ValueError(f"minute labels must be 'A' or 'N', got {bad}")
    apnea = labs == "A"
    per_hour = np.bincount(idx[apnea] // 60) if apnea.any() else np.zeros(1, dtype=np.int64)
    n = len(labs)
    n_apnea = int(apnea.sum())
    max_hour = int(per_hour.max())
    return {
        "minutes": n,
        "apnea_minutes": n_apnea,
        "max_apnea_minutes_per_hour": max_hour,
        "apnea_index": n_apnea * 60.0 / n if n else float("nan"),
        "record_class": _class_rule(n_apnea, max_hour),
    }


def _class_rule(apnea_minutes: int, max_apnea_minutes_per_hour: int) -> RecordClass:
    if apnea_minutes < 5:
        return "C"
    if apnea_minutes >= 100 and max_apnea_minutes_per_hour >= 10:
        return "A"
    return "B"


def apnea_record_class(labels: Sequence[str] | str, minutes: Sequence[int] | None = None) -> RecordClass:
    """The CinC 2000 record class from per-minute labels (PhysioNet challenge-2000 page, "Data classes").

    * ``A`` (apnea): at least 100 apnea minutes and at least one hour with an apnea index of 10 or more;
    * ``C`` (control): fewer than 5 apnea minutes;
    * ``B`` (borderline): everything in between. The page defines B as "at least one hour with an apnea index
      of 5 or more and between 5 and 99 apnea minutes"; a record with 5-99 minutes spread so thinly that no hour
      reaches 5 fits none of the three definitions and is put in B here ("meets some but not all criteria").

    The apnea index of an hour is its number of apnea minutes (the page: "the number of minutes containing
    apnea per hour"). On the 35 test records this rule applied to ``event-2-answers`` reproduces the official
    ``event-1-answers`` classes exactly.

    Example:
        >>> apnea_record_class("A" * 120 + "N" * 300), apnea_record_class("N" * 400 + "A" * 3)
        ('A', 'C')
    """
    return apnea_record_summary(labels, minutes)["record_class"]


def record_level_metrics(
    minute_ids: Sequence[str],
    apnea_scores: Sequence[float] | np.ndarray,
    reference: pd.Series | Mapping[str, str],
    threshold: float = 0.5,
    screening_index: float = 5.0,
) -> dict[str, Any]:
    """Bring per-minute apnea predictions to the record and score them against the reference.

    Args:
        minute_ids: ids ``"<record>/<minute>"`` of the predicted minutes.
        apnea_scores: for each id, the probability (or a 0/1 decision) that the minute is apnea. With the
            ``apnea`` task's softmax output use ``probs[:, task.labels.index("A")]``.
        reference: the reference label (``"A"``/``"N"``) of every labelled minute, e.g.
            :attr:`ApneaECG.minute_labels`. A record's true class uses all of its reference minutes (the whole
            night), not only the predicted ones.
        threshold: a minute is predicted apnea when its score is at least this.
        screening_index: a record screens positive when its predicted apnea index (apnea minutes per hour)
            reaches this (5: "most clinicians regard an apnea index below 5 as normal", challenge-2000 page).

    Returns:
        ``per_record`` (one dict per record: minutes, predicted/true apnea minutes and index, predicted/true
        class), ``class_accuracy`` (three-class A/B/C agreement of :func:`apnea_record_class`), the challenge's
        event-1 screening score over true A and C records (B excluded, as in the challenge): ``screening_n``,
        ``screening_correct``, ``screening_accuracy``, ``screening_sensitivity``, ``screening_specificity``; and
        ``minute_accuracy`` and ``apnea_minutes_correlation`` (Pearson, predicted vs true apnea minutes per
        record, ``None`` for fewer than 3 records).
    """
    scores = np.asarray(apnea_scores, dtype=np.float64)
    ids = [str(i) for i in minute_ids]
    if scores.ndim != 1 or len(scores) != len(ids):
        raise ValueError(f"apnea_scores must be one score per minute id: got shape {scores.shape} for {len(ids)} ids")
    ref = pd.Series(reference, dtype=object) if not isinstance(reference, pd.Series) else reference
    missing = [i for i in ids if i not in ref.index]
    if missing:
        raise ValueError(f"{len(missing)} minute ids have no reference label (first: {missing[:3]})")
    pred_a = scores >= threshold
    ref_records: dict[str, list[tuple[int, str]]] = {}
    for i, lab in ref.items():
        r, k = _parse_id(i)
        ref_records.setdefault(r, []).append((k, str(lab)))
    pred_records: dict[str, list[tuple[int, str]]] = {}
    for i, p in zip(ids, pred_a):
        r, k = _parse_id(i)
        pred_records.setdefault(r, []).append((k, "A" if p else "N"))
    rows = []
    for r in sorted(pred_records):
        pk, pl = zip(*sorted(pred_records[r]))
        tk, tl = zip(*sorted(ref_records[r]))
        p, t = apnea_record_summary(pl, pk), apnea_record_summary(tl, tk)
        rows.append({
            "record": r,
            "predicted_minutes": p["minutes"],
            "predicted_apnea_minutes": p["apnea_minutes"],
            "true_apnea_minutes": t["apnea_minutes"],
            "predicted_apnea_index": p["apnea_index"],
            "true_apnea_index": t["apnea_index"],
            "predicted_class": p["record_class"],
            "true_class": t["record_class"],
            "screens_positive": bool(p["apnea_index"] >= screening_index),
        })
    truth_by_id = np.array([ref[i] == "A" for i in ids])
    screened = [row for row in rows if row["true_class"] in ("A", "C")]
    tp = sum(row["screens_positive"] and row["true_class"] == "A" for row in screened)
    tn = sum(not row["screens_positive"] and row["true_class"] == "C" for row in screened)
    n_a = sum(row["true_class"] == "A" for row in screened)
    n_c = len(screened) - n_a
    corr = None
    if len(rows) >= 3:
        x = np.array([row["predicted_apnea_minutes"] for row in rows], dtype=float)
        y = np.array([row["true_apnea_minutes"] for row in rows], dtype=float)
        if x.std() > 0 and y.std() > 0:
            corr = float(np.corrcoef(x, y)[0, 1])
    return {
        "per_record": rows,
        "n_records": len(rows),
        "minute_accuracy": float((pred_a == truth_by_id).mean()) if ids else None,
        "class_accuracy": float(np.mean([row["predicted_class"] == row["true_class"] for row in rows])) if rows else None,
        "screening_n": len(screened),
        "screening_correct": int(tp + tn),
        "screening_accuracy": (tp + tn) / len(screened) if screened else None,
        "screening_sensitivity": tp / n_a if n_a else None,
        "screening_specificity": tn / n_c if n_c else None,
        "apnea_minutes_correlation": corr,
    }


# ---------------------------------------------------------------------- the source
@dataclass
class _RecordMinutes:
    """The labelled minutes of one record (from its header and labels; no signal read)."""

    record: str
    fs: float
    sig_len: int
    minutes: np.ndarray  # (n,) int64, minute indices with a label whose minute lies inside the signal
    labels: list[str]  # "A"/"N" per minute
    usable: np.ndarray  # (n,) bool: the minute and its context fit inside the signal
    label_source: str
    notes: list[str] = field(default_factory=list)


class ApneaECG:
    """The Apnea-ECG Database on disk, one labelled unit per annotated minute.

    Args:
        root: the folder holding the records (PhysioNet's ``apnea-ecg/1.0.0``).
        context_minutes: minutes of signal added on each side of the labelled minute (0: the minute alone).
        answers_path: the official ``event-2-answers`` file for x01-x35 when their ``.apn`` files are absent
            (default: ``<root>/event-2-answers`` or ``<root>/event-2-answers.txt`` if either exists).
        records: records to use (default: every record of the 70 whose header is under ``root``).
        validation_records: learning-set records held out for validation (default :data:`APNEA_VALIDATION_RECORDS`).
        lead_name: the contract lead name to give the single ``ECG`` channel (see the module docstring).
        on_error: ``"skip"`` (default) lists problems in :attr:`report`; ``"raise"`` stops at the first one.

    Example:
        >>> ds = ApneaECG("/data/apnea-ecg/1.0.0", context_minutes=2, lead_name="II")   # doctest: +SKIP
        >>> task = ds.task("apnea"); task.labels                                          # doctest: +SKIP
        ['N', 'A']
        >>> ds.split_ids(task, "test")[:2]                                                # doctest: +SKIP
        ['x01/0002', 'x01/0003']
    """

    name = "apnea_ecg"
    citation = CITATION
    epoch_seconds = float(MINUTE_SECONDS)  # the scored unit (a sequence model trained here records it for prediction)

    def __init__(
        self,
        root: str | os.PathLike,
        context_minutes: int = 0,
        answers_path: str | os.PathLike | None = None,
        records: Sequence[str] | None = None,
        validation_records: Sequence[str] = APNEA_VALIDATION_RECORDS,
        lead_name: str | None = None,
        on_error: OnError = "skip",
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"Apnea-ECG folder {self.root} does not exist; download apnea-ecg from PhysioNet")
        if int(context_minutes) != context_minutes or context_minutes < 0:
            raise ValueError(f"context_minutes must be a whole number >= 0, got {context_minutes}")
        self.context_minutes = int(context_minutes)
        if answers_path is None:
            found = [p for p in (self.root / "event-2-answers", self.root / "event-2-answers.txt") if p.exists()]
            self.answers_path = found[0] if found else None
        else:
            self.answers_path = Path(answers_path)
            if not self.answers_path.exists():
                raise FileNotFoundError(f"answers_path {self.answers_path} does not exist")
        self.validation_records = tuple(str(r) for r in validation_records)
        wrong = sorted(set(self.validation_records) - set(APNEA_LEARNING_RECORDS))
        if wrong:
            raise ValueError(f"validation_records must be learning-set records (a/b/c); {wrong} are not")
        self.lead_name = lead_name
        self.report = SkipReport(self.name, on_error)
        canonical = APNEA_LEARNING_RECORDS + APNEA_TEST_RECORDS
        if records is None:
            self.records = [r for r in canonical if (self.root / f"{r}.hea").exists()]
            if len(self.records) < len(canonical):
                logger.info("Apnea-ECG: %d of 70 records under %s", len(self.records), self.root)
        else:
            self.records = []
            for r in (str(r) for r in records):
                if r not in canonical:
                    raise ValueError(f"{r!r} is not an Apnea-ECG record (a01-a20, b01-b05, c01-c10, x01-x35)")
                if (self.root / f"{r}.hea").exists():
                    self.records.append(r)
                else:
                    self.report.add(r, "missing_file", f"no header {self.root / (r + '.hea')}")
        if not self.records:
            raise FileNotFoundError(f"No Apnea-ECG record header (e.g. a01.hea) under {self.root}")
        self._answers: dict[str, str] | None = None
        self._index: dict[str, _RecordMinutes] | None = None

    # ------------------------------------------------------------------ labels from .apn or the answers file
    @property
    def answers(self) -> dict[str, str]:
        """The parsed ``event-2-answers`` (empty when there is no answers file)."""
        if self._answers is None:
            self._answers = parse_event2_answers(self.answers_path) if self.answers_path is not None else {}
        return self._answers

    def _labels_from_apn(self, record: str, spm: int) -> dict[int, str] | None:
        try:
            ann = wfdb.rdann(str(self.root / record), "apn")
        except Exception as e:  # noqa: BLE001 - wfdb raises many types for malformed files
            self.report.add(record, "unreadable", f"{record}.apn: {type(e).__name__}: {e}")
            return None
        out: dict[int, str] = {}
        misaligned, duplicate, unknown = [], [], {}
        for s, sym in zip(ann.sample, ann.symbol):
            if s % spm:
                misaligned.append(int(s))
                continue
            k = int(s) // spm
            if sym not in ("A", "N"):
                unknown[sym] = unknown.get(sym, 0) + 1
                continue
            if k in out:
                duplicate.append(k)
                continue
            out[k] = sym
        if misaligned:
            self.report.add(record, "annotation_mismatch",
                            f"{len(misaligned)} .apn annotations not on a minute boundary (first at sample {misaligned[0]})")
        if duplicate:
            self.report.add(record, "annotation_mismatch", f"minutes labelled twice in .apn, first kept: {duplicate[:10]}")
        if unknown:
            self.report.add(record, "unknown_code", f".apn symbols other than A/N left out: {unknown}")
        return out

    def _read_index(self, record: str) -> _RecordMinutes | None:
        try:
            header = wfdb.rdheader(str(self.root / record))
        except Exception as e:  # noqa: BLE001 - wfdb raises many types for malformed files
            self.report.add(record, "corrupt_header", f"{type(e).__name__}: {e}")
            return None
        if not header.sig_len or not header.fs:
            self.report.add(record, "corrupt_header", f"{record}.hea gives no signal length or sampling rate")
            return None
        fs, sig_len = float(header.fs), int(header.sig_len)
        spm = MINUTE_SECONDS * fs
        if spm != int(spm):
            self.report.add(record, "corrupt_header", f"{fs} Hz does not give a whole number of samples per minute")
            return None
        spm = int(spm)
        apn = self.root / f"{record}.apn"
        if apn.exists():
            labels = self._labels_from_apn(record, spm)
            if labels is None:
                return None
            source = f"{record}.apn"
            if record in self.answers and "".join(labels[k] for k in sorted(labels)) != self.answers[record]:
                self.report.add(record, "annotation_mismatch",
                                f"{record}.apn and {self.answers_path} disagree; {record}.apn is used")
        elif record in self.answers:
            labels = dict(enumerate(self.answers[record]))
            source = str(self.answers_path)
        else:
            hint = " (pass answers_path= to the official event-2-answers file)" if record.startswith("x") else ""
            self.report.add(record, "missing_labels", f"no {apn.name} and no answers for {record}{hint}")
            return None
        if not labels:
            self.report.add(record, "missing_labels", f"{source} holds no A/N label")
            return None
        ks = np.array(sorted(labels), dtype=np.int64)
        gaps = sorted(set(range(int(ks[-1]) + 1)) - set(ks.tolist()))
        if gaps:
            self.report.add(record, "missing_minutes", f"{len(gaps)} minutes without a label in {source}: {gaps[:10]}")
        inside = (ks + 1) * spm <= sig_len
        if not inside.all():
            past = ks[~inside]
            self.report.add(
                record, "annotation_mismatch",
                f"{source} labels {len(past)} minute(s) from minute {past[0]} that the signal ({sig_len} samples, "
                f"{sig_len / spm:.2f} min) does not cover; they are left out",
            )
        ks = ks[inside]
        c = self.context_minutes
        usable = ((ks - c) >= 0) & ((ks + 1 + c) * spm <= sig_len)
        return _RecordMinutes(record, fs, sig_len, ks, [labels[int(k)] for k in ks], usable, source)

    @property
    def index(self) -> dict[str, _RecordMinutes]:
        """The labelled minutes of every usable record (built on first use; headers and labels only)."""
        if self._index is None:
            index = self._index = index_records(self.records, self._read_index)
            edge = sum(int((~m.usable).sum()) for m in index.values())
            if edge:
                logger.info("Apnea-ECG: %d labelled minutes lack %d min of context on one side and are left out",
                            edge, self.context_minutes)
            self.report.log()
        return self._index

    @property
    def minute_labels(self) -> pd.Series:
        """The reference label (``"A"``/``"N"``) of every labelled minute, context or not (for record truth)."""
        ids, labs = [], []
        for record, m in self.index.items():
            ids += [minute_id(record, int(k)) for k in m.minutes]
            labs += m.labels
        return pd.Series(labs, index=pd.Index(ids, dtype=object), dtype=object)

    def record_table(self) -> pd.DataFrame:
        """One row per usable record: set, split, label source, minutes, apnea minutes, apnea index, the class
        from the challenge rule (``record_class``) and, for the learning set, the class its name gives."""
        rows = []
        for record, m in self.index.items():
            s = apnea_record_summary(m.labels, m.minutes)
            rows.append({
                "record": record,
                "set": "test" if record.startswith("x") else "learning",
                "split": self._split_of(record),
                "label_source": m.label_source,
                "signal_minutes": m.sig_len / (MINUTE_SECONDS * m.fs),
                "usable_minutes": int(m.usable.sum()),
                **s,
                "name_class": None if record.startswith("x") else record[0].upper(),
            })
        return pd.DataFrame(rows).set_index("record")

    # ------------------------------------------------------------------ tasks and splits
    def label_sets(self, task: str) -> pd.Series:
        """``["A"]`` or ``["N"]`` per usable minute id for the ``apnea`` task."""
        if task != "apnea":
            raise ValueError(f"Unknown Apnea-ECG task {task!r}; available: ['apnea']")
        ids, labs = [], []
        for record, m in self.index.items():
            for k, lab, ok in zip(m.minutes, m.labels, m.usable):
                if ok:
                    ids.append(minute_id(record, int(k)))
                    labs.append([lab])
        return pd.Series(labs, index=pd.Index(ids, dtype=object), dtype=object)

    def task(self, name: str) -> ClassificationTask:
        """The ``apnea`` task: one label per minute, ``N`` or ``A`` (softmax, index 1 is apnea)."""
        if name != "apnea":
            raise ValueError(f"Unknown Apnea-ECG task {name!r}; available: ['apnea']")
        return ClassificationTask(
            name="apnea_ecg/apnea",
            labels=list(APNEA_LABELS),
            problem_type="single_label_classification",
            description=f"Apnea-ECG per-minute apnea (CinC 2000 event 2), ±{self.context_minutes} min context",
            primary_metric="accuracy",
        )

    def _split_of(self, record: str) -> str:
        if record.startswith("x"):
            return "test"
        return "validation" if record in self.validation_records else "train"

    def split_records(self, split: str) -> list[str]:
        """Records of ``train``, ``validation``, ``test`` (x01-x35) or ``learning`` (train + validation)."""
        if split not in APNEA_SPLITS:
            raise ValueError(f"Unknown split {split!r}; available: {list(APNEA_SPLITS)}")
        if split == "learning":
            return [r for r in self.records if not r.startswith("x")]
        return [r for r in self.records if self._split_of(r) == split]

    def split_ids(self, task: ClassificationTask | str, split: str) -> list[str]:
        """Minute ids of one split, records in order, minutes in time order."""
        name = task.name.split("/", 1)[-1] if isinstance(task, ClassificationTask) else task
        records = set(self.split_records(split))
        return [i for i in self.label_sets(name).index if _parse_id(i)[0] in records]

    # ------------------------------------------------------------------ signals
    def read_record(self, record: str) -> ECGRecord:
        """The whole night in mV, the channel renamed to ``lead_name`` if one was given."""
        rec = read_wfdb(self.root / record, record_id=record)
        if self.lead_name is not None:
            if len(rec.lead_names) != 1:
                raise RecordError(record, "bad_signal", f"lead_name= needs a single-channel record, got {rec.lead_names}")
            rec.lead_names = [self.lead_name]
        return rec

    def iter_records(self, ids: list[Any] | None = None) -> Iterator[tuple[str, ECGRecord | RecordError]]:
        """Yield ``(minute_id, segment)`` for each requested minute (all usable minutes by default).

        Each recording is read once; all of its requested minutes are cut from that read.

        Raises:
            ValueError: for an id that is not a usable labelled minute of this source.
        """
        if ids is None:
            ids = list(self.label_sets("apnea").index)
        by_record: dict[str, list[tuple[str, int, int]]] = {}
        for i in ids:
            record, k = _parse_id(i)
            m = self.index.get(record)
            pos = int(np.searchsorted(m.minutes, k)) if m is not None else -1
            if m is None or pos >= len(m.minutes) or m.minutes[pos] != k or not m.usable[pos]:
                raise ValueError(f"{i!r} is not a usable labelled Apnea-ECG minute (see record_table() and report)")
            by_record.setdefault(record, []).append((str(i), k, pos))
        c = self.context_minutes
        for record, wanted in by_record.items():
            m = self.index[record]
            spm = int(MINUTE_SECONDS * m.fs)
            try:
                full = self.read_record(record)
                if full.signal.shape[1] != m.sig_len:
                    raise RecordError(record, "truncated", f"{full.signal.shape[1]} samples read, header says {m.sig_len}")
            except RecordError as e:
                for sid, _, _ in wanted:
                    yield sid, e
                continue
            for sid, k, pos in wanted:
                start, stop = (k - c) * spm, (k + 1 + c) * spm
                yield sid, ECGRecord(
                    signal=full.signal[:, start:stop].copy(),
                    sampling_rate=full.sampling_rate,
                    lead_names=list(full.lead_names),
                    record_id=sid,
                    units=full.units,
                    comments=list(full.comments),
                    meta={"record": record, "minute": k, "start": start, "context_minutes": c,
                          "label": m.labels[pos], "lead_name": self.lead_name},
                )
            del full

    def fingerprint(self) -> dict[str, object]:
        """What identifies this source's segments in a cache key."""
        return {
            "source": self.name,
            "root": str(self.root.resolve()),
            "context_minutes": self.context_minutes,
            "lead_name": self.lead_name,
        }


__all__ = [
    "APNEA_LABELS",
    "APNEA_LEARNING_RECORDS",
    "APNEA_TEST_RECORDS",
    "APNEA_VALIDATION_RECORDS",
    "ApneaECG",
    "apnea_record_class",
    "apnea_record_summary",
    "minute_id",
    "parse_event2_answers",
    "record_level_metrics",
]
