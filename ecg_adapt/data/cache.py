"""The processed-signal cache: every record is read and preprocessed once, then memory-mapped.

Windows are stored with 🤗 ``datasets``' Arrow writer (one row per window: ``record_id``, ``window``,
``input_values`` and ``attention_mask`` as fixed-shape ``Array2D``) and opened with ``Dataset.from_file``,
which memory-maps the file: later epochs and later runs never touch the WFDB files again.

The cache key hashes the source (name, folder, sampling rate), the record ids, the processor's full saved
config and the size and modification time of every file under the source's folder (see :func:`input_files_digest`),
so changing any preprocessing step, or repairing, replacing or truncating a record file, builds a new cache. A cache is written to a temporary folder and
renamed into place when complete (atomic on one filesystem); a run interrupted while building leaves no
half cache behind. Labels are not stored: one cache serves every task of a source.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Literal, Protocol

import numpy as np
import torch
from datasets import Array2D, Dataset, Features, Value
from datasets.arrow_writer import ArrowWriter

from ..processing.leads import map_leads
from ..processing.processor import ECGProcessor, ProcessedRecord
from ..processing.quality import QualityThresholds
from ..progress import Progress
from .record import ECGRecord, RecordError

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 2  # 2: the key covers the input files' sizes and modification times
DATA_FILE = "windows.arrow"
REPORT_FILE = "report.json"


class RecordSource(Protocol):
    """What the cache needs from a data source."""

    name: str

    def iter_records(self, ids: list[Any] | None = None) -> Iterable[tuple[Any, ECGRecord | RecordError]]: ...

    def fingerprint(self) -> dict[str, object]: ...


def default_cache_dir() -> Path:
    """``$ECG_ADAPT_CACHE`` or ``~/.cache/ecg_adapt``."""
    return Path(os.environ.get("ECG_ADAPT_CACHE", Path.home() / ".cache" / "ecg_adapt"))


def input_files_digest(source: RecordSource, exclude: Iterable[str | os.PathLike] = ()) -> str:
    """A digest of the path, size and modification time (ns) of every file the source's records are read from.

    A source may say which files these are (``input_files()``, an iterable of paths); otherwise every file
    under its ``fingerprint()["root"]`` counts, except hidden ones and anything under ``exclude`` (a cache
    folder inside the dataset). Sizes and times, not contents: a stat per file costs microseconds, hashing a
    dataset of gigabytes would cost minutes per run; any rewrite of a file changes its modification time.
    """
    files: Iterable[str | os.PathLike]
    if hasattr(source, "input_files"):
        files = source.input_files()  # type: ignore[attr-defined]
    else:
        root = source.fingerprint().get("root")
        if root is None or not Path(str(root)).exists():
            return "no-root"
        skip = {str(Path(e).resolve()) for e in exclude}
        files = []
        for dirpath, dirnames, filenames in os.walk(str(root)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and os.path.join(dirpath, d) not in skip)
            files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith("."))
    return files_digest(files)


def files_digest(files: Iterable[str | os.PathLike]) -> str:
    """A digest of the path, size and modification time (ns) of each of ``files`` (in the order given; a missing
    file counts as missing). Shared by :func:`input_files_digest` and the recording store's per-recording key."""
    h = hashlib.sha256()
    for f in files:
        try:
            st = os.stat(f)
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            h.update(f"{f}\0missing\n".encode())
    return h.hexdigest()


