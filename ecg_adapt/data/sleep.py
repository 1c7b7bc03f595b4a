"""Sleep staging from the ECG: MIT-BIH Polysomnographic (``slpdb``), SHHS and MESA (NSRR), 30 s epochs.

The unit is one scored epoch; its id is ``"<record>/<k>"`` and it covers the ECG samples
``[k * 30 * fs, (k + 1) * 30 * fs)`` of the recording (with ``context_epochs=c``, the window
``[(k - c) * 30 * fs, (k + c + 1) * 30 * fs)``: the labelled epoch in its centre). Each recording is read
once per :meth:`~SleepStagingSource.iter_records` call and cut into its epochs.

**Stages.** Both datasets were scored with Rechtschaffen & Kales rules; R&K stages 3 and 4 are merged into
AASM N3, giving the 5-class vocabulary ``W, N1, N2, N3, REM``. Movement time (slpdb ``MT``, NSRR
``Movement|6``), unscored epochs (NSRR ``Unscored|9``) and epochs without any stage annotation are not
labels: they are left out of every task and counted per record in :meth:`~SleepStagingSource.epoch_counts`.
The tasks merge the five stages (:data:`STAGE_MERGES`): ``stages5``; ``stages4`` = W / light (N1+N2) /
deep (N3) / REM (Sridhar et al. 2020); ``stages3`` = W / NREM / REM; ``stages2`` = wake / sleep. All are
single-label. Score them with :func:`ecg_adapt.tasks.staging.staging_metrics` (Cohen's kappa, as the
published ECG-staging results are reported).

**Layouts read** (nothing is downloaded):

* ``slpdb`` (PhysioNet ``slpdb`` 1.0.0): ``<root>/<record>.{hea,dat,st}`` (and ``RECORDS``); the ECG is the
  signal named ``ECG``; ``.st`` holds one NOTE annotation per 30 s epoch whose ``aux_note`` starts with the
  stage (``W``, ``1``-``4``, ``R``, ``MT``) followed by optional event codes (``1 OA``, ``2 H`` ...). The
  annotation of the first epoch sits at sample 1 instead of 0 (as sleepecg's reader notes), so an
  annotation may sit up to one sample after its epoch boundary. 18 records from 16 subjects: ``slp01a`` /
  ``slp01b`` and ``slp02a`` / ``slp02b`` are halves of one night each and share a subject.
* SHHS: ``<root>/polysomnography/edfs/shhs1/shhs1-200001.edf`` and
  ``<root>/polysomnography/annotations-events-nsrr/shhs1/shhs1-200001-nsrr.xml`` (``shhs2`` alike); the ECG
  channel is ``ECG``. The subject is the ``nsrrid`` (``200001``), shared by a participant's two visits.
* MESA: ``<root>/polysomnography/edfs/mesa-sleep-0001.edf`` and
  ``<root>/polysomnography/annotations-events-nsrr/mesa-sleep-0001-nsrr.xml``; the ECG channel is ``EKG``.

NSRR XML: ``<PSGAnnotation><EpochLength>30</EpochLength><ScoredEvents><ScoredEvent>`` with ``EventType``
``Stages|Stages``, ``EventConcept`` (``Wake|0``, ``Stage 1 sleep|1`` ... ``Stage 4 sleep|4``,
``REM sleep|5``, ``Movement|6``, ``Unscored|9``), ``Start`` and ``Duration`` in seconds (runs of equal stages
are one event whose duration is a multiple of the epoch). The sampling rate always comes from the file
header (SHHS-1 records its ECG at 125 Hz), never from a constant.

**Problems** (a missing annotation file, EDF or ECG channel, stages running past the end of the ECG, a start
or duration that is not on the 30 s grid, overlapping or unknown stages, an annotation between epoch
boundaries) go into ``self.report`` (a :class:`~ecg_adapt.data.SkipReport`); ``on_error="raise"`` stops at
the first one. Records that cannot be used are left out of the labels and splits.

**Splits.** None of these datasets has an official split, so subjects are split deterministically: sorted
by ``sha256("<split_seed>:<subject>")`` and cut into test / validation / train by ``split_fractions``
(default 0.7 / 0.15 / 0.15, at least one subject in each split when there are three or more). A subject's
records (slpdb ``a``/``b`` halves, SHHS visits 1 and 2) are always in one split. The split depends only on
the set of subjects present: adding or removing records can move other subjects.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import xml.etree.ElementTree as ET
from glob import escape as glob_escape
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import wfdb

from ..tasks.task import ClassificationTask
from .base import OnError, SkipReport, register_source
from .edf import EDFHeader, read_edf_channel, read_edf_header, read_edf_signal
from .record import ECGRecord, RecordError, find_channel, read_wfdb_channel, read_wfdb_header

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------- stages
SLEEP_STAGES: tuple[str, ...] = ("W", "N1", "N2", "N3", "REM")
"""The 5-class (AASM) vocabulary every source maps its stages to; R&K stages 3 and 4 are both N3."""

STAGE_MERGES: dict[str, dict[str, str]] = {
    "stages5": {"W": "W", "N1": "N1", "N2": "N2", "N3": "N3", "REM": "REM"},
    "stages4": {"W": "W", "N1": "light", "N2": "light", "N3": "deep", "REM": "REM"},
    "stages3": {"W": "W", "N1": "NREM", "N2": "NREM", "N3": "NREM", "REM": "REM"},
    "stages2": {"W": "wake", "N1": "sleep", "N2": "sleep", "N3": "sleep", "REM": "sleep"},
}
"""Task name → how each of the five stages is labelled in that task (classes in order of appearance)."""

STAGING_TASKS: tuple[str, ...] = tuple(STAGE_MERGES)
SLEEP_SPLITS: tuple[str, ...] = ("train", "validation", "test")

# Codes of epochs that carry no label (negative, next to the stage indices 0-4 in a hypnogram array).
UNANNOTATED, MOVEMENT, UNSCORED, CONFLICT = -1, -2, -3, -4
EXCLUSION_NAMES: dict[int, str] = {UNANNOTATED: "unannotated", MOVEMENT: "movement", UNSCORED: "unscored", CONFLICT: "conflict"}

# slpdb: the first character of the .st aux_note (PhysioNet slpdb README.st: W, 1, 2, 3, 4, R, MT).
SLPDB_STAGE_CODES: dict[str, int] = {"W": 0, "1": 1, "2": 2, "3": 3, "4": 3, "R": 4, "M": MOVEMENT}

# NSRR harmonised XML EventConcept strings (the R&K code after the bar).
NSRR_STAGE_CONCEPTS: dict[str, int] = {
    "Wake|0": 0,
    "Stage 1 sleep|1": 1,
    "Stage 2 sleep|2": 2,
    "Stage 3 sleep|3": 3,
    "Stage 4 sleep|4": 3,
    "REM sleep|5": 4,
    "Movement|6": MOVEMENT,
    "Unscored|9": UNSCORED,
}
NSRR_STAGE_EVENT_TYPE = "Stages|Stages"


def stage_labels(task: str) -> list[str]:
    """The class names of a staging task, in order (``stages4`` → ``['W', 'light', 'deep', 'REM']``).

    Example:
        >>> stage_labels("stages3")
        ['W', 'NREM', 'REM']
    """
    if task not in STAGE_MERGES:
        raise ValueError(f"Unknown sleep-staging task {task!r}; available: {list(STAGING_TASKS)}")
    return list(dict.fromkeys(STAGE_MERGES[task].values()))


def merge_stages(stages: Sequence[str], task: str) -> list[str]:
    """Map 5-class stage names (``W``, ``N1``, ``N2``, ``N3``, ``REM``) to the classes of ``task``.

    Example:
        >>> merge_stages(["W", "N1", "N3", "REM"], "stages4")
        ['W', 'light', 'deep', 'REM']
    """
    if task not in STAGE_MERGES:
        raise ValueError(f"Unknown sleep-staging task {task!r}; available: {list(STAGING_TASKS)}")
    merge = STAGE_MERGES[task]
    unknown = sorted({s for s in stages if s not in merge})
    if unknown:
        raise ValueError(f"Unknown stage name(s) {unknown}; the 5-class vocabulary is {list(SLEEP_STAGES)}")
    return [merge[s] for s in stages]


def staging_task(task: str, source: str = "sleep") -> ClassificationTask:
    """The single-label :class:`ClassificationTask` ``"<source>/<task>"`` with the task's classes in order."""
    labels = stage_labels(task)
    return ClassificationTask(
        name=f"{source}/{task}",
        labels=labels,
        problem_type="single_label_classification",
        primary_metric="kappa",
        description=(
            f"{source} sleep stages per 30 s ECG epoch, {len(labels)} classes {labels} "
            "(R&K 3+4 = N3; movement and unscored epochs excluded); report Cohen's kappa (staging_metrics)"
        ),
    )


