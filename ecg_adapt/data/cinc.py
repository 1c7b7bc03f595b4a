"""PhysioNet/CinC Challenge 2021 (and 2020) training data: eight sources, SNOMED CT labels, the challenge classes.

Reads the training set as PhysioNet distributes it (``challenge-2021`` v1.0.3)::

    <root>/training/<source>/g<N>/<record>.{hea,mat}

with ``<source>`` one of ``cpsc_2018``, ``cpsc_2018_extra``, ``st_petersburg_incart``, ``ptb``, ``ptb-xl``,
``georgia``, ``chapman_shaoxing``, ``ningbo``, and equally any other nesting or one flat folder: every ``.hea``
below ``root`` is a record. Each record is a WFDB header plus a MATLAB v4 ``.mat`` holding ``val`` (leads ×
samples, int16) that the header describes as format ``16x1+24`` (24-byte MAT header), read with ``wfdb``.
The labels are the ``# Dx:`` comment: comma-separated SNOMED CT codes.

**Sources** are told apart by the record name, as the challenge named them: ``A`` CPSC 2018, ``Q`` CPSC-Extra,
``I`` St Petersburg INCART, ``S`` PTB, ``HR`` PTB-XL, ``E`` Georgia, and ``JS`` for both Chinese sources:
``JS00001``-``JS10646`` are Chapman-Shaoxing and ``JS10647``-``JS45551`` Ningbo (one numbering of the
combined release).

**Classes.** ``scored`` is the challenge task: multi-label over the scored classes of the year's weight table,
26 in 2021 (30 codes, four pairs scored as one: ``733534002|164909002`` CLBBB/LBBB, ``713427006|59118001``
CRBBB/RBBB, ``284470004|63593006`` PAC/SVPB, ``427172004|17338001`` PVC/VPB) and 24 in 2020 (no BBB, PRWP or
CLBBB; three pairs). A record is positive for a class when any of its codes is in it, as in the official
``evaluate_model.py``. ``all`` is multi-label over every known code present (both mapping files; scored pairs
merged the same way). Other groupings (e.g. a rhythm subset) are not defined by the challenge and not offered.

**Records without a scored label** (e.g. only left ventricular hypertrophy) are left out of ``scored`` by
default, like records without a label in the PTB-XL tasks; they add nothing to the challenge metric, whose
confusion matrix only counts true labels. ``unscored_records="negative"`` keeps them as all-negative
examples instead. :meth:`CinC2021.summary` counts them per source.

**Targets.** Besides the label tasks, the header's ``# Age:`` is the regression target ``age`` (years; a missing
or non-numeric age, e.g. ``NaN``, is NaN: kept, masked in the loss and the metrics) and ``# Sex:`` the binary
target ``sex`` (one label ``female``; ``Male``/``M`` negative; records with another or no value, e.g.
``Unknown``, are left out of the task). Both cover every indexed record, with or without a ``Dx`` line;
:meth:`CinC2021.target_report` counts them.

**Splits.** The challenge's validation and test sets are hidden (never released), so every split here is
ours. Patients are not identified in the headers, so no split can be grouped by patient (INCART's 74 records
come from 32 Holter recordings, PTB's 516 from 290 subjects). Two schemes:

* default: each record goes to train / validation / test by a seeded hash of its name (``split_seed``,
  ``split_fractions`` = 0.8 / 0.1 / 0.1). The fractions hold per source in expectation; a record's split
  never depends on which other records are on disk.
* ``holdout_source="georgia"`` (leave one source out): every labelled record of that source is the test set;
  the other sources are split by the same hash into train and validation in the ratio of the first two
  fractions (8 : 1 by default).

**Problems** never pass silently. While indexing (``self.report``, a :class:`SkipReport`): ``unknown_source``,
``duplicate_record``, ``corrupt_header`` (unreadable text), ``missing_dx``, ``malformed_dx`` (empty entries as
in ``JS00344``'s trailing ``,`` or ``JS03287``'s ``,,``; the codes are still read), ``unknown_code`` (in neither
mapping file, e.g. ``251238007``; ignored, as the challenge does). While reading signals:
:class:`RecordError` ``missing_file``, ``corrupt_header``, ``length_mismatch`` (header and ``.mat`` disagree on
leads × samples), ``truncated``, ``unreadable``, ``flat_signal`` (every lead constant, e.g. ``Q0400``); and,
for records that are read, ``nan_samples`` and ``flat_leads`` in the report (the processor interpolates NaN
runs and rejects mostly-NaN records; the cache skips records with flat leads per ``data.quality``). With ``on_error="raise"`` the first problem raises instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.io

from ..tasks.challenge import ChallengeTask, class_codes, load_weights
from ..tasks.task import ClassificationTask, RegressionTask
from ..utils import did_you_mean
from .base import OnError, SkipReport, read_each, register_source
from .record import ECGRecord, RecordError, read_wfdb

logger = logging.getLogger(__name__)

CINC_TASKS: tuple[str, ...] = ("scored", "all")
CINC_TARGETS: dict[str, str] = {"age": "regression", "sex": "binary"}
CINC_SPLITS: tuple[str, ...] = ("train", "validation", "test")
# Scored in 2021 but not in 2020 (dx_mapping_scored.csv of evaluation-2020 lists the other 27 codes).
SCORED_2021_ONLY: frozenset[str] = frozenset({"6374002", "365413008", "733534002"})
CHAPMAN_SHAOXING_LAST = 10646  # JS00001-JS10646 Chapman-Shaoxing, JS10647-JS45551 Ningbo

CITATION = (
    "Reyna, M. A., Sadr, N., Perez Alday, E. A., et al. Will Two Do? Varying Dimensions in Electrocardiography: "
    "The PhysioNet/Computing in Cardiology Challenge 2021. Computing in Cardiology 48 (2021). "
    "Perez Alday, E. A., Gu, A., Shah, A. J., et al. Classification of 12-lead ECGs: the PhysioNet/Computing in "
    "Cardiology Challenge 2020. Physiological Measurement 41, 124003 (2020). Goldberger et al., PhysioBank, "
    "PhysioToolkit, and PhysioNet, Circulation 101(23) (2000)."
)


@dataclass(frozen=True)
class CinCSource:
    """One of the databases pooled in the challenge."""

    name: str  # the folder name under training/ in the PhysioNet release
    prefix: str  # record-name prefix
    mapping_column: str  # its count column in dx_mapping_*.csv
    title: str
    sampling_rate: float
    years: tuple[int, ...]


CINC_SOURCES: dict[str, CinCSource] = {
    s.name: s
    for s in (
        CinCSource("cpsc_2018", "A", "CPSC", "China Physiological Signal Challenge 2018", 500, (2020, 2021)),
        CinCSource("cpsc_2018_extra", "Q", "CPSC_Extra", "CPSC 2018 unused data", 500, (2020, 2021)),
        CinCSource("st_petersburg_incart", "I", "StPetersburg", "St Petersburg INCART 12-lead Arrhythmia Database", 257, (2020, 2021)),
        CinCSource("ptb", "S", "PTB", "PTB Diagnostic ECG Database", 1000, (2020, 2021)),
        CinCSource("ptb-xl", "HR", "PTB_XL", "PTB-XL", 500, (2020, 2021)),
        CinCSource("georgia", "E", "Georgia", "Georgia 12-lead ECG Challenge Database", 500, (2020, 2021)),
        CinCSource("chapman_shaoxing", "JS", "Chapman_Shaoxing", "Chapman University, Shaoxing People's Hospital", 500, (2021,)),
        CinCSource("ningbo", "JS", "Ningbo", "Ningbo First Hospital", 500, (2021,)),
    )
}
_RECORD_NAME = re.compile(r"^(HR|JS|A|Q|I|S|E)(\d+)$")
_PREFIX_SOURCE = {"A": "cpsc_2018", "Q": "cpsc_2018_extra", "I": "st_petersburg_incart", "S": "ptb", "HR": "ptb-xl", "E": "georgia"}


def packaged_resource(name: str) -> Path:
    """A file shipped in ``ecg_adapt/data/resources`` (the CinC tables are BSD 2-Clause; see CINC2021_LICENSE.md)."""
    return Path(str(resources.files("ecg_adapt.data") / "resources" / name))


def source_of_record(record: str) -> str:
    """The source of a challenge record name.

    Example:
        >>> source_of_record("E07500"), source_of_record("JS10646"), source_of_record("JS10647")
        ('georgia', 'chapman_shaoxing', 'ningbo')

    Raises:
        ValueError: for a name that no challenge source uses.
    """
    m = _RECORD_NAME.match(record)
    if not m:
        raise ValueError(f"{record!r} is not a PhysioNet/CinC 2020/2021 record name (A, Q, I, S, HR, E or JS + digits)")
    prefix, number = m.groups()
    if prefix == "JS":
        return "chapman_shaoxing" if int(number) <= CHAPMAN_SHAOXING_LAST else "ningbo"
    return _PREFIX_SOURCE[prefix]


def parse_dx(value: str) -> tuple[list[str], list[str]]:
    """The codes of a ``Dx:`` value and the problems found: ``("164934002,,426783006,", ...)`` gives the two
    codes and a note about the empty entries. Duplicates are kept once, in order.

    Example:
        >>> parse_dx("164934002,,426783006,")
        (['164934002', '426783006'], ['empty entries in Dx: 164934002,,426783006,'])
    """
    tokens = [t.strip() for t in value.split(",")]
    problems = []
    if any(t == "" for t in tokens):
        problems.append(f"empty entries in Dx: {value.strip()}")
    bad = [t for t in tokens if t and not t.isdigit()]
    if bad:
        problems.append(f"entries that are not SNOMED CT codes: {bad}")
    codes = list(dict.fromkeys(t for t in tokens if t.isdigit()))
    return codes, problems


def split_fraction(record_id: str, seed: int = 0) -> float:
    """A number in [0, 1) fixed by the record name and the seed (SHA-256), used to assign splits."""
    digest = hashlib.sha256(f"{seed}:{record_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def hash_split(record_id: str, seed: int = 0, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> str:
    """``"train"``, ``"validation"`` or ``"test"`` for a record, by :func:`split_fraction` and the fractions."""
    u = split_fraction(record_id, seed)
    if u < fractions[0]:
        return "train"
    return "validation" if u < fractions[0] + fractions[1] else "test"


def check_split_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """``(train, validation, test)`` fractions as floats, or a ValueError saying what is wrong with them."""
    f = tuple(float(x) for x in fractions)
    if len(f) != 3 or min(f) < 0 or abs(sum(f) - 1.0) > 1e-9 or f[0] == 0:
        raise ValueError(f"split_fractions must be three non-negative numbers (train, validation, test) summing to 1 "
                         f"with train > 0, got {fractions}")
    return f  # type: ignore[return-value]


def scored_classes(year: int = 2021) -> list[str]:
    """The scored classes of a challenge year, as named in the weight table (equivalent codes joined by ``|``).

    Example:
        >>> len(scored_classes(2021)), len(scored_classes(2020)), scored_classes(2020)[3]
        (26, 24, '164909002')
    """
    if year not in (2020, 2021):
        raise ValueError(f"year must be 2020 or 2021, got {year}")
    classes = load_weights().classes
    if year == 2021:
        return list(classes)
    out = []
    for name in classes:
        codes = [c for c in name.split("|") if c not in SCORED_2021_ONLY]
        if codes:
            out.append("|".join(codes))
    return out


def _read_header_text(path: Path) -> dict[str, Any]:
    """The record line and ``# Key: value`` comments of a challenge header (the first of a repeated key, except
    ``Dx``, whose repeated lines are joined: their codes are the union).

    Hand-parsed because ``wfdb.rdheader`` costs about 14 ms a header here (20 minutes for the 88,253 of 2021)
    and the index only needs these fields; the whole header is parsed by ``wfdb`` when the signal is read.
    """
    text = path.read_text(encoding="utf-8")
    record_line: list[str] | None = None
    comments: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            key, sep, value = line.lstrip("#").partition(":")
            key = key.strip().lower()
            if sep and key == "dx" and key in comments:
                # A header with two "# Dx:" lines: the labels are the union, as in the official scoring code
                # (helper_code.get_labels reads every Dx line).
                comments[key] = f"{comments[key]},{value.strip()}"
            elif sep:
                comments.setdefault(key, value.strip())
        elif record_line is None:
            record_line = line.split()
    info: dict[str, Any] = {"fs": np.nan, "n_sig": np.nan, "sig_len": np.nan, "comments": comments}
    if record_line and len(record_line) >= 4:
        try:
            info["n_sig"] = int(record_line[1])
            info["fs"] = float(re.match(r"[0-9.eE+-]+", record_line[2]).group(0))  # type: ignore[union-attr]
            info["sig_len"] = int(record_line[3])
        except (ValueError, AttributeError):
            pass
    return info


def signal_problems(rec: ECGRecord) -> tuple[str | None, list[tuple[str, str]]]:
    """What is wrong with a record's samples: a fatal reason (every lead constant or without a finite sample)
    and caveats for a record that is still usable (``nan_samples``, ``flat_leads``)."""
    x = rec.signal
    finite = np.isfinite(x)
    lo = np.where(finite, x, np.inf).min(axis=1)
    hi = np.where(finite, x, -np.inf).max(axis=1)
    flat = [rec.lead_names[i] for i in np.flatnonzero(~(hi > lo))]  # constant, or no finite sample at all
    if len(flat) == len(rec.lead_names):
        return f"every lead is constant or empty ({len(flat)} leads)", []
    caveats = []
    nan_leads = [rec.lead_names[i] for i in np.flatnonzero(~finite.all(axis=1))]
    if nan_leads:
        detail = f"{int((~finite).sum())} non-finite samples in leads {nan_leads} (kept: the processor interpolates short runs)"
        caveats.append(("nan_samples", detail))
    if flat:
        caveats.append(("flat_leads", f"constant leads {flat} (the cache skips the record unless "
                                      "data.quality.max_flat_leads allows them)"))
    return None, caveats


def mat_error_reason(error: Exception) -> str:
    """``truncated`` when scipy ran out of bytes reading a MAT file, ``unreadable`` otherwise."""
    message = str(error).lower()
    return "truncated" if "truncated" in message or "could not read bytes" in message else "unreadable"


def _sex(value: object) -> str | None:
    """``"female"`` / ``"male"`` from a header's ``Sex:`` value (``Female``, ``F``, ``male`` ...), else ``None``."""
    text = str(value).strip().lower() if isinstance(value, str) else ""
    if text in ("female", "f"):
        return "female"
    if text in ("male", "m"):
        return "male"
    return None