def key_digest(payload: Any) -> str:
    """The 20-hex-digit key of a JSON-able payload (keys sorted): how the window cache and the store name builds."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def processor_key_config(processor: ECGProcessor) -> dict[str, Any]:
    """The processor's saved config as a key sees it: without ``feature_extractor_type`` (the class name says
    nothing about the inputs it makes)."""
    proc = processor.to_dict()
    proc.pop("feature_extractor_type", None)
    return proc


def cache_key(source: RecordSource, ids: list[Any], processor: ECGProcessor,
              exclude: Iterable[str | os.PathLike] = (), quality: QualityThresholds | None = None) -> str:
    """The key of the cache of ``ids`` of ``source`` under ``processor`` (see the module docstring)."""
    return key_digest({
        "version": CACHE_FORMAT_VERSION,
        "source": source.fingerprint(),
        "ids": hashlib.sha256(json.dumps([str(i) for i in ids]).encode()).hexdigest(),
        "processor": processor_key_config(processor),
        "input_files": input_files_digest(source, exclude),
        "quality": (quality or QualityThresholds()).to_dict(),
    })


class ECGCache:
    """A built cache: the memory-mapped windows plus the build report."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.dataset = Dataset.from_file(str(self.path / DATA_FILE)).with_format("numpy")
        self.report: dict[str, Any] = json.loads((self.path / REPORT_FILE).read_text())
        self.row_record_ids = np.asarray(self.dataset.with_format(None)["record_id"])
        self._views: dict[str, tuple[np.ndarray, list[np.ndarray]]] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def row_windows(self) -> np.ndarray:
        """The index of each row's window within its unit (``int64``, one per row)."""
        return np.asarray(self.dataset.data.table.column("window").to_numpy(), dtype=np.int64)

    def _chunk_views(self, column: str) -> tuple[np.ndarray, list[np.ndarray]]:
        """Zero-copy numpy views of a fixed-shape column, one per Arrow record batch.

        ``Dataset.__getitems__`` converts nested lists row by row (about 2,700 windows/s here); the values of
        an ``Array2D`` column are one contiguous float buffer per batch inside the memory-mapped file, so a
        reshape of that buffer gives the same numbers with no copy and no conversion.
        """
        if column not in self._views:
            contract_shape = self.dataset.features[column].shape
            starts, views = [], []
            row = 0
            for chunk in self.dataset.data.table.column(column).chunks:
                storage = chunk.storage if hasattr(chunk, "storage") else chunk
                values = storage.flatten().flatten().to_numpy(zero_copy_only=True)
                views.append(values.reshape((len(storage),) + tuple(contract_shape)))
                starts.append(row)
                row += len(storage)
            self._views[column] = (np.asarray(starts), views)
        return self._views[column]

    def take(self, column: str, rows: np.ndarray) -> np.ndarray:
        """Rows of a fixed-shape column (``input_values`` or ``attention_mask``) as one array."""
        starts, views = self._chunk_views(column)
        rows = np.asarray(rows)
        which = np.searchsorted(starts, rows, side="right") - 1
        out = np.empty((len(rows),) + views[0].shape[1:], dtype=views[0].dtype)
        for c in np.unique(which):
            sel = which == c
            out[sel] = views[c][rows[sel] - starts[c]]
        return out

    @property
    def skipped(self) -> list[dict[str, str]]:
        return self.report["skipped"]