# ---------------------------------------------------------------------------------------------- sources
@dataclass
class SleepRecording:
    """One usable recording: where its ECG is, its rate and length, its subject and its hypnogram.

    ``stages[k]`` is the 5-class index (0-4 for W, N1, N2, N3, REM) of epoch ``k`` or a negative exclusion
    code (:data:`EXCLUSION_NAMES`); its length is the number of whole epochs in the ECG.
    """

    record: str
    subject: str
    sampling_rate: float
    n_samples: int
    channel: str
    stages: np.ndarray
    past_end: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


class SleepStagingSource(ABC):
    """What slpdb, SHHS and MESA share: epochs as units, stage tasks, subject splits, one read per recording.

    Subclasses find the recordings (:meth:`_candidates`), index one (:meth:`_index`: rate, length, subject,
    hypnogram; cheap, headers and annotations only) and read its ECG (:meth:`_read_ecg`, in mV).

    Args:
        epoch_seconds: the scoring epoch (30 s in all three datasets).
        context_epochs: epochs on each side of the labelled one in every window (0: the epoch alone).
            Epochs whose window would run past either end of the recording are left out (counted as
            ``context_edge``).
        lead_name: the lead name given to the ECG channel in the yielded records (``None``: the channel's
            own label, e.g. ``ECG``). PSG ECG is one bipolar lead; name it for the backbone's contract, e.g.
            ``"I"`` for the 1-lead ECGFounder or ``"II"`` with ``missing_leads="mask"`` for 12-lead ones.
        records: only these recordings (names as in the dataset); ``None``: all found.
        split_fractions: (train, validation, test) fractions of subjects.
        split_seed: changes the subject order used for the split.
        on_error: ``"skip"`` (problems go to ``self.report``) or ``"raise"``.
    """

    name = "sleep"
    citation = ""

    def __init__(
        self,
        epoch_seconds: float = 30.0,
        context_epochs: int = 0,
        lead_name: str | None = None,
        records: Sequence[str] | None = None,
        split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
        split_seed: int = 0,
        on_error: OnError = "skip",
    ) -> None:
        if epoch_seconds <= 0:
            raise ValueError(f"epoch_seconds must be positive, got {epoch_seconds}")
        if int(context_epochs) != context_epochs or context_epochs < 0:
            raise ValueError(f"context_epochs must be a non-negative integer, got {context_epochs!r}")
        if len(split_fractions) != 3 or any(f < 0 for f in split_fractions) or abs(sum(split_fractions) - 1) > 1e-6:
            raise ValueError(f"split_fractions must be three non-negative numbers summing to 1, got {split_fractions}")
        self.epoch_seconds = float(epoch_seconds)
        self.context_epochs = int(context_epochs)
        self.lead_name = lead_name
        self.split_fractions = tuple(float(f) for f in split_fractions)
        self.split_seed = int(split_seed)
        self.report = SkipReport(self.name, on_error)
        candidates = self._candidates()
        if records is not None:
            unknown = sorted(set(records) - set(candidates))
            if unknown:
                raise ValueError(f"{self.name}: no recording(s) {unknown} under {self.root}; found {len(candidates)}, "
                                 f"e.g. {candidates[:5]}")
            candidates = [c for c in candidates if c in set(records)]
        self.recordings: dict[str, SleepRecording] = {}
        for rec in candidates:
            try:
                self.recordings[rec] = self._index(rec)
            except RecordError as e:
                self.report.add_error(e)
        if not self.recordings:
            logger.warning("%s: no usable recording under %s (%s)", self.name, self.root, self.report.summary())
        self.report.log()
        self._split_of = self._assign_splits()

    # ------------------------------------------------------------------ to implement
    root: Path

    @abstractmethod
    def _candidates(self) -> list[str]:
        """Names of all recordings found on disk (sorted)."""

    @abstractmethod
    def _index(self, record: str) -> SleepRecording:
        """Headers and annotations of one recording (no signal). Raises :class:`RecordError`."""

    @abstractmethod
    def _read_ecg(self, recording: SleepRecording) -> np.ndarray:
        """The whole ECG of one recording, shape ``(n_samples,)`` in mV. Raises :class:`RecordError`."""

    # ------------------------------------------------------------------ epochs
    def epoch_samples(self, sampling_rate: float) -> int:
        """Samples per epoch at ``sampling_rate`` (an error if the epoch is not a whole number of samples)."""
        n = self.epoch_seconds * sampling_rate
        if abs(n - round(n)) > 1e-6:
            raise ValueError(f"a {self.epoch_seconds} s epoch is {n} samples at {sampling_rate} Hz, not a whole number")
        return round(n)

    def _n_epochs(self, record: str, sampling_rate: float, n_samples: int) -> int:
        try:
            return n_samples // self.epoch_samples(sampling_rate)
        except ValueError as e:
            raise RecordError(record, "bad_signal", str(e)) from e

    def _place(self, record: str, stages: np.ndarray, epoch_stages: dict[int, int]) -> int:
        """Write ``{epoch: code}`` into ``stages``; returns how many epochs lie past its end."""
        past = 0
        for k, code in epoch_stages.items():
            if k >= len(stages):
                past += 1
            else:
                stages[k] = code
        return past

    def _report_past_end(self, rec: SleepRecording) -> None:
        if rec.past_end:
            self.report.add(
                rec.record, "stages_past_end",
                f"{rec.past_end} epoch(s) of stages run past the end of the ECG ({rec.n_samples / rec.sampling_rate:.0f} s, "
                f"{len(rec.stages)} whole epochs); they are dropped",
            )

    def _window_bounds(self, rec: SleepRecording, k: int) -> tuple[int, int]:
        e = self.epoch_samples(rec.sampling_rate)
        return (k - self.context_epochs) * e, (k + self.context_epochs + 1) * e

    def _labelled_epochs(self, rec: SleepRecording) -> np.ndarray:
        k = np.flatnonzero(rec.stages >= 0)
        c = self.context_epochs
        return k[(k >= c) & (k + c < len(rec.stages))]

    def epochs_of(self, record: str) -> list[str]:
        """The unit ids of one recording's labelled epochs, in time order (for sequence models)."""
        rec = self._recording(record)
        return [f"{record}/{k}" for k in self._labelled_epochs(rec)]

    def hypnogram(self, record: str) -> list[str | None]:
        """The 5-class stage of every whole epoch of a recording, ``None`` where it carries no label."""
        rec = self._recording(record)
        return [SLEEP_STAGES[s] if s >= 0 else None for s in rec.stages]

    def epoch_span(self, unit: str) -> tuple[int, int]:
        """``(start, stop)`` sample indices of the window of ``"<record>/<k>"`` in its recording's ECG."""
        record, k = self.parse_unit(unit)
        return self._window_bounds(self._recording(record), k)

    @staticmethod
    def parse_unit(unit: str) -> tuple[str, int]:
        """``"shhs1-200001/17"`` → ``("shhs1-200001", 17)``."""
        record, sep, k = str(unit).rpartition("/")
        if not sep or not k.isdigit():
            raise ValueError(f"{unit!r} is not an epoch id '<record>/<epoch index>'")
        return record, int(k)

    def _recording(self, record: str) -> SleepRecording:
        if record not in self.recordings:
            raise KeyError(f"{self.name}: no usable recording {record!r} (see .report for skipped ones)")
        return self.recordings[record]

    def epoch_counts(self) -> pd.DataFrame:
        """Per recording: its subject, epochs per stage, and epochs without a label by reason (``movement``,
        ``unscored``, ``unannotated``, ``conflict``, ``past_end``, and ``context_edge`` when windows need context)."""
        rows = []
        for name, rec in self.recordings.items():
            row: dict[str, Any] = {"record": name, "subject": rec.subject}
            for i, stage in enumerate(SLEEP_STAGES):
                row[stage] = int((rec.stages == i).sum())
            for code, reason in EXCLUSION_NAMES.items():
                row[reason] = int((rec.stages == code).sum())
            row["past_end"] = rec.past_end
            if self.context_epochs:
                row["context_edge"] = int((rec.stages >= 0).sum()) - len(self._labelled_epochs(rec))
            rows.append(row)
        columns = ["record", "subject", *SLEEP_STAGES, *EXCLUSION_NAMES.values(), "past_end"]
        if self.context_epochs:
            columns.append("context_edge")
        return pd.DataFrame(rows, columns=columns).set_index("record")

    # ------------------------------------------------------------------ labels, tasks, splits
    def task(self, name: str) -> ClassificationTask:
        """The single-label staging task ``name`` (``stages5``, ``stages4``, ``stages3``, ``stages2``)."""
        return staging_task(name, self.name)

    def label_sets(self, task: str) -> pd.Series:
        """Label (a one-element list) per epoch id ``"<record>/<k>"``, for every labelled epoch."""
        merge = STAGE_MERGES.get(task)
        if merge is None:
            raise ValueError(f"Unknown sleep-staging task {task!r}; available: {list(STAGING_TASKS)}")
        names = [merge[s] for s in SLEEP_STAGES]
        ids: list[str] = []
        labels: list[list[str]] = []
        for record, rec in self.recordings.items():
            for k in self._labelled_epochs(rec):
                ids.append(f"{record}/{k}")
                labels.append([names[rec.stages[k]]])
        return pd.Series(labels, index=pd.Index(ids, dtype=object, name="epoch"), dtype=object, name=task)

    def subject_of(self, record_or_unit: str) -> str:
        """The subject of a recording or of an epoch id."""
        record = str(record_or_unit)
        if record not in self.recordings and "/" in record:
            record = self.parse_unit(record)[0]
        return self._recording(record).subject

    def _assign_splits(self) -> dict[str, str]:
        subjects = sorted({rec.subject for rec in self.recordings.values()},
                          key=lambda s: hashlib.sha256(f"{self.split_seed}:{s}".encode()).hexdigest())
        n = len(subjects)
        _, f_val, f_test = self.split_fractions
        n_test, n_val = round(n * f_test), round(n * f_val)
        if n >= 3:  # every split gets a subject when it asks for some
            n_test = max(n_test, 1) if f_test > 0 else 0
            n_val = max(n_val, 1) if f_val > 0 else 0
        n_test = min(n_test, n)
        n_val = min(n_val, n - n_test)
        out = {s: "test" for s in subjects[:n_test]}
        out.update({s: "validation" for s in subjects[n_test: n_test + n_val]})
        out.update({s: "train" for s in subjects[n_test + n_val:]})
        return out

    def subject_splits(self) -> dict[str, str]:
        """Subject → ``train`` / ``validation`` / ``test``."""
        return dict(self._split_of)

    def split_records(self, split: str) -> list[str]:
        """The recordings whose subject is in ``split``."""
        if split not in SLEEP_SPLITS:
            raise ValueError(f"Unknown split {split!r}; available: {list(SLEEP_SPLITS)}")
        return [r for r, rec in self.recordings.items() if self._split_of[rec.subject] == split]

    def split_ids(self, task: ClassificationTask | str, split: str) -> list[str]:
        """Epoch ids of one split (subject-disjoint), recording by recording in time order."""
        name = task.name.split("/", 1)[-1] if isinstance(task, ClassificationTask) else task
        stage_labels(name)  # validates the task name
        return [u for r in self.split_records(split) for u in self.epochs_of(r)]

    # ------------------------------------------------------------------ signals
    def iter_records(self, ids: list[str] | None = None) -> Iterator[tuple[str, ECGRecord | RecordError]]:
        """Yield ``(epoch id, ECGRecord)`` with the epoch's (or context window's) ECG in mV, or
        ``(epoch id, RecordError)`` for an epoch that cannot be given (unknown recording, unreadable ECG,
        window outside the recording).

        Each recording is read once: the ids are grouped by recording (recordings in order of first
        appearance, epochs in the order given). ``ids=None`` yields every labelled epoch.
        """
        if ids is None:
            ids = [u for r in self.recordings for u in self.epochs_of(r)]
        by_record: dict[str, list[tuple[str, int | None]]] = {}
        for unit in ids:
            try:
                record, k = self.parse_unit(unit)
            except ValueError:
                record, k = str(unit), None
            by_record.setdefault(record, []).append((str(unit), k))
        for record, units in by_record.items():
            rec = self.recordings.get(record)
            if rec is None:
                for unit, _ in units:
                    yield unit, RecordError(unit, "unknown_record", f"{self.name} has no usable recording {record!r}")
                continue
            try:
                ecg = self._read_ecg(rec)
            except RecordError as e:
                for unit, _ in units:
                    yield unit, RecordError(unit, e.reason, e.detail)
                continue
            if ecg.shape[0] != rec.n_samples:
                for unit, _ in units:
                    yield unit, RecordError(unit, "bad_signal", f"{record}: read {ecg.shape[0]} samples, header says {rec.n_samples}")
                continue
            lead = self.lead_name or rec.channel
            for unit, k in units:
                if k is None:
                    yield unit, RecordError(unit, "unknown_record", f"{unit!r} is not an epoch id '<record>/<epoch>'")
                    continue
                start, stop = self._window_bounds(rec, k)
                if start < 0 or stop > rec.n_samples:
                    yield unit, RecordError(unit, "out_of_range", f"window [{start}, {stop}) is outside the ECG "
                                            f"(0-{rec.n_samples} samples, context_epochs={self.context_epochs})")
                    continue
                stage = int(rec.stages[k])
                yield unit, ECGRecord(
                    signal=ecg[None, start:stop],
                    sampling_rate=rec.sampling_rate,
                    lead_names=[lead],
                    record_id=unit,
                    units=["mV"],
                    meta={"record": record, "subject": rec.subject, "epoch": k, "start_sample": start,
                          "stage": SLEEP_STAGES[stage] if stage >= 0 else None},
                )

    def fingerprint(self) -> dict[str, object]:
        """What identifies this source (and the windows it yields) in a cache key."""
        return {
            "source": self.name,
            "root": str(Path(self.root).resolve()),
            "epoch_seconds": self.epoch_seconds,
            "context_epochs": self.context_epochs,
            "lead_name": self.lead_name,
            **self._fingerprint_extra(),
        }

    def _fingerprint_extra(self) -> dict[str, object]:
        return {}

    def __len__(self) -> int:
        return len(self.recordings)


