"""The recording store: each long recording's processed signal kept once, epochs and context cut on read.

The Arrow window cache (:mod:`ecg_adapt.data.cache`) writes one row per model window of every requested unit. For
a night of sleep that is wasteful twice over: a 1-lead PSG ECG fed to a 12-lead model stores eleven lead blocks
of zeros (and a mask byte per sample), and a source with ``context_epochs=c`` materialises every epoch
``2c + 1`` times, once inside each overlapping window (10 half-hour nights: 172 MB; SHHS-1 would take ~1.7 TB).

The store keeps, per recording, the model windows of **every whole epoch once** (labelled or not, so neighbours
and per-epoch prediction can use them), at the backbone's rate, in the contract's window geometry:

* only the lead blocks that carry signal in some window of the recording (``blocks.npy``); the others are
  zeros on read, exactly what the processor produced for them;
* the attention mask as one code per (window, lead block): all zeros, all ones, or (rare: padding) an index
  into ``mixed_masks.npy`` that holds that block's mask sample by sample;
* values as ``float16`` when the processor normalises amplitudes (a ``normalize`` step: the inputs are then
  O(1), and float16's relative rounding of at most 2**-11 = 4.9e-4 is below the quantisation of the PSG ECGs
  it stores: SHHS-1 records its ECG with 8-bit digital values, 1/255 of the range, slpdb with 12 bits, 1/4095);
  ``float32`` (bit-exact) otherwise, or when a value would not fit float16's range (65504).

Each epoch is processed **alone**, by the same function as the window cache
(:func:`ecg_adapt.data.cache.process_unit`), so the windows of epoch ``k`` are the window cache's windows of
unit ``"<record>/k"`` of a ``context_epochs=0`` source (bit for bit with float32 values, to float16 rounding
otherwise). Context is cut on read by :class:`~ecg_adapt.data.context.ContextWindowDataset` from the
neighbouring windows. A source with ``context_epochs > 0`` (one span processed as a whole, normalised over
the span) keeps the window cache, whose inputs the store could not reproduce.

Layout: ``<cache_dir>/<source>-store-<key>/<record>-<record key>/`` with ``values.npy`` ``(windows, blocks,
window_samples)``, ``blocks.npy``, ``mask_codes.npy`` ``(windows, leads)``, ``mixed_masks.npy``,
``mixed_index.npy``, ``epochs.npy`` and ``windows.npy`` (the epoch and window index of each row) and
``meta.json``, the completion marker, written last. The store key hashes the source fingerprint, the
processor's saved config, the quality thresholds and the format version; a recording's key adds the size and
modification time of that recording's files (``recording_files()``), so one changed night is rebuilt alone. A
recording is written to a temporary folder renamed into place when complete: a build killed at any point
leaves the finished recordings usable and no partial one. A recording that cannot be read is reported (every
requested epoch of it is listed as skipped, with the reason) and not stored; the others go on. ``.npy`` files
are opened with ``allow_pickle=False`` and memory-mapped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..processing.processor import ECGProcessor
from ..processing.quality import QualityThresholds
from ..progress import Progress
from .cache import (
    RecordSource,
    _remove_stale_builds,
    default_cache_dir,
    explain_nothing_cached,
    files_digest,
    input_files_digest,
    key_digest,
    process_unit,
    processor_key_config,
    publish_build,
)
from .record import RecordError

logger = logging.getLogger(__name__)

STORE_FORMAT_VERSION = 1
MARKER = "meta.json"
MASK_ZERO, MASK_ONE, MASK_MIXED = 0, 1, 2
_FLOAT16_MAX = float(np.finfo(np.float16).max)


def supports_store(source: Any) -> str | None:
    """``None`` when ``source``'s units are epochs of long recordings the store can hold, else why not."""
    needed = ("recordings", "epoch_samples", "iter_records", "fingerprint")
    missing = [n for n in needed if not hasattr(source, n)]
    if missing:
        return f"it is not a source of scored epochs of long recordings (no {', '.join(missing)})"
    if getattr(source, "context_epochs", 0):
        return (f"context_epochs={source.context_epochs} processes each labelled epoch with its neighbours as one span; "
                "use context_epochs=0 and ContextWindowDataset to take the neighbours from the store")
    return None