def build_cache(
    source: RecordSource,
    processor: ECGProcessor,
    ids: list[Any],
    cache_dir: str | os.PathLike | None = None,
    on_error: Literal["skip", "raise"] = "skip",
    progress: bool = True,
    quality: QualityThresholds | None = None,
    layout: Literal["auto", "windows", "store"] = "auto",
) -> ECGCache:
    """Read, preprocess and store the windows of ``ids`` (or open the cache if it already exists).

    ``layout``: ``"auto"`` (default) stores the 30 s epochs of sleep recordings (a source with ``recordings``
    and ``context_epochs=0``) in the compact recording store (:func:`ecg_adapt.data.store.build_store`: each
    epoch once, only the leads that carry signal), every other source as one Arrow row per window;
    ``"windows"`` always writes the Arrow window cache; ``"store"`` requires the recording store. Both give the
    same model inputs and the same interface (``row_record_ids``, ``row_windows``, ``take``, ``report``).

    Records that cannot be read or processed, or that fail ``quality`` (default :class:`QualityThresholds`:
    records with a flat lead or an all-zero signal), are skipped and listed, with the reason, in
    ``report.json`` and the log; with ``on_error="raise"`` the first one stops the build instead.

    Raises:
        ValueError: no record could be cached; the message counts the records per reason, with an example
            and a hint for each.
    """
    if layout not in ("auto", "windows", "store"):
        raise ValueError(f"build_cache layout must be 'auto', 'windows' or 'store', got {layout!r}")
    if layout != "windows":
        from .store import build_store, supports_store

        reason = supports_store(source)
        if reason is None:
            return build_store(source, processor, ids, cache_dir=cache_dir, on_error=on_error, progress=progress,
                               quality=quality)  # type: ignore[return-value]  # same interface as ECGCache
        if layout == "store":
            raise ValueError(f"{source.name}: the recording store cannot hold it: {reason}")
    quality = quality or QualityThresholds()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = cache_key(source, ids, processor, exclude=[root.resolve()], quality=quality)
    final = root / f"{source.name}-{key}"
    if (final / REPORT_FILE).exists() and (final / DATA_FILE).exists():
        cache = ECGCache(final)
        _log_report(cache.report, final, reused=True)
        return cache
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(root, f".{source.name}-{key}-")
    tmp = Path(tempfile.mkdtemp(prefix=f".{source.name}-{key}-", dir=root))
    try:
        contract = processor.contract
        shape = (contract.n_leads, contract.window_samples)
        features = Features(
            {
                "record_id": Value("string"),
                "window": Value("int32"),
                "input_values": Array2D(shape=shape, dtype="float32"),
                "attention_mask": Array2D(shape=shape, dtype="int8"),
            }
        )
        skipped: list[dict[str, str]] = []
        notes: Counter[str] = Counter()
        n_windows = 0
        writer = ArrowWriter(features=features, path=str(tmp / DATA_FILE))
        bar = Progress(len(ids), f"caching {source.name}", "rec", disable=not progress)  # bar on a terminal, lines otherwise
        for rid, rec in source.iter_records(ids):
            bar.update(1)
            out, problem = process_unit(processor, quality, rid, rec, on_error, notes)
            if problem is not None:
                skipped.append(problem)
                continue
            assert out is not None
            for w in range(out.input_values.shape[0]):
                writer.write(
                    {
                        "record_id": str(rid),
                        "window": w,
                        "input_values": out.input_values[w].reshape(shape),
                        "attention_mask": out.attention_mask[w].reshape(shape),
                    }
                )
                n_windows += 1
        bar.close()
        writer.finalize()
        writer.close()
        report = {
            "source": source.fingerprint(),
            "cache_key": key,
            "n_requested": len(ids),
            "n_cached": len(ids) - len(skipped),
            "n_windows": n_windows,
            "skipped": skipped,
            "skipped_by_reason": dict(Counter(s["reason"] for s in skipped)),
            "processing_notes": dict(notes),
            "processor": processor.to_dict(),
            "quality": quality.to_dict(),
        }
        # report.json is the completion marker: written last, and a cache is reused only from its final name
        # (after the rename) with both files present, so a build killed at any point is never picked up.
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2, default=str) + "\n")
        if n_windows == 0:
            raise ValueError(explain_nothing_cached(source.name, skipped, len(ids)))
        publish_build(tmp, final, REPORT_FILE)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    cache = ECGCache(final)
    _log_report(cache.report, final, reused=False)
    return cache