# ------------------------------------------------------------------------------------------------ slpdb
SLPDB_CITATION = (
    "Ichimaru Y, Moody GB. Development of the polysomnographic database on CD-ROM. Psychiatry and Clinical "
    "Neurosciences 53:175-177 (1999). Goldberger et al., PhysioBank, PhysioToolkit, and PhysioNet, "
    "Circulation 101(23) (2000)."
)
# Sleep-stage annotations sit on epoch boundaries; the first epoch's at sample 1 rather than 0.
_SLPDB_MAX_OFFSET = 1


class SlpDB(SleepStagingSource):
    """The MIT-BIH Polysomnographic Database (PhysioNet ``slpdb``) on disk: WFDB records with ``.st`` stages.

    Args:
        root: the folder holding ``<record>.hea``, ``.dat`` and ``.st`` (and ``RECORDS``).
        ecg_channel: the signal name(s) of the ECG, matched case-insensitively (``ECG`` in every record).
        **kwargs: see :class:`SleepStagingSource` (``context_epochs``, ``lead_name``, ``records``, ...).

    Example:
        >>> db = SlpDB("/data/slpdb/1.0.0", lead_name="I")        # doctest: +SKIP
        >>> task = db.task("stages4"); task.labels                  # doctest: +SKIP
        ['W', 'light', 'deep', 'REM']
        >>> db.split_ids(task, "test")[:2]                          # doctest: +SKIP
        ['slp03/0', 'slp03/1']
    """

    name = "slpdb"
    citation = SLPDB_CITATION

    def __init__(self, root: str | os.PathLike, ecg_channel: str | Sequence[str] = "ECG", **kwargs: Any) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"slpdb folder {self.root} does not exist: download PhysioNet slpdb and point here")
        self.ecg_channels = [ecg_channel] if isinstance(ecg_channel, str) else list(ecg_channel)
        super().__init__(**kwargs)

    @staticmethod
    def subject_of_record(record: str) -> str:
        """``slp01a`` and ``slp01b`` (halves of one night) → ``slp01``; other names are their own subject."""
        m = re.fullmatch(r"(slp\d+)[ab]", record)
        return m.group(1) if m else record

    def _candidates(self) -> list[str]:
        listing = self.root / "RECORDS"
        if listing.exists():
            names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        else:
            names = [p.stem for p in self.root.glob("*.hea")]
        return sorted(set(names))

    def _fingerprint_extra(self) -> dict[str, object]:
        return {"ecg_channel": self.ecg_channels}

    def recording_files(self, record: str) -> list[Path]:
        """The files one recording is read from (``<record>.*``: header, signals, stages), for the store's key."""
        return sorted(self.root.glob(f"{glob_escape(record)}.*"))

    def _index(self, record: str) -> SleepRecording:
        path = self.root / record
        header = read_wfdb_header(path, record)  # missing_file / corrupt_header
        channel = find_channel(header.sig_name or [], self.ecg_channels)
        if channel is None:
            raise RecordError(record, "missing_ecg", f"no signal named {self.ecg_channels} (signals: {header.sig_name})")
        st = path.with_suffix(".st")
        if not st.exists():
            raise RecordError(record, "missing_annotation", f"no sleep-stage annotation file {st}")
        try:
            ann = wfdb.rdann(str(path), "st")
        except Exception as e:
            raise RecordError(record, "corrupt_annotation", f"{st.name}: {type(e).__name__}: {e}") from e
        fs = float(header.fs)
        n_samples = int(header.sig_len)
        stages = np.full(self._n_epochs(record, fs, n_samples), UNANNOTATED, dtype=np.int8)
        e = self.epoch_samples(fs)
        placed: dict[int, int] = {}
        for sample, note in zip(ann.sample, ann.aux_note or [""] * len(ann.sample)):
            text = (note or "").strip().rstrip("\x00")
            code = SLPDB_STAGE_CODES.get(text[:1]) if text else None
            if code is None:
                self.report.add(record, "unknown_stage", f"annotation at sample {sample}: aux_note {note!r} does not "
                                "start with a stage (W, 1, 2, 3, 4, R, MT)")
                continue
            k, offset = divmod(int(sample), e)
            if offset > _SLPDB_MAX_OFFSET:
                self.report.add(record, "misaligned_annotation", f"stage {text!r} at sample {sample} is {offset} samples "
                                f"after the boundary of epoch {k} ({e} samples per epoch); ignored")
                continue
            if k in placed:
                if placed[k] != CONFLICT:
                    self.report.add(record, "overlapping_stages", f"two stage annotations in epoch {k}; the epoch is excluded")
                placed[k] = CONFLICT
                continue
            placed[k] = code
        past = self._place(record, stages, placed)
        age, weight = None, None
        if header.comments:
            parts = header.comments[0].split()
            if len(parts) >= 3:
                age = None if parts[0] == "x" else parts[0]
                weight = None if parts[2] == "x" else parts[2]
        rec = SleepRecording(
            record=record, subject=self.subject_of_record(record), sampling_rate=fs, n_samples=n_samples,
            channel=header.sig_name[channel], stages=stages, past_end=past,
            meta={"channel_index": channel, "age": age, "weight_kg": weight},
        )
        self._report_past_end(rec)
        return rec

    def _read_ecg(self, recording: SleepRecording) -> np.ndarray:
        return read_wfdb_channel(self.root / recording.record, recording.meta["channel_index"], recording.record)


