"""What every data source provides, the skip report shared by all of them, and the source registry.

A *labelled source* reads one dataset's real on-disk layout and gives the trainer four things: the records
(``iter_records``), the tasks it defines (``task``), the official splits (``split_ids``) and each record's labels
(``label_sets``). The unit a source yields is whatever one label belongs to: a whole 10 s record (PTB-XL,
CinC), a beat (MIT-BIH), a minute (Apnea-ECG) or a 30 s epoch (sleep). Sources of long recordings read each
recording once and yield its segments with ids ``"<record>/<index>"``.

Nothing is dropped silently: a record that cannot be used is yielded as a :class:`~ecg_adapt.data.RecordError`
(the cache lists it in ``report.json``), and problems found while reading labels or annotations go into the
source's :class:`SkipReport`. With ``on_error="raise"`` the first problem stops the run instead.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import pandas as pd

from ..tasks.task import ClassificationTask
from .record import ECGRecord, RecordError

logger = logging.getLogger(__name__)

OnError = Literal["skip", "raise"]


@dataclass
class SkipReport:
    """Problems met while reading a source: what was skipped (or kept with a caveat), and why.

    Each entry is ``{"record_id", "reason", "detail"}``; ``reason`` is a short machine-readable word
    (``missing_file``, ``truncated``, ``unknown_code``, ``annotation_mismatch``, ...). ``on_error="raise"``
    turns the first :meth:`add` into a :class:`RecordError`.
    """

    source: str
    on_error: OnError = "skip"
    entries: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {self.on_error!r}")

    def add(self, record_id: Any, reason: str, detail: str) -> None:
        """Record a problem (or raise it, with ``on_error="raise"``)."""
        if self.on_error == "raise":
            raise RecordError(str(record_id), reason, detail)
        self.entries.append({"record_id": str(record_id), "reason": reason, "detail": detail})

    def add_error(self, error: RecordError) -> None:
        self.add(error.record, error.reason, error.detail)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def by_reason(self) -> dict[str, int]:
        return dict(Counter(e["reason"] for e in self.entries))

    def summary(self) -> str:
        if not self.entries:
            return f"{self.source}: nothing skipped"
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.by_reason.items()))
        return f"{self.source}: {len(self.entries)} problem(s): {reasons}"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "n": len(self.entries), "by_reason": self.by_reason, "entries": self.entries}

    def log(self) -> None:
        if self.entries:
            logger.warning("%s (first: %s)", self.summary(), self.entries[0])


@runtime_checkable
class LabelledSource(Protocol):
    """The interface of every dataset class (see the module docstring). ``PTBXL`` is the reference."""

    name: str
    citation: str

    def task(self, name: str) -> ClassificationTask: ...

    def split_ids(self, task: ClassificationTask | str, split: str) -> list[Any]: ...

    def label_sets(self, task: str) -> pd.Series: ...

    def iter_records(self, ids: list[Any] | None = None) -> Iterable[tuple[Any, ECGRecord | RecordError]]: ...

    def fingerprint(self) -> dict[str, object]: ...


def read_each(
    ids: Iterable[Any], read: Callable[[Any], ECGRecord], on_error: OnError = "skip"
) -> Iterator[tuple[Any, ECGRecord | RecordError]]:
    """``(id, read(id))`` for each id, or ``(id, RecordError)`` for one that cannot be used (with
    ``on_error="raise"`` the error is raised instead): ``iter_records`` of a source with one file per unit."""
    for rid in ids:
        try:
            yield rid, read(rid)
        except RecordError as e:
            if on_error == "raise":
                raise
            yield rid, e


def index_records(records: Iterable[str], read_index: Callable[[str], Any | None]) -> dict[str, Any]:
    """``{record: read_index(record)}`` for the records whose index could be built (``None`` = left out, the
    reader having reported why): the lazy per-recording index of the long-recording sources."""
    index = {}
    for record in records:
        entry = read_index(record)
        if entry is not None:
            index[record] = entry
    return index


SourceOpener = Callable[..., LabelledSource]
SOURCES: dict[str, SourceOpener] = {}


def register_source(name: str, opener: SourceOpener) -> None:
    """Make ``open_source(name, path, **kwargs)`` (and the recipe's ``data.source: name``) open a dataset."""
    SOURCES[name] = opener


def open_source(name: str, path: str | os.PathLike, **kwargs: Any) -> LabelledSource:
    """Open a registered source by name (``ptbxl``, ``cinc2021``, ``mitdb``, ``apnea_ecg``, ...)."""
    if name not in SOURCES:
        raise ValueError(f"Unknown data source {name!r}; available: {sorted(SOURCES)}")
    return SOURCES[name](path, **kwargs)


__all__ = ["LabelledSource", "OnError", "SOURCES", "SkipReport", "index_records", "open_source", "read_each", "register_source"]