def process_unit(
    processor: ECGProcessor,
    quality: QualityThresholds,
    rid: Any,
    rec: ECGRecord | RecordError,
    on_error: Literal["skip", "raise"],
    notes: Counter[str],
) -> tuple[ProcessedRecord | None, dict[str, str] | None]:
    """Process one unit the way every cache does: ``(windows, None)``, or ``(None, skip entry)`` for a unit
    that cannot be read or processed or fails ``quality`` (raised instead under ``on_error="raise"``).

    Shared by :func:`build_cache` and the recording store (:mod:`ecg_adapt.data.store`), so both give the
    same model inputs for the same unit by construction. Processing notes are counted into ``notes``.
    """
    if isinstance(rec, RecordError):
        if on_error == "raise":
            raise rec
        return None, {"record_id": str(rid), "reason": rec.reason, "detail": rec.detail}
    try:
        out = processor.process(rec.signal, rec.sampling_rate, rec.lead_names, record_id=str(rid))
    except ValueError as e:
        if on_error == "raise":
            raise
        return None, {"record_id": str(rid), **_processing_problem(rec, processor.contract.leads, e)}
    judged = [i for i, n in enumerate(rec.lead_names) if n not in set(out.report.ignored_leads)]
    problem = quality.check(rec.signal[judged], [rec.lead_names[i] for i in judged])
    if problem is not None:
        if on_error == "raise":
            raise RecordError(str(rid), *problem)
        return None, {"record_id": str(rid), "reason": problem[0], "detail": problem[1]}
    if out.report.missing_leads:
        notes[f"missing leads {','.join(out.report.missing_leads)} ({out.report.missing_leads_policy})"] += 1
    if out.report.nan_interpolated:
        notes["NaN samples interpolated"] += 1
    if out.report.flat_leads:
        notes["flat lead(s)"] += 1
    return out, None


# What to do about the most common reasons a whole source yields nothing (matched against reason and detail).
_HINTS: list[tuple[str, str, str]] = [
    ("unknown_leads", "", "if the channel is one standard lead, say which: set source_options.lead_name "
                          "(e.g. 'II'; 'I' for a 1-lead model)"),
    ("processing", "lacks lead", "set data.missing_leads: zero (or mask) to feed the model's other leads as zeros"),
    ("processing", "NaN", "the signals are mostly missing; check the files, or raise the processor's max_nan_fraction"),
    ("processing", "infinite", "the signal files hold inf values: check the files and their gain in the headers"),
    ("processing", "two leads named", "the headers name a lead twice: fix the lead names in the headers"),
    ("processing", "sampling_rate", "the headers give no valid sampling rate: fix the headers"),
    ("missing_file", "", "check data.path: it must be the dataset's root folder"),
    ("truncated", "", "the signal files are cut short: download them again"),
    ("length_mismatch", "", "headers and signal files disagree on the length: download them again"),
    ("flat_signal", "", "check the files, or set data.quality.max_flat_leads: null to keep such records"),
    ("flat_leads", "", "raise data.quality.max_flat_leads (or set it to null) to keep records with flat leads"),
    ("corrupt_header", "", "the headers cannot be parsed: download them again"),
]


def _processing_problem(rec: ECGRecord, contract_leads: tuple[str, ...] | list[str], error: ValueError) -> dict[str, str]:
    """Reason and detail of a record the processor refused; ``unknown_leads`` when no lead name is one the model
    knows (a channel called ``ECG``), since then the lead names, not the data, are the problem."""
    if len(map_leads(list(rec.lead_names), list(contract_leads)).missing) == len(contract_leads):
        return {"reason": "unknown_leads", "detail": f"lead(s) {list(rec.lead_names)} are none of the model's leads "
                                                      f"{list(contract_leads)}"}
    return {"reason": "processing", "detail": str(error)}


def explain_nothing_cached(source: str, skipped: list[dict[str, str]], n_requested: int) -> str:
    """The error for a source of which no record could be cached: per reason, how many, an example, a hint."""
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for s in skipped:
        hint = next((h for reason, needle, h in _HINTS if reason == s["reason"] and needle in s["detail"]), "")
        groups.setdefault((s["reason"], hint), []).append(s)
    lines = [f"No record of {source} could be cached ({n_requested} requested):"]
    for (reason, hint), items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        first = items[0]
        lines.append(f"  {len(items)} record(s), {reason}: {first['detail']} (e.g. {first['record_id']})"
                     + (f"; {hint}" if hint else ""))
    if not skipped:
        lines.append("  the records yielded no windows")
    return "\n".join(lines)