# ------------------------------------------------------------------------------------------------ NSRR
SHHS_CITATION = (
    "Quan SF, Howard BV, Iber C, et al. The Sleep Heart Health Study: design, rationale, and methods. Sleep "
    "20(12):1077-1085 (1997). Zhang GQ, Cui L, Mueller R, et al. The National Sleep Research Resource: towards "
    "a sleep data commons. J Am Med Inform Assoc 25(10):1351-1358 (2018)."
)
MESA_CITATION = (
    "Chen X, Wang R, Zee P, et al. Racial/ethnic differences in sleep disturbances: the Multi-Ethnic Study of "
    "Atherosclerosis (MESA). Sleep 38(6):877-888 (2015). Zhang GQ, Cui L, Mueller R, et al. The National Sleep "
    "Research Resource: towards a sleep data commons. J Am Med Inform Assoc 25(10):1351-1358 (2018)."
)
NSRR_COHORTS: dict[str, dict[str, Any]] = {
    "shhs": {"visits": ("shhs1", "shhs2"), "ecg": ("ECG", "EKG"), "prefix": r"shhs[12]-", "citation": SHHS_CITATION},
    "mesa": {"visits": (), "ecg": ("EKG", "ECG"), "prefix": r"mesa-sleep-", "citation": MESA_CITATION},
}


