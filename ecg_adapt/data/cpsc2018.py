"""The China Physiological Signal Challenge 2018 (CPSC 2018, ICBEB) training set in its original layout.

Reads the data as the challenge distributed it::

    <root>/TrainingSet1/A0001.mat ... TrainingSet3/A6877.mat    MATLAB 5 file, struct ``ECG``:
                                                                ``sex`` ('Male'/'Female'), ``age``,
                                                                ``data`` 12 x N float64 in mV, 500 Hz
    <root>/.../REFERENCE.csv                                    Recording,First_label,Second_label,Third_label

(any nesting; ``REFERENCE.csv`` anywhere below ``root`` or given as ``reference=``). Labels are codes 1-9 in
the challenge's order: 1 Normal, 2 AF, 3 I-AVB, 4 LBBB, 5 RBBB, 6 PAC, 7 PVC, 8 STD, 9 STE; a record has one to
three. The leads are I, II, III, aVR, aVL, aVF, V1-V6. The same 6,877 recordings are the ``A`` records of the
PhysioNet/CinC 2020/2021 challenges (stored there as int16 with gain 1000/mV, with SNOMED CT labels).

Tasks:

* ``diagnosis``: multi-label over the 9 classes (all labels of a record).
* ``first_label``: single-label over the 9 classes (``First_label``, the one the challenge's scoring falls
  back to; see :func:`cpsc2018_score`).

Class names are, by default (``label_names="snomed"``), the CinC class names the challenge re-coded these
records with (checked against the CPSC column of the 2021 mapping files: exactly these 9 codes have CPSC
records), so models and labels carry over between the two: Normal ``426783006``, AF ``164889003``, I-AVB
``270492004``, LBBB ``733534002|164909002``, RBBB ``713427006|59118001``, PAC ``284470004|63593006``, PVC
``164884008`` (ventricular ectopics: the CinC data label CPSC's PVCs with this unscored code, not with the
scored ``427172004``), STD ``429622005``, STE ``164931005``. ``label_names="cpsc"`` uses the CPSC abbreviations.

The 2,954 test recordings were never released: splits are the seeded hash split of
:func:`ecg_adapt.data.cinc.hash_split` (80/10/10 by default; no patient ids are given).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.io
from sklearn.metrics import f1_score

from ..tasks.task import ClassificationTask
from .base import OnError, SkipReport, read_each, register_source
from .cinc import check_split_fractions, hash_split, mat_error_reason, signal_problems
from .record import ECGRecord, RecordError

logger = logging.getLogger(__name__)

CPSC2018_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
CPSC2018_SAMPLING_RATE = 500.0
CPSC2018_TASKS: tuple[str, ...] = ("diagnosis", "first_label")
REFERENCE_COLUMNS: tuple[str, ...] = ("Recording", "First_label", "Second_label", "Third_label")
CITATION = (
    "Liu, F., Liu, C., Zhao, L., et al. An open access database for evaluating the algorithms of electrocardiogram "
    "rhythm and morphology abnormality detection. Journal of Medical Imaging and Health Informatics 8(7), "
    "1368-1373 (2018)."
)


@dataclass(frozen=True)
class CPSC2018Class:
    """One of the nine CPSC 2018 classes."""

    code: int
    abbreviation: str
    description: str
    snomed: str  # the CinC class name (weight-table name for scored classes)


CPSC2018_CLASSES: tuple[CPSC2018Class, ...] = (
    CPSC2018Class(1, "Normal", "normal", "426783006"),
    CPSC2018Class(2, "AF", "atrial fibrillation", "164889003"),
    CPSC2018Class(3, "I-AVB", "first-degree atrioventricular block", "270492004"),
    CPSC2018Class(4, "LBBB", "left bundle branch block", "733534002|164909002"),
    CPSC2018Class(5, "RBBB", "right bundle branch block", "713427006|59118001"),
    CPSC2018Class(6, "PAC", "premature atrial contraction", "284470004|63593006"),
    CPSC2018Class(7, "PVC", "premature ventricular contraction", "164884008"),
    CPSC2018Class(8, "STD", "ST-segment depression", "429622005"),
    CPSC2018Class(9, "STE", "ST-segment elevation", "164931005"),
)
_RECORD_NAME = re.compile(r"^A\d{4}$")


def find_reference(root: Path) -> Path:
    """The single ``REFERENCE.csv`` below ``root``."""
    found = sorted(root.rglob("REFERENCE.csv"))
    if not found:
        raise FileNotFoundError(f"No REFERENCE.csv under {root}: it comes with the CPSC 2018 training set; "
                                "pass reference=PATH if it lives elsewhere")
    if len(found) > 1:
        raise ValueError(f"Several REFERENCE.csv under {root}: {[str(f) for f in found]}; pass reference=PATH")
    return found[0]


def cpsc2018_score(label_sets: Sequence[Sequence[int]], predictions: Sequence[int]) -> dict[str, Any]:
    """The CPSC 2018 challenge score: the mean of the nine per-class F1 values.

    A prediction (one class code per record) counts as correct when it is any of the record's labels;
    otherwise it is charged against the record's first label. Per class ``F1 = 2·N_cc / (N_c· + N_·c)`` over
    that confusion matrix, which is sklearn's F1 once the true class of each record is set that way. A class
    with no reference and no prediction has an undefined F1 (NaN), and so has the mean, as in the official
    scoring script.

    Example:
        >>> cpsc2018_score([[1], [2, 6], [5]], [1, 6, 1])["per_class"][:2]
        [0.6666666666666666, nan]
    """
    if len(label_sets) != len(predictions):
        raise ValueError(f"{len(label_sets)} label sets but {len(predictions)} predictions")
    truth = []
    for labels, pred in zip(label_sets, predictions):
        if not labels:
            raise ValueError("every record needs at least one reference label")
        truth.append(int(pred) if int(pred) in {int(x) for x in labels} else int(labels[0]))
    per_class = f1_score(truth, [int(p) for p in predictions], labels=list(range(1, 10)), average=None, zero_division=np.nan)
    return {"f1": float(np.mean(per_class)), "per_class": [float(v) for v in per_class],
            "classes": [c.abbreviation for c in CPSC2018_CLASSES]}


class CPSC2018:
    """The CPSC 2018 training set on disk.

    Args:
        root: the folder holding ``TrainingSet*/A*.mat`` (any nesting) and ``REFERENCE.csv``.
        reference: path of ``REFERENCE.csv`` when it is not below ``root``.
        label_names: ``"snomed"`` (CinC class names) or ``"cpsc"`` (Normal, AF, I-AVB, ...).
        split_seed, split_fractions: the hash split.
        on_error: ``"skip"`` reports problems in ``self.report`` (and yields ``RecordError``s); ``"raise"``
            raises the first one.

    Example:
        >>> ds = CPSC2018("/data/cpsc2018")                         # doctest: +SKIP
        >>> ds.task("diagnosis").labels[:3]                         # doctest: +SKIP
        ['426783006', '164889003', '270492004']
    """

    name = "cpsc2018"
    citation = CITATION

    def __init__(
        self,
        root: str | os.PathLike,
        reference: str | os.PathLike | None = None,
        label_names: Literal["snomed", "cpsc"] = "snomed",
        split_seed: int = 0,
        split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
        on_error: OnError = "skip",
    ) -> None:
        if label_names not in ("snomed", "cpsc"):
            raise ValueError(f"label_names must be 'snomed' or 'cpsc', got {label_names!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"CPSC 2018 folder {self.root} does not exist")
        self.reference_path = Path(reference) if reference is not None else find_reference(self.root)
        self.label_names = label_names
        self.class_names = [c.snomed if label_names == "snomed" else c.abbreviation for c in CPSC2018_CLASSES]
        self.split_seed = int(split_seed)
        self.split_fractions = check_split_fractions(split_fractions)
        self.on_error: OnError = on_error
        self.report = SkipReport(self.name, on_error)
        self._reported: set[tuple[str, str]] = set()
        self.records = self._index()
        logger.info("cpsc2018: %d records, %d labelled; %s", len(self.records), int(self.records["labelled"].sum()),
                    self.report.summary())
        self.report.log()

    def _add(self, record_id: str, reason: str, detail: str) -> None:
        if (record_id, reason) not in self._reported:
            self._reported.add((record_id, reason))
            self.report.add(record_id, reason, detail)

    def _index(self) -> pd.DataFrame:
        mats: dict[str, Path] = {}
        for mat in sorted(self.root.rglob("*.mat")):
            if not _RECORD_NAME.match(mat.stem):
                continue
            if mat.stem in mats:
                self._add(mat.stem, "duplicate_record", f"{mat} has the same name as {mats[mat.stem]}; using the first")
                continue
            mats[mat.stem] = mat
        ref = pd.read_csv(self.reference_path, dtype=str, keep_default_na=False)
        ref.columns = [str(c).strip() for c in ref.columns]
        missing = [c for c in REFERENCE_COLUMNS if c not in ref.columns]
        if missing:
            raise ValueError(f"{self.reference_path} lacks columns {missing} (expected {list(REFERENCE_COLUMNS)})")
        labels: dict[str, list[int]] = {}
        for row in ref.itertuples(index=False):
            rid = str(row.Recording).strip()
            if rid in labels:
                self._add(rid, "duplicate_record", f"{self.reference_path.name} lists {rid} more than once; using the first")
                continue
            codes: list[int] = []
            for raw in (row.First_label, row.Second_label, row.Third_label):
                raw = str(raw).strip()
                if not raw:
                    continue
                code = int(raw) if raw.isdigit() else -1  # "1".."9"; anything else is not a class code
                if not 1 <= code <= 9:
                    self._add(rid, "unknown_code", f"{self.reference_path.name}: label {raw!r} is not a class code 1-9; ignored")
                    continue
                if code not in codes:
                    codes.append(code)
            if not codes:
                self._add(rid, "missing_label", f"{self.reference_path.name} gives {rid} no valid label")
            labels[rid] = codes
        for rid in sorted(set(mats) - set(labels)):
            self._add(rid, "unlabelled", f"{mats[rid]} is not in {self.reference_path.name}; not in any task")
        ids = sorted(set(mats) | set(labels))
        if not ids:
            raise FileNotFoundError(f"No CPSC 2018 record (A*.mat) under {self.root} and none in {self.reference_path}")
        table = pd.DataFrame(
            {
                "path": [str(mats[r]) if r in mats else None for r in ids],
                "codes": [labels.get(r, []) for r in ids],
            },
            index=pd.Index(ids, name="record_id"),
        )
        table["labelled"] = table["codes"].apply(len) > 0
        return table

    def __len__(self) -> int:
        return len(self.records)

    # ------------------------------------------------------------------ labels and splits
    def label_sets(self, task: str) -> pd.Series:
        """Class names per record (labelled records only): all labels for ``diagnosis``, the first for
        ``first_label``."""
        if task not in CPSC2018_TASKS:
            raise ValueError(f"Unknown CPSC 2018 task {task!r}; available: {list(CPSC2018_TASKS)}")
        t = self.records[self.records["labelled"]]
        if task == "first_label":
            return t["codes"].apply(lambda codes: [self.class_names[codes[0] - 1]])
        return t["codes"].apply(lambda codes: [self.class_names[c - 1] for c in codes])

    def task(self, name: str) -> ClassificationTask:
        """The 9-class task ``name`` (classes in the challenge's order 1-9)."""
        if name not in CPSC2018_TASKS:
            raise ValueError(f"Unknown CPSC 2018 task {name!r}; available: {list(CPSC2018_TASKS)}")
        multi = name == "diagnosis"
        return ClassificationTask(
            name=f"cpsc2018/{name}",
            labels=list(self.class_names),
            problem_type="multi_label_classification" if multi else "single_label_classification",
            description="CPSC 2018 classes: " + ", ".join(c.abbreviation for c in CPSC2018_CLASSES)
            + ("" if multi else " (First_label only)"),
        )

    def split_of(self, record_id: str) -> str:
        """``train``, ``validation`` or ``test`` for a record (seeded hash of its name)."""
        return hash_split(record_id, self.split_seed, self.split_fractions)

    def split_ids(self, task: ClassificationTask | str, split: str) -> list[str]:
        """Labelled record ids of one split."""
        if split not in ("train", "validation", "test"):
            raise ValueError(f"Unknown split {split!r}; available: ['train', 'validation', 'test']")
        name = task.name.split("/", 1)[-1] if isinstance(task, ClassificationTask) else task
        return [str(r) for r in self.label_sets(name).index if self.split_of(str(r)) == split]

    # ------------------------------------------------------------------ signals
    def read(self, record_id: str) -> ECGRecord:
        """Read one ``.mat`` with ``scipy.io.loadmat`` (raises :class:`RecordError`)."""
        if record_id not in self.records.index:
            raise KeyError(f"{record_id!r} is not a record of {self.root}")
        path = self.records.at[record_id, "path"]
        if pd.isna(path):
            raise RecordError(record_id, "missing_file", f"{self.reference_path.name} lists it but no {record_id}.mat "
                              f"is under {self.root}")
        try:
            ecg = scipy.io.loadmat(path, simplify_cells=True)["ECG"]
        except KeyError:
            raise RecordError(record_id, "unreadable", f"{path} holds no 'ECG' struct") from None
        except Exception as e:  # scipy raises several types for damaged files
            raise RecordError(record_id, mat_error_reason(e), f"{path}: {type(e).__name__}: {e}") from e
        if not isinstance(ecg, dict) or "data" not in ecg:
            raise RecordError(record_id, "unreadable", f"{path}: 'ECG' is not a struct with a 'data' field")
        data = np.asarray(ecg["data"], dtype=np.float64)
        if data.ndim != 2 or data.shape[0] != len(CPSC2018_LEADS):
            raise RecordError(record_id, "bad_signal", f"{path}: ECG.data has shape {data.shape}, expected (12, samples)")
        age = np.asarray(ecg.get("age", np.nan), dtype=np.float64).ravel()
        sex = ecg.get("sex")
        rec = ECGRecord(
            signal=data,
            sampling_rate=CPSC2018_SAMPLING_RATE,
            lead_names=list(CPSC2018_LEADS),
            record_id=record_id,
            units=["mV"] * len(CPSC2018_LEADS),
            meta={
                "age": float(age[0]) if age.size and np.isfinite(age[0]) else None,
                "sex": str(sex).strip() if isinstance(sex, str) else None,
                "labels": [CPSC2018_CLASSES[c - 1].abbreviation for c in self.records.at[record_id, "codes"]],
            },
        )
        fatal, caveats = signal_problems(rec)
        if fatal:
            raise RecordError(record_id, "flat_signal", fatal)
        for reason, detail in caveats:
            self._add(record_id, reason, detail)
        return rec

    def iter_records(self, ids: list[str] | None = None) -> Iterator[tuple[str, ECGRecord | RecordError]]:
        """Yield ``(record_id, record)``, or ``(record_id, RecordError)`` (raised with ``on_error="raise"``)."""
        ids = [str(r) for r in (ids if ids is not None else self.records.index)]
        yield from read_each(ids, self.read, self.on_error)

    def fingerprint(self) -> dict[str, object]:
        """What identifies the signals of this source in a cache key."""
        return {"source": self.name, "root": str(self.root.resolve())}


register_source("cpsc2018", CPSC2018)

__all__ = ["CPSC2018", "CPSC2018_CLASSES", "CPSC2018_LEADS", "CPSC2018_TASKS", "CPSC2018Class", "cpsc2018_score",
           "find_reference"]