STALE_BUILD_SECONDS = 24 * 3600


def _remove_stale_builds(root: Path, prefix: str) -> None:
    """Delete temporary folders of builds of this key killed long ago (SIGKILL skips the cleanup below); a
    folder touched in the last day may belong to a build still running in another process, so it stays."""
    import time

    for p in root.glob(prefix + "*"):
        try:
            if p.is_dir() and time.time() - p.stat().st_mtime > STALE_BUILD_SECONDS:
                logger.info("removing %s, left by a cache build that was killed", p)
                shutil.rmtree(p, ignore_errors=True)
        except FileNotFoundError:
            pass


def publish_build(tmp: Path, final: Path, marker: str) -> bool:
    """Rename a finished build ``tmp`` to ``final`` (atomic on one filesystem). ``False`` when another process
    finished the same build first (``final/marker`` exists): ``tmp`` is removed and theirs is used."""
    try:
        os.replace(tmp, final)
        return True
    except OSError:
        if not (final / marker).exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return False


def _log_report(report: dict[str, Any], path: Path, reused: bool) -> None:
    what = "using cache" if reused else "built cache"
    logger.info("%s %s: %d records, %d windows", what, path, report["n_cached"], report["n_windows"])
    if report["skipped"]:
        logger.warning(
            "%d of %d records skipped (%s); details in %s",
            len(report["skipped"]), report["n_requested"], report["skipped_by_reason"], path / REPORT_FILE,
        )


class WindowDataset(torch.utils.data.Dataset):
    """Windows of selected records from an :class:`ECGCache`, with their record's labels.

    Each item is a dict of ``input_values`` (the contract's input shape), ``attention_mask``, ``labels`` and
    ``record_index`` (position of the record in ``record_ids``, for aggregating window predictions).
    Batched access (``__getitems__``) gathers a whole batch from the memory-mapped Arrow buffers at once.
    """

    def __init__(self, cache: ECGCache, record_ids: list[Any], labels: np.ndarray, input_shape: tuple[int, ...]) -> None:
        if len(record_ids) != len(labels):
            raise ValueError(f"{len(record_ids)} record ids but {len(labels)} label rows")
        pos = {str(r): i for i, r in enumerate(record_ids)}
        row_pos = np.array([pos.get(str(r), -1) for r in cache.row_record_ids])
        self.rows = np.flatnonzero(row_pos >= 0)
        self.row_record = row_pos[self.rows]
        present = set(self.row_record.tolist())
        self.missing_records = [record_ids[i] for i in range(len(record_ids)) if i not in present]
        self.cache = cache
        self.labels = labels
        self.record_ids = list(record_ids)
        self.input_shape = tuple(input_shape)
        self.n_records = len(record_ids)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices)
        rows = self.rows[idx]
        x = self.cache.take("input_values", rows).reshape((len(idx),) + self.input_shape)
        m = self.cache.take("attention_mask", rows).reshape((len(idx),) + self.input_shape)
        rec = self.row_record[idx]
        return {
            "input_values": torch.from_numpy(x),
            "attention_mask": torch.from_numpy(m.astype(np.int64)),
            "labels": torch.from_numpy(self.labels[rec]),
            "record_index": torch.from_numpy(rec.astype(np.int64)),
        }

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


def collate_windows(batch: Any) -> dict[str, torch.Tensor]:
    """DataLoader ``collate_fn``: batches from ``__getitems__`` are already collated."""
    if isinstance(batch, dict):
        return batch
    return torch.utils.data.default_collate(batch)


def make_loader(
    dataset: WindowDataset,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
) -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate_windows,
        drop_last=drop_last,
        generator=generator,
    )


__all__: list[str] = [
    "ECGCache",
    "WindowDataset",
    "build_cache",
    "cache_key",
    "collate_windows",
    "default_cache_dir",
    "make_loader",
]