def find_nsrr_root(path: str | os.PathLike) -> Path:
    """The cohort folder that holds ``polysomnography/`` (``path`` itself, or its parent when ``path`` is
    the ``polysomnography`` folder)."""
    path = Path(path)
    if (path / "polysomnography").is_dir():
        return path
    if path.name == "polysomnography" and path.is_dir():
        return path.parent
    raise FileNotFoundError(
        f"{path} has no polysomnography/ folder: point to the NSRR cohort folder (the one holding "
        "polysomnography/edfs and polysomnography/annotations-events-nsrr)"
    )


class NSRRSleep(SleepStagingSource):
    """SHHS or MESA from the National Sleep Research Resource, as downloaded (EDF + NSRR XML).

    Args:
        root: the cohort folder (holding ``polysomnography/``).
        cohort: ``"shhs"`` or ``"mesa"``.
        visit: SHHS ``"shhs1"`` (default), ``"shhs2"`` or ``"all"``; MESA has one sleep exam (leave ``None``).
        ecg_channel: the EDF label(s) of the ECG (default ``ECG`` for SHHS, ``EKG`` for MESA, then the other).
        **kwargs: see :class:`SleepStagingSource`.

    Example:
        >>> shhs = NSRRSleep("/data/shhs", cohort="shhs", visit="shhs1", lead_name="I")   # doctest: +SKIP
        >>> shhs.epoch_counts().sum(numeric_only=True)                                    # doctest: +SKIP
        >>> ids = shhs.split_ids("stages4", "test")                                       # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | os.PathLike,
        cohort: Literal["shhs", "mesa"] = "shhs",
        visit: str | None = None,
        ecg_channel: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if cohort not in NSRR_COHORTS:
            raise ValueError(f"Unknown NSRR cohort {cohort!r}; available: {list(NSRR_COHORTS)}")
        spec = NSRR_COHORTS[cohort]
        if spec["visits"]:
            visit = visit or spec["visits"][0]
            visits = spec["visits"] if visit == "all" else (visit,)
            bad = [v for v in visits if v not in spec["visits"]]
            if bad:
                raise ValueError(f"Unknown {cohort} visit {visit!r}; choose one of {list(spec['visits'])} or 'all'")
        elif visit is not None:
            raise ValueError(f"{cohort} has a single sleep exam: leave visit=None (got {visit!r})")
        else:
            visits = ()
        self.cohort = cohort
        self.visits = tuple(visits)
        self.name = cohort
        self.citation = spec["citation"]
        self.root = find_nsrr_root(root)
        if ecg_channel is None:
            self.ecg_channels = list(spec["ecg"])
        else:
            self.ecg_channels = [ecg_channel] if isinstance(ecg_channel, str) else list(ecg_channel)
        self._paths: dict[str, tuple[Path, Path]] = {}
        super().__init__(**kwargs)

    def _folders(self) -> list[tuple[Path, Path]]:
        psg = self.root / "polysomnography"
        subs = self.visits or ("",)
        return [(psg / "edfs" / s, psg / "annotations-events-nsrr" / s) for s in subs]

    def _candidates(self) -> list[str]:
        for edf_dir, xml_dir in self._folders():
            if not edf_dir.is_dir() and not xml_dir.is_dir():
                raise FileNotFoundError(f"{self.cohort}: neither {edf_dir} nor {xml_dir} exists; is {self.root} the "
                                        f"{self.cohort} folder?")
            names: set[str] = set()
            names.update(p.stem for p in edf_dir.glob("*.edf"))
            names.update(p.name[: -len("-nsrr.xml")] for p in xml_dir.glob("*-nsrr.xml"))
            for n in names:
                self._paths[n] = (edf_dir / f"{n}.edf", xml_dir / f"{n}-nsrr.xml")
        return sorted(self._paths)

    def _fingerprint_extra(self) -> dict[str, object]:
        return {"cohort": self.cohort, "visits": list(self.visits), "ecg_channel": self.ecg_channels}

    def recording_files(self, record: str) -> list[Path]:
        """The EDF and the NSRR XML of one recording, for the store's key."""
        return list(self._paths[record])

    def subject_of_record(self, record: str) -> str:
        """``shhs1-200001`` and ``shhs2-200001`` → ``200001``; ``mesa-sleep-0001`` → ``0001``."""
        return re.sub(f"^{NSRR_COHORTS[self.cohort]['prefix']}", "", record)

    def _index(self, record: str) -> SleepRecording:
        edf, xml = self._paths[record]
        if not xml.exists():
            raise RecordError(record, "missing_annotation", f"no NSRR annotation file {xml}")
        header = read_edf_header(edf, record)  # missing_file / corrupt_header / truncated
        channel = header.find(self.ecg_channels)
        if channel is None:
            raise RecordError(record, "missing_ecg", f"{edf.name} has no channel named {self.ecg_channels} "
                              f"(channels: {header.labels})")
        fs = header.sampling_rate(channel)
        n_samples = header.n_samples(channel)
        stages = np.full(self._n_epochs(record, fs, n_samples), UNANNOTATED, dtype=np.int8)
        placed = self._parse_xml(record, xml)
        past = self._place(record, stages, placed)
        rec = SleepRecording(
            record=record, subject=self.subject_of_record(record), sampling_rate=fs, n_samples=n_samples,
            channel=header.labels[channel].strip(), stages=stages, past_end=past,
            meta={"channel_index": channel, "edf": str(edf), "unit": header.physical_dimension[channel],
                  "start": f"{header.start_date} {header.start_time}"},
        )
        self._report_past_end(rec)
        return rec

    def _parse_xml(self, record: str, xml: Path) -> dict[int, int]:
        """``{epoch: stage code}`` from the ``Stages|Stages`` events of an NSRR XML file."""
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError as e:
            raise RecordError(record, "corrupt_annotation", f"{xml.name}: {e}") from e
        epoch_text = root.findtext("EpochLength")
        if epoch_text is None:
            raise RecordError(record, "corrupt_annotation", f"{xml.name} has no <EpochLength>")
        try:
            epoch_length = float(epoch_text)
        except ValueError as e:
            raise RecordError(record, "corrupt_annotation", f"{xml.name}: EpochLength {epoch_text!r}") from e
        if abs(epoch_length - self.epoch_seconds) > 1e-9:
            raise RecordError(record, "epoch_length_mismatch",
                              f"{xml.name} scores {epoch_length} s epochs, this source uses {self.epoch_seconds} s")
        placed: dict[int, int] = {}
        for event in root.iter("ScoredEvent"):
            if (event.findtext("EventType") or "").strip() != NSRR_STAGE_EVENT_TYPE:
                continue
            concept = (event.findtext("EventConcept") or "").strip()
            code = NSRR_STAGE_CONCEPTS.get(concept)
            if code is None:
                self.report.add(record, "unknown_stage", f"{xml.name}: EventConcept {concept!r} is not one of "
                                f"{list(NSRR_STAGE_CONCEPTS)}")
                continue
            try:
                start = float(event.findtext("Start") or "nan")
                duration = float(event.findtext("Duration") or "nan")
            except ValueError:
                start = duration = float("nan")
            first, n = start / epoch_length, duration / epoch_length
            if not (np.isfinite(first) and np.isfinite(n)) or first < 0 or n <= 0 \
                    or abs(first - round(first)) > 1e-6 or abs(n - round(n)) > 1e-6:
                self.report.add(record, "bad_stage_timing", f"{xml.name}: {concept} at Start={event.findtext('Start')!r} "
                                f"Duration={event.findtext('Duration')!r} is not on the {epoch_length:g} s epoch grid; ignored")
                continue
            for k in range(round(first), round(first) + round(n)):
                if k in placed:
                    if placed[k] != CONFLICT:
                        self.report.add(record, "overlapping_stages", f"{xml.name}: epoch {k} is scored twice; excluded")
                    placed[k] = CONFLICT
                else:
                    placed[k] = code
        return placed

    def _read_ecg(self, recording: SleepRecording) -> np.ndarray:
        return read_edf_channel(recording.meta["edf"], recording.meta["channel_index"], record_id=recording.record)