def store_dtype(processor: ECGProcessor) -> np.dtype:
    """``float16`` when the processor normalises amplitudes (see the module docstring), else ``float32``."""
    return np.dtype(np.float16) if any(s.get("name") == "normalize" for s in processor.steps) else np.dtype(np.float32)


def store_key(source: RecordSource, processor: ECGProcessor, quality: QualityThresholds) -> str:
    """The key of a store (see the module docstring); the recordings' own files key each recording."""
    return key_digest({"version": STORE_FORMAT_VERSION, "source": source.fingerprint(),
                       "processor": processor_key_config(processor), "quality": quality.to_dict()})


def recording_key(source: Any, record: str, exclude: list[Path]) -> str:
    """The key of one recording inside a store: its files' paths, sizes and modification times."""
    if hasattr(source, "recording_files"):
        files = files_digest(source.recording_files(record))
    else:  # a source that cannot say which files a recording has: any change to its files rebuilds every one
        files = input_files_digest(source, exclude)
    return key_digest({"record": record, "files": files})


def _safe_name(record: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in record)


@dataclass
class StoredRecording:
    """One recording's arrays, memory-mapped on first use."""

    record: str
    path: Path
    meta: dict[str, Any]
    _arrays: dict[str, np.ndarray] | None = None

    def array(self, name: str) -> np.ndarray:
        if self._arrays is None:
            self._arrays = {}
        if name not in self._arrays:
            self._arrays[name] = np.load(self.path / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        return self._arrays[name]

    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers started with "spawn" pickle the dataset: send paths, and map the files again there.
        return {**self.__dict__, "_arrays": None}


class _RecordingWriter:
    """Collects one recording's windows ``(leads, T)`` and writes them compactly (see the module docstring).

    Masks are reduced to their per-block codes as windows arrive (only padded blocks keep their samples), and the
    blocks that carry signal are tracked as they arrive, so that a night is held once in memory, in float32.
    """

    def __init__(self, shape: tuple[int, int], dtype: np.dtype) -> None:
        self.shape, self.dtype = shape, np.dtype(dtype)
        self.windows: list[np.ndarray] = []
        self.codes: list[np.ndarray] = []
        self.mixed: list[np.ndarray] = []
        self.mixed_at: list[tuple[int, int]] = []
        self.carries = np.zeros(shape[0], dtype=bool)
        self.peak = 0.0

    def add(self, x: np.ndarray, m: np.ndarray) -> None:
        i = len(self.windows)
        self.windows.append(x)
        self.peak = max(self.peak, float(np.abs(x).max()) if x.size else 0.0)
        # A block is stored when it holds a value that is not zero in the stored dtype. Why not "any value != 0":
        # a filter run after Flatten (HuBERT-ECG's decimate) rings into the absent leads' blocks with values down
        # to 1e-40, which float16 rounds to 0 anyway; storing those blocks would store all twelve leads.
        self.carries |= np.any(x.astype(self.dtype) != 0, axis=1)
        ones, zeros = m.all(axis=1), ~m.any(axis=1)
        code = np.where(ones, MASK_ONE, np.where(zeros, MASK_ZERO, MASK_MIXED)).astype(np.uint8)
        for lead in np.flatnonzero(code == MASK_MIXED):
            self.mixed_at.append((i, int(lead)))
            self.mixed.append(m[lead].astype(np.int8))
        self.codes.append(code)

    def write(self, folder: Path, epochs: list[int], window_index: list[int], meta: dict[str, Any]) -> dict[str, Any]:
        """Write the arrays, then ``meta.json`` (the completion marker) last."""
        n_leads, t = self.shape
        dtype = self.dtype
        if dtype == np.float16 and self.peak > _FLOAT16_MAX:
            dtype = np.dtype(np.float32)  # would overflow: keep it exact instead
            self.carries = np.any([np.any(x != 0, axis=1) for x in self.windows], axis=0) if self.windows else self.carries
        blocks = np.flatnonzero(self.carries)
        values = np.empty((len(self.windows), len(blocks), t), dtype=dtype)
        for i, x in enumerate(self.windows):
            values[i] = x[blocks]
        codes = np.stack(self.codes) if self.codes else np.zeros((0, n_leads), np.uint8)
        mixed_index = np.full(codes.shape, -1, dtype=np.int32)
        for j, (i, lead) in enumerate(self.mixed_at):
            mixed_index[i, lead] = j
        mixed = np.stack(self.mixed) if self.mixed else np.zeros((0, t), np.int8)
        np.save(folder / "values.npy", values)
        np.save(folder / "blocks.npy", blocks.astype(np.int64))
        np.save(folder / "mask_codes.npy", codes)
        np.save(folder / "mixed_index.npy", mixed_index)
        np.save(folder / "mixed_masks.npy", mixed)
        np.save(folder / "epochs.npy", np.asarray(epochs, dtype=np.int64))
        np.save(folder / "windows.npy", np.asarray(window_index, dtype=np.int64))
        meta = {**meta, "dtype": str(dtype), "n_windows": len(self.windows), "window_shape": [int(n_leads), int(t)],
                "stored_blocks": blocks.tolist()}
        (folder / MARKER).write_text(json.dumps(meta, indent=1, default=str) + "\n")  # the completion marker, last
        return meta


def _build_recording(source: Any, record: str, processor: ECGProcessor, quality: QualityThresholds,
                     on_error: Literal["skip", "raise"], final: Path, dtype: np.dtype) -> StoredRecording | dict[str, str]:
    """Process every whole epoch of ``record`` and write it to ``final`` atomically; a skip entry if unreadable."""
    rec = source.recordings[record]
    units = [f"{record}/{k}" for k in range(len(rec.stages))]
    shape = (processor.contract.n_leads, processor.contract.window_samples)
    writer = _RecordingWriter(shape, dtype)
    epochs: list[int] = []
    window_index: list[int] = []
    skipped: list[dict[str, str]] = []
    notes: Counter[str] = Counter()
    read_errors: list[RecordError] = []
    for uid, item in source.iter_records(units):
        if isinstance(item, RecordError) and item.reason not in ("out_of_range",):
            read_errors.append(item)
        out, problem = process_unit(processor, quality, uid, item, on_error, notes)
        if problem is not None:
            skipped.append(problem)
            continue
        assert out is not None
        k = int(str(uid).rpartition("/")[2])
        for w in range(out.input_values.shape[0]):
            writer.add(out.input_values[w].reshape(shape), out.attention_mask[w].reshape(shape))
            epochs.append(k)
            window_index.append(w)
    if units and len(read_errors) == len(units):  # the recording itself could not be read: report, do not store
        first = read_errors[0]
        return {"record_id": record, "reason": first.reason, "detail": first.detail}
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        meta = writer.write(tmp, epochs, window_index, {
            "format_version": STORE_FORMAT_VERSION, "record": record, "n_epochs": len(units),
            "sampling_rate": float(processor.contract.sampling_rate), "skipped": skipped,
            "processing_notes": dict(notes)})
        if not publish_build(tmp, final, MARKER):  # another process finished first: use theirs
            meta = json.loads((final / MARKER).read_text())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return StoredRecording(record, final, meta)


class RecordingStore:
    """The requested epochs of a built store, with the :class:`~ecg_adapt.data.cache.ECGCache` interface.

    ``row_record_ids`` / ``row_windows`` list the windows of the requested units (in the order the window cache
    would hold them), :meth:`take` gathers rows of ``input_values`` or ``attention_mask`` as
    ``(rows, leads, window_samples)`` arrays, ``report`` is the build report (``report["skipped"]``: every
    requested unit not stored, with its reason). :class:`~ecg_adapt.data.cache.WindowDataset` and
    :class:`~ecg_adapt.data.context.ContextWindowDataset` read it as they read the window cache.

    Args:
        path: the store folder.
        recordings: the stored recordings the requested units come from.
        ids: the requested unit ids ``"<record>/<epoch>"``.
        report: the build report (see :func:`build_store`).
    """

    def __init__(self, path: Path, recordings: list[StoredRecording], ids: list[Any], report: dict[str, Any]) -> None:
        self.path = Path(path)
        self.recordings = recordings
        self.report = report
        self.shape: tuple[int, int] = (0, 0)
        rec_rows, local_rows, row_ids, row_w = [], [], [], []
        by_record = {r.record: i for i, r in enumerate(recordings)}
        wanted: dict[str, list[int]] = {}
        for uid in ids:
            record, _, k = str(uid).rpartition("/")
            if record in by_record and k.isdigit():
                wanted.setdefault(record, []).append(int(k))
        for record, ks in wanted.items():
            i = by_record[record]
            r = recordings[i]
            self.shape = tuple(r.meta["window_shape"]) if r.meta["n_windows"] else self.shape
            epochs = r.array("epochs")
            win = r.array("windows")
            order = np.argsort(epochs, kind="stable")
            starts = np.searchsorted(epochs[order], ks, side="left")
            stops = np.searchsorted(epochs[order], ks, side="right")
            for k, a, b in zip(ks, starts, stops):
                rows = order[a:b]
                rec_rows.append(np.full(len(rows), i, dtype=np.int64))
                local_rows.append(rows.astype(np.int64))
                row_ids.extend([f"{record}/{k}"] * len(rows))
                row_w.append(win[rows])
        cat = lambda parts: np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)  # noqa: E731
        self._row_rec, self._row_local = cat(rec_rows), cat(local_rows)
        self.row_record_ids = np.asarray(row_ids, dtype=object)
        self._row_windows = cat(row_w)
        if not self.shape[0]:
            self.shape = tuple(report.get("window_shape", (0, 0)))  # type: ignore[assignment]

    def __len__(self) -> int:
        return len(self.row_record_ids)

    def whole_recordings(self) -> RecordingStore:
        """A view of every stored epoch of the same recordings, labelled or not.

        Give it to :class:`~ecg_adapt.data.context.ContextWindowDataset` (``neighbours="cache"``) to take the
        neighbours of the labelled epochs from the whole night: an epoch next to a movement or unscored epoch then
        sees that epoch's signal (as per-epoch prediction does) rather than an absent window.
        """
        ids = [f"{r.record}/{k}" for r in self.recordings for k in np.unique(np.asarray(r.array("epochs")))]
        return RecordingStore(self.path, self.recordings, ids, {**self.report, "n_windows": None, "view": "whole recordings"})

    @property
    def row_windows(self) -> np.ndarray:
        """The index of each row's window within its epoch."""
        return self._row_windows

    @property
    def skipped(self) -> list[dict[str, str]]:
        return self.report["skipped"]

    def nbytes(self) -> int:
        """Bytes on disk of the recordings this view reads."""
        return sum(r.nbytes() for r in self.recordings)

    def _prepare(self) -> None:
        """Per-row mask codes and per-recording block ranges, gathered once (kept small: bytes per row)."""
        if hasattr(self, "_codes"):
            return
        n_leads = self.shape[0]
        self._codes = np.zeros((len(self), n_leads), dtype=np.uint8)
        self._has_mixed = np.zeros(len(self.recordings), dtype=bool)
        self._block_range: list[tuple[int, int] | None] = []
        for i, r in enumerate(self.recordings):
            sel = np.flatnonzero(self._row_rec == i)
            if len(sel):
                self._codes[sel] = r.array("mask_codes")[self._row_local[sel]]
            self._has_mixed[i] = bool((r.array("mixed_index") >= 0).any())
            blocks = np.asarray(r.array("blocks"))
            contiguous = len(blocks) and (np.diff(blocks) == 1).all()
            self._block_range.append((int(blocks[0]), int(blocks[-1]) + 1) if contiguous else None)
        self._values = [r.array("values") for r in self.recordings]
        # Every recording stores the same contiguous lead blocks in the same dtype (the usual case): batches are
        # then gathered into one buffer (see take).
        layouts = {(rng, v.dtype) for rng, v in zip(self._block_range, self._values)}
        self._uniform = layouts.pop() if len(layouts) == 1 and None not in self._block_range else None

    def take(self, column: str, rows: np.ndarray) -> np.ndarray:
        """Rows of ``input_values`` (float32) or ``attention_mask`` (int8), shape ``(rows, leads, samples)``."""
        if column not in ("input_values", "attention_mask"):
            raise KeyError(f"the recording store has columns input_values and attention_mask, not {column!r}")
        self._prepare()
        rows = np.asarray(rows, dtype=np.int64)
        n_leads, t = self.shape
        if not len(rows):
            return np.zeros((0, n_leads, t), dtype=np.float32 if column == "input_values" else np.int8)
        rec, local = self._row_rec[rows], self._row_local[rows]
        if column == "attention_mask":
            out = np.empty((len(rows), n_leads, t), dtype=np.int8)
            out[:] = (self._codes[rows] == MASK_ONE).astype(np.int8)[..., None]  # int8 first: a bool broadcast is 20x slower
            for r_i in (int(r) for r in np.unique(rec) if self._has_mixed[r]):  # padded windows (rare)
                sel = np.flatnonzero(rec == r_i)
                mixed = self.recordings[r_i].array("mixed_index")[local[sel]]
                j, lead = np.nonzero(mixed >= 0)
                out[sel[j], lead] = self.recordings[r_i].array("mixed_masks")[mixed[j, lead]]
            return out
        if rec.min() == rec.max():
            groups = [np.arange(len(rows))]
        else:
            order = np.argsort(rec, kind="stable")
            groups = np.split(order, np.flatnonzero(np.diff(rec[order])) + 1)
        if self._uniform is not None:
            # Gather the stored blocks of all rows in the requested order (stored dtype), then convert to float32
            # once: torch's vectorised half->float conversion is several times faster than numpy's.
            (b0, b1), dtype = self._uniform
            buf = np.empty((len(rows), b1 - b0, t), dtype=dtype)
            for g in groups:
                buf[g] = self._values[int(rec[g[0]])][local[g]]
            gathered = buf if buf.dtype == np.float32 else torch.from_numpy(buf).to(torch.float32).numpy()
            if (b0, b1) == (0, n_leads):
                return gathered
            out = np.zeros((len(rows), n_leads, t), dtype=np.float32)
            out[:, b0:b1] = gathered
            return out
        out = np.zeros((len(rows), n_leads, t), dtype=np.float32)
        for g in groups:
            r = self.recordings[int(rec[g[0]])]
            blocks = r.array("blocks")
            if len(blocks):
                out[g[:, None], blocks[None, :]] = r.array("values")[local[g]]
        return out