def _age(value: str | None) -> float:
    try:
        return float(value) if value is not None else np.nan
    except ValueError:
        return np.nan


class CinC2021:
    """The PhysioNet/CinC Challenge 2021 (``year=2021``) or 2020 (``year=2020``) training data on disk.

    Args:
        root: a folder holding the records at any depth (``training/<source>/gN/`` or flat).
        year: which challenge's scored classes (and source list) define the ``scored`` task. The records are
            whatever is on disk; for 2020 the Chapman-Shaoxing and Ningbo records are left out.
        sources: keep only these sources (names of :data:`CINC_SOURCES`).
        unscored_records: ``"drop"`` (default) leaves records without any scored class out of ``scored``;
            ``"negative"`` keeps them with no positive label.
        holdout_source: leave-one-source-out evaluation: this source is the test set.
        split_seed, split_fractions: the hash split (see the module docstring).
        on_error: ``"skip"`` reports problems; ``"raise"`` raises the first one.

    Example:
        >>> ds = CinC2021("/data/challenge-2021/1.0.3/training")          # doctest: +SKIP
        >>> task = ds.task("scored"); task.num_labels                      # doctest: +SKIP
        26
        >>> test = ds.split_ids(task, "test")                               # doctest: +SKIP
        >>> {s: len(ids) for s, ids in ds.ids_by_source(test).items()}     # doctest: +SKIP
        >>> loso = CinC2021("/data/challenge-2021/1.0.3/training", holdout_source="georgia")  # doctest: +SKIP
    """

    citation = CITATION

    def __init__(
        self,
        root: str | os.PathLike,
        year: int = 2021,
        sources: Sequence[str] | None = None,
        unscored_records: Literal["drop", "negative"] = "drop",
        holdout_source: str | None = None,
        split_seed: int = 0,
        split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
        on_error: OnError = "skip",
    ) -> None:
        if year not in (2020, 2021):
            raise ValueError(f"year must be 2020 or 2021, got {year}")
        if unscored_records not in ("drop", "negative"):
            raise ValueError(f"unscored_records must be 'drop' or 'negative', got {unscored_records!r}")
        self.year = int(year)
        self.name = f"cinc{self.year}"
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"CinC folder {self.root} does not exist; download the challenge training data and point here")
        year_sources = [s for s, src in CINC_SOURCES.items() if self.year in src.years]
        if sources is None:
            self.sources = year_sources
        else:
            unknown = sorted(set(sources) - set(CINC_SOURCES))
            if unknown:
                raise ValueError(f"Unknown CinC sources {unknown}; available: {list(CINC_SOURCES)}")
            self.sources = [s for s in CINC_SOURCES if s in set(sources)]
        if holdout_source is not None and holdout_source not in self.sources:
            raise ValueError(f"holdout_source {holdout_source!r} is not one of the sources used: {self.sources}")
        self.holdout_source = holdout_source
        self.unscored_records = unscored_records
        self.split_seed = int(split_seed)
        self.split_fractions = check_split_fractions(split_fractions)
        self.on_error: OnError = on_error
        self.report = SkipReport(self.name, on_error)
        self._reported: set[tuple[str, str]] = set()

        self.dx_scored = pd.read_csv(packaged_resource("cinc2021_dx_mapping_scored.csv"), dtype={"SNOMEDCTCode": str})
        self.dx_unscored = pd.read_csv(packaged_resource("cinc2021_dx_mapping_unscored.csv"), dtype={"SNOMEDCTCode": str})
        self.known_codes = frozenset(self.dx_scored["SNOMEDCTCode"]) | frozenset(self.dx_unscored["SNOMEDCTCode"])
        self.classes = scored_classes(self.year)
        self._class_of_code = {c: name for name in self.classes for c in class_codes(name)}
        self.records = self._index()
        self._splits = self._assign_splits()
        counts = self.summary()
        logger.info(
            "%s: %d records from %s; %d without any scored class (%s 'scored'); %s",
            self.name, len(self.records), ", ".join(f"{s} {n}" for s, n in counts["records"].items() if n),
            int(counts["without_scored_class"].sum()),
            "left out of" if unscored_records == "drop" else "kept as negatives in", self.report.summary(),
        )
        self.report.log()

    # ------------------------------------------------------------------ index
    def _add(self, record_id: str, reason: str, detail: str) -> None:
        """Report a problem once per (record, reason), however often the record is read."""
        if (record_id, reason) not in self._reported:
            self._reported.add((record_id, reason))
            self.report.add(record_id, reason, detail)

    def _index(self) -> pd.DataFrame:
        rows: dict[str, dict[str, Any]] = {}
        other: dict[str, int] = {}  # records of sources not used (``sources=`` or the year)
        for hea in sorted(self.root.rglob("*.hea")):
            rid = hea.stem
            try:
                source = source_of_record(rid)
            except ValueError as e:
                self._add(rid, "unknown_source", f"{hea}: {e}")
                continue
            if source not in self.sources:
                other[source] = other.get(source, 0) + 1
                continue
            if rid in rows:
                self._add(rid, "duplicate_record", f"{hea} has the same name as {rows[rid]['header']}; using the first")
                continue
            row: dict[str, Any] = {"source": source, "header": str(hea), "fs": np.nan, "n_sig": np.nan, "sig_len": np.nan,
                                   "age": np.nan, "sex": None, "dx": [], "has_dx": False}
            try:
                info = _read_header_text(hea)
            except (OSError, UnicodeDecodeError) as e:
                self._add(rid, "corrupt_header", f"{hea}: {type(e).__name__}: {e}")
                rows[rid] = row
                continue
            comments = info.pop("comments")
            row.update(info, age=_age(comments.get("age")), sex=comments.get("sex"))
            if "dx" not in comments:
                self._add(rid, "missing_dx", f"{hea} has no '# Dx:' line")
            else:
                codes, problems = parse_dx(comments["dx"])
                for p in problems:
                    self._add(rid, "malformed_dx", f"{hea}: {p} (the codes were read)")
                unknown = [c for c in codes if c not in self.known_codes]
                if unknown:
                    self._add(rid, "unknown_code", f"{hea}: {unknown} in neither dx_mapping_scored.csv nor "
                              "dx_mapping_unscored.csv; ignored")
                row.update(dx=[c for c in codes if c in self.known_codes], has_dx=True)
            rows[rid] = row
        if other:
            logger.info("%s: left out records of sources not used: %s", self.name, other)
        if not rows:
            raise FileNotFoundError(
                f"No CinC record (.hea named A*, Q*, I*, S*, HR*, E*, JS* of sources {self.sources}) under {self.root}"
            )
        table = pd.DataFrame.from_dict(rows, orient="index").sort_index()
        table.index.name = "record_id"
        return table

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"CinC2021(root={str(self.root)!r}, year={self.year}, records={len(self)}, holdout_source={self.holdout_source!r})"

    # ------------------------------------------------------------------ sources
    def source_of(self, record_id: str) -> str:
        """The source of an indexed record (``georgia``, ``ptb-xl``, ...)."""
        try:
            return str(self.records.at[record_id, "source"])
        except KeyError:
            raise KeyError(f"{record_id!r} is not a record of {self.root}") from None

    def ids_by_source(self, ids: Sequence[str] | None = None) -> dict[str, list[str]]:
        """Record ids grouped by source (all indexed records, or ``ids``), for per-source evaluation."""
        ids = list(self.records.index) if ids is None else list(ids)
        out: dict[str, list[str]] = {s: [] for s in self.sources}
        for rid in ids:
            out[self.source_of(rid)].append(rid)
        return {s: v for s, v in out.items() if v}

    def summary(self) -> pd.DataFrame:
        """Per source: records indexed, records with a Dx line, with at least one scored class, without any."""
        t = self.records
        scored = t["dx"].apply(lambda codes: any(c in self._class_of_code for c in codes))
        out = pd.DataFrame({
            "records": t.groupby("source").size(),
            "with_dx": t[t["has_dx"]].groupby("source").size(),
            "with_scored_class": t[scored].groupby("source").size(),
            "without_scored_class": t[t["has_dx"] & ~scored].groupby("source").size(),
        }).reindex(self.sources).fillna(0).astype(int)
        out.index.name = "source"
        return out

    # ------------------------------------------------------------------ targets
    def _check_task(self, task: str) -> None:
        if task not in CINC_TASKS and task not in CINC_TARGETS:
            known = list(CINC_TASKS) + list(CINC_TARGETS)
            raise ValueError(f"Unknown CinC task {task!r}{did_you_mean(task, known)}; label tasks: "
                             f"{list(CINC_TASKS)}, targets (header '# Age:' / '# Sex:'): {list(CINC_TARGETS)}")

    def target_report(self, task: str) -> dict[str, object]:
        """How many records have the target's value (``{}`` for a label task)."""
        self._check_task(task)
        if task == "age":
            v = self.records["age"].astype(float)
            return {"kind": "regression", "records": len(v), "age": {"with_value": int(v.notna().sum()),
                    "missing": int(v.isna().sum())}, "missing_handling": "kept, masked in the loss and the metrics"}
        if task == "sex":
            known = self.records["sex"].map(_sex).notna()
            return {"kind": "binary", "records": len(known), "with_value": int(known.sum()),
                    "missing": int((~known).sum()), "missing_handling": "left out of the task"}
        return {}

    # ------------------------------------------------------------------ labels
    def _class_names(self, codes: list[str], task: str) -> list[str]:
        if task == "scored":
            return sorted({self._class_of_code[c] for c in codes if c in self._class_of_code})
        return sorted({self._class_of_code.get(c, c) for c in codes})

    def label_sets(self, task: str) -> pd.Series:
        """Class names per record id for ``scored`` or ``all``.

        Records without a ``Dx`` line are never labelled; records without any scored class are left out of
        ``scored`` unless ``unscored_records="negative"`` (then their label list is empty). ``age``: ``[age]`` of
        every record (NaN where missing); ``sex``: ``["female"]`` or ``[]``, records without a sex left out.
        """
        self._check_task(task)
        if task == "age":
            return pd.Series([[float(a)] for a in self.records["age"]], index=self.records.index, dtype=object)
        if task == "sex":
            sex = self.records["sex"].map(_sex).dropna()
            return sex.apply(lambda v: ["female"] if v == "female" else [])
        t = self.records[self.records["has_dx"]]
        labels = t["dx"].apply(lambda codes: self._class_names(codes, task))
        if task == "scored" and self.unscored_records == "negative":
            return labels
        return labels[labels.apply(len) > 0]

    def abbreviations(self) -> dict[str, str]:
        """Class name → abbreviation from the mapping files (``"713427006|59118001"`` → ``"CRBBB|RBBB"``)."""
        abbr = dict(zip(self.dx_scored["SNOMEDCTCode"], self.dx_scored["Abbreviation"]))
        abbr.update(zip(self.dx_unscored["SNOMEDCTCode"], self.dx_unscored["Abbreviation"]))
        names = self.classes + sorted(self.known_codes - set(self._class_of_code))
        return {n: "|".join(abbr.get(c, c) for c in n.split("|")) for n in names}

    def task(self, name: str) -> ClassificationTask | RegressionTask:
        """``scored``: the challenge classes in weight-table order, scored with the challenge metric too;
        ``all``: every known class present in the records, sorted; ``age``: regression (years); ``sex``: binary
        (one label, ``female``)."""
        self._check_task(name)
        if name == "age":
            return RegressionTask(name=f"{self.name}/age", labels=["age"], units={"age": "years"},
                                  description=f"PhysioNet/CinC {self.year} age (regression, header '# Age:')")
        if name == "sex":
            return ClassificationTask(name=f"{self.name}/sex", labels=["female"], problem_type="multi_label_classification",
                                      description=f"PhysioNet/CinC {self.year} sex (binary: female vs male, header '# Sex:')")
        abbr = self.abbreviations()
        if name == "scored":
            return ChallengeTask(
                name=f"{self.name}/scored",
                labels=list(self.classes),
                label_names={c: abbr[c] for c in self.classes},
                problem_type="multi_label_classification",
                description=f"PhysioNet/CinC {self.year} scored classes ({len(self.classes)}): "
                + ", ".join(abbr[c] for c in self.classes),
            )
        labels = sorted({c for s in self.label_sets("all") for c in s})
        return ChallengeTask(
            name=f"{self.name}/all",
            labels=labels,
            label_names={c: abbr.get(c, c) for c in labels},
            problem_type="multi_label_classification",
            description=f"PhysioNet/CinC {self.year}: every SNOMED CT class in the records ({len(labels)}), "
            "scored pairs merged",
        )

    # ------------------------------------------------------------------ splits
    def _assign_splits(self) -> pd.Series:
        f_train, f_val, _ = self.split_fractions
        out = {}
        for rid, source in self.records["source"].items():
            if self.holdout_source is None:
                out[rid] = hash_split(rid, self.split_seed, self.split_fractions)
            elif source == self.holdout_source:
                out[rid] = "test"
            else:
                out[rid] = "train" if split_fraction(rid, self.split_seed) < f_train / (f_train + f_val) else "validation"
        return pd.Series(out, dtype=object)

    def split_of(self, record_id: str) -> str:
        """``train``, ``validation`` or ``test`` for an indexed record."""
        return str(self._splits[record_id])

    def split_ids(self, task: ClassificationTask | RegressionTask | str, split: str) -> list[str]:
        """Labelled record ids of one split (see the module docstring for the two split schemes)."""
        if split not in CINC_SPLITS:
            raise ValueError(f"Unknown split {split!r}; available: {list(CINC_SPLITS)}")
        name = task if isinstance(task, str) else task.name.split("/", 1)[-1]
        labelled = self.label_sets(name).index
        return [str(r) for r in labelled[(self._splits.reindex(labelled) == split).to_numpy()]]

    # ------------------------------------------------------------------ signals
    def record_path(self, record_id: str) -> Path:
        """The record's path without extension (what ``wfdb`` takes)."""
        header = Path(self.records.at[record_id, "header"])
        return header.with_name(header.stem)

    def read(self, record_id: str) -> ECGRecord:
        """Read one record (raises :class:`RecordError`; caveats about kept records go to ``self.report``)."""
        if record_id not in self.records.index:
            raise KeyError(f"{record_id!r} is not a record of {self.root}")
        row = self.records.loc[record_id]
        path = self.record_path(record_id)
        mat = path.with_name(path.name + ".mat")
        if mat.exists() and not (pd.isna(row["n_sig"]) or pd.isna(row["sig_len"])):
            # The MAT header states the stored matrix's shape: compare it with what the WFDB header promises.
            try:
                shapes = {n: s for n, s, _ in scipy.io.whosmat(str(mat))}
            except Exception as e:  # scipy raises several types for damaged files
                raise RecordError(record_id, mat_error_reason(e), f"{mat.name}: {type(e).__name__}: {e}") from e
            expected = (int(row["n_sig"]), int(row["sig_len"]))
            stored = shapes.get("val")
            if stored is None:
                raise RecordError(record_id, "unreadable", f"{mat.name} holds no 'val' matrix (has {sorted(shapes)})")
            if tuple(stored) != expected:
                raise RecordError(
                    record_id, "length_mismatch",
                    f"{path.name}.hea promises {expected[0]} leads x {expected[1]} samples but {mat.name} holds "
                    f"{stored[0]} x {stored[1]}",
                )
        rec = read_wfdb(path, record_id=record_id)
        self._check_signal(record_id, rec)
        age = None if pd.isna(row["age"]) else float(row["age"])
        rec.meta.update(source=str(row["source"]), age=age, sex=row["sex"], dx=list(row["dx"]))
        return rec

    def _check_signal(self, record_id: str, rec: ECGRecord) -> None:
        fatal, caveats = signal_problems(rec)
        if fatal:
            raise RecordError(record_id, "flat_signal", fatal)
        for reason, detail in caveats:
            self._add(record_id, reason, detail)

    def iter_records(self, ids: list[str] | None = None) -> Iterator[tuple[str, ECGRecord | RecordError]]:
        """Yield ``(record_id, record)``, or ``(record_id, RecordError)`` for one that cannot be used (raised
        instead with ``on_error="raise"``)."""
        ids = [str(r) for r in (ids if ids is not None else self.records.index)]
        yield from read_each(ids, self.read, self.on_error)

    def fingerprint(self) -> dict[str, object]:
        """What identifies the signals of this source in a cache key."""
        return {"source": self.name, "root": str(self.root.resolve())}


def open_cinc2020(root: str | os.PathLike, **kwargs: Any) -> CinC2021:
    """:class:`CinC2021` with the 2020 challenge's scored classes and sources (``year=2020``)."""
    return CinC2021(root, year=2020, **kwargs)


register_source("cinc2021", CinC2021)
register_source("cinc2020", open_cinc2020)

__all__ = [
    "CINC_SOURCES",
    "CINC_TARGETS",
    "CINC_SPLITS",
    "CINC_TASKS",
    "CinC2021",
    "CinCSource",
    "check_split_fractions",
    "hash_split",
    "mat_error_reason",
    "open_cinc2020",
    "parse_dx",
    "scored_classes",
    "signal_problems",
    "source_of_record",
    "split_fraction",
]