def open_slpdb(path: str | os.PathLike, **kwargs: Any) -> SlpDB:
    """``open_source("slpdb", path, ...)``."""
    return SlpDB(path, **kwargs)


def open_shhs(path: str | os.PathLike, **kwargs: Any) -> NSRRSleep:
    """``open_source("shhs", path, visit=..., ...)``."""
    return NSRRSleep(path, cohort="shhs", **kwargs)


def open_mesa(path: str | os.PathLike, **kwargs: Any) -> NSRRSleep:
    """``open_source("mesa", path, ...)``."""
    return NSRRSleep(path, cohort="mesa", **kwargs)


register_source("slpdb", open_slpdb)
register_source("shhs", open_shhs)
register_source("mesa", open_mesa)

__all__ = [
    "EXCLUSION_NAMES",
    "NSRR_STAGE_CONCEPTS",
    "SLEEP_SPLITS",
    "SLEEP_STAGES",
    "SLPDB_STAGE_CODES",
    "STAGE_MERGES",
    "STAGING_TASKS",
    "EDFHeader",
    "NSRRSleep",
    "SleepRecording",
    "SleepStagingSource",
    "SlpDB",
    "find_nsrr_root",
    "merge_stages",
    "open_mesa",
    "open_shhs",
    "open_slpdb",
    "read_edf_header",
    "read_edf_signal",
    "stage_labels",
    "staging_task",
]