def build_store(
    source: Any,
    processor: ECGProcessor,
    ids: list[Any],
    cache_dir: str | os.PathLike | None = None,
    on_error: Literal["skip", "raise"] = "skip",
    progress: bool = True,
    quality: QualityThresholds | None = None,
) -> RecordingStore:
    """Store every whole epoch of the recordings of ``ids`` (those not stored yet) and open the requested ones.

    Called by :func:`ecg_adapt.data.cache.build_cache` for sources of scored epochs (``layout="auto"``). Units
    that cannot be given are listed in ``report["skipped"]`` with their reason (``unknown_record``, the read
    error of an unreadable recording, the processor's or the quality check's reason for one epoch), as the
    window cache lists them; ``on_error="raise"`` raises the first instead.

    Raises:
        ValueError: the source cannot be stored (see :func:`supports_store`), or no requested unit could be.
    """
    reason = supports_store(source)
    if reason is not None:
        raise ValueError(f"{getattr(source, 'name', source)}: {reason}")
    quality = quality or QualityThresholds()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = store_key(source, processor, quality)
    folder = root / f"{source.name}-store-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    dtype = store_dtype(processor)
    order: list[str] = []
    skipped: list[dict[str, str]] = []
    for uid in ids:
        record, sep, k = str(uid).rpartition("/")
        if not sep or not k.isdigit() or record not in source.recordings:
            problem = RecordError(str(uid), "unknown_record", f"{source.name} has no usable recording {record or uid!r}")
            if on_error == "raise":
                raise problem
            skipped.append({"record_id": str(uid), "reason": problem.reason, "detail": problem.detail})
        elif record not in order:
            order.append(record)
    stored: dict[str, StoredRecording] = {}
    failed: dict[str, dict[str, str]] = {}
    built = 0
    bar = Progress(len(order), f"storing {source.name}", "rec", disable=not progress)
    for record in order:
        bar.update(1)
        final = folder / f"{_safe_name(record)}-{recording_key(source, record, [root.resolve()])}"
        if (final / MARKER).exists():
            stored[record] = StoredRecording(record, final, json.loads((final / MARKER).read_text()))
            continue
        _remove_stale_builds(folder, f".{final.name}-")
        result = _build_recording(source, record, processor, quality, on_error, final, dtype)
        if isinstance(result, dict):
            failed[record] = result
            logger.warning("%s: recording %s skipped (%s: %s)", source.name, record, result["reason"], result["detail"])
        else:
            stored[record] = result
            built += 1
    bar.close()
    epoch_skips = {s["record_id"]: s for r in stored.values() for s in r.meta["skipped"]}
    notes: Counter[str] = Counter()
    for r in stored.values():
        notes.update(r.meta.get("processing_notes", {}))
    for uid in ids:
        record, _, k = str(uid).rpartition("/")
        if record in failed:
            skipped.append({"record_id": str(uid), "reason": failed[record]["reason"], "detail": failed[record]["detail"]})
        elif record in stored:
            if str(uid) in epoch_skips:
                skipped.append(dict(epoch_skips[str(uid)]))
            elif int(k) >= stored[record].meta["n_epochs"]:
                skipped.append({"record_id": str(uid), "reason": "out_of_range",
                                "detail": f"{record} has {stored[record].meta['n_epochs']} whole epochs"})
    recordings = [stored[r] for r in order if r in stored]
    report = {
        "layout": "store",
        "source": source.fingerprint(),
        "cache_key": key_digest({"store": key, "recordings": [r.path.name for r in recordings],
                                 "ids": hashlib.sha256(json.dumps([str(i) for i in ids]).encode()).hexdigest()}),
        "n_requested": len(ids),
        "n_cached": len(ids) - len(skipped),
        "skipped": skipped,
        "skipped_by_reason": dict(Counter(s["reason"] for s in skipped)),
        "skipped_recordings": failed,
        "processing_notes": dict(notes),
        "processor": processor.to_dict(),
        "quality": quality.to_dict(),
        "window_shape": [processor.contract.n_leads, processor.contract.window_samples],
        "recordings_built": built,
        "recordings_reused": len(recordings) - built,
    }
    view = RecordingStore(folder, recordings, ids, report)
    report["n_windows"] = len(view)
    if not len(view):
        raise ValueError(explain_nothing_cached(source.name, skipped, len(ids)))
    logger.info("%s store %s: %d recordings (%d built, %d reused), %d windows of %d requested units",
                source.name, folder, len(recordings), built, len(recordings) - built, len(view), len(ids))
    if skipped:
        logger.warning("%d of %d units skipped (%s)", len(skipped), len(ids), report["skipped_by_reason"])
    return view


__all__ = ["RecordingStore", "StoredRecording", "build_store", "store_dtype", "store_key", "supports_store"]
