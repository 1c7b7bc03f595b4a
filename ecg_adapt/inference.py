"""Prediction with a saved model: records in, per-record label probabilities out; nights in, one row per epoch out.

A window classifier (:class:`Predictor`) predicts per record: its windows' probabilities are aggregated. A
sequence classifier (:class:`SequencePredictor`, an :class:`~ecg_adapt.models.sequence.ECGSequenceClassifier`
saved with its processor) stages a whole night per scoring epoch: the ECG channel named in the saved config
(``ecg_channels``, in order of preference; ``ecg_lead``, the backbone lead it stands for; ``epoch_seconds``) is
read from a PSG file (EDF: SHHS, MESA; WFDB: slpdb), every whole epoch is processed alone, exactly as the
training caches process it, and each epoch's windows are seen with their neighbours as
:class:`~ecg_adapt.data.context.ContextWindowDataset` gives them in training (windows before the first or after
the last are zeros with ``attention_mask = 0``); the epoch's probabilities are the mean over its windows.
No other channel (EEG, EOG, EMG ...) is ever given to the model.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .adaptation.core import ADAPTATION_CONFIG_NAME, load_adapted
from .data.context import ContextWindowDataset
from .data.edf import read_edf, read_edf_channel, read_edf_header
from .data.record import ECGRecord, RecordError, find_channel, read_wfdb, read_wfdb_channel, read_wfdb_header
from .models.classifier import ECGClassifier
from .models.sequence import ECGSequenceClassifier
from .utils import atomic_write
from .processing.processor import ECGProcessor
from .tasks.windows import aggregate_windows
from .progress import Progress


@dataclass
class Prediction:
    """The prediction for one record. For a regression model (``problem_type="regression"``, e.g. age),
    ``probabilities`` holds the predicted values in the target's unit (years) and ``predicted`` is empty."""

    record_id: str
    probabilities: dict[str, float]
    predicted: list[str]
    n_windows: int
    report: str
    window_probabilities: list[dict[str, float]] = field(default_factory=list)
    window_starts_s: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Predictor:
    """A loaded model with its processor, labels and decision thresholds.

    Example:
        >>> predictor = Predictor.from_pretrained("runs/demo/model", missing_leads="zero")   # doctest: +SKIP
        >>> predictor.predict([read_wfdb("records/HR06000")])[0].probabilities              # doctest: +SKIP
    """

    model: torch.nn.Module
    processor: ECGProcessor
    labels: list[str]
    thresholds: np.ndarray
    multi_label: bool = True
    aggregation: str = "mean"
    regression: bool = False
    """Outputs are values (the model un-standardises them), not logits: no sigmoid, no thresholds."""

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, missing_leads: str | None = None,
                        aggregation: str = "mean") -> "Predictor | SequencePredictor":
        """The predictor of a saved model: a :class:`SequencePredictor` (per epoch) for a sequence classifier,
        a :class:`Predictor` (per record) for a window classifier."""
        path = Path(path)
        if is_sequence_model_folder(path) and not (path / ADAPTATION_CONFIG_NAME).exists():
            model = ECGSequenceClassifier.from_pretrained(str(path)).eval()  # saved with save_pretrained
        else:
            model = load_adapted(path)
        processor = ECGProcessor.from_pretrained(str(path))
        if missing_leads is not None:
            processor.missing_leads = missing_leads
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        if isinstance(base, ECGSequenceClassifier):
            return SequencePredictor.from_model(model, processor)
        if not isinstance(base, ECGClassifier):
            raise TypeError(f"{path} holds a {type(base).__name__}, not an ECGClassifier or ECGSequenceClassifier")
        labels = base.labels
        thresholds = np.full(len(labels), 0.5)
        task_file = path / "task.json"
        if task_file.exists():
            saved = json.loads(task_file.read_text()).get("thresholds")
            if saved:
                thresholds = np.array([saved[name] for name in labels])
        multi = base.config.problem_type != "single_label_classification"
        regression = base.config.problem_type == "regression"
        return cls(model=model, processor=processor, labels=labels, thresholds=thresholds, multi_label=multi and not regression,
                   aggregation=aggregation, regression=regression)

    def predict(self, records: Iterable[ECGRecord], batch_size: int = 64, progress: bool = False,
                per_window: bool = False) -> list[Prediction]:
        """Predict every record (windows batched together, then aggregated per record).

        Raises:
            ValueError: the first record the processor cannot use (see :meth:`predict_each` to go on).
        """
        preds, errors = self.predict_each(records, batch_size=batch_size, progress=progress, per_window=per_window,
                                          on_error="raise")
        return preds

    def predict_each(self, records: Iterable[ECGRecord], batch_size: int = 64, progress: bool = False,
                     per_window: bool = False, on_error: str = "skip") -> tuple[list[Prediction], list[RecordError]]:
        """Predict the records the processor can use; the others come back as :class:`RecordError` with a
        reason (``missing_leads``, ``nan_run``, ``infinite_values``, ``duplicate_leads``, ``bad_sampling_rate``,
        ``processing``) instead of stopping the whole batch. ``on_error="raise"`` raises the first one."""
        good: list[tuple[ECGRecord, Any]] = []
        errors: list[RecordError] = []
        for i, rec in enumerate(records):
            rid = str(rec.record_id if rec.record_id is not None else i)
            try:
                good.append((rec, self.processor.process(rec.signal, rec.sampling_rate, rec.lead_names, record_id=rid)))
            except ValueError as e:
                if on_error == "raise":
                    raise
                errors.append(RecordError(rid, processing_reason(str(e)), str(e)))
        return self._predict_processed(good, batch_size, progress, per_window), errors

    @torch.no_grad()
    def _predict_processed(self, items: list[tuple[ECGRecord, Any]], batch_size: int, progress: bool,
                           per_window: bool) -> list[Prediction]:
        self.model.eval()
        out: list[Prediction] = []
        bar = Progress(len(items), "predicting", "rec", disable=not progress)  # bar on a terminal, lines otherwise
        for start in range(0, len(items), max(1, batch_size // 2)):
            chunk = [rec for rec, _ in items[start : start + max(1, batch_size // 2)]]
            processed = [p for _, p in items[start : start + max(1, batch_size // 2)]]
            batch = ECGProcessor.collate(processed)
            probs = []
            for i in range(0, batch["input_values"].shape[0], batch_size):
                logits = self.model(input_values=batch["input_values"][i : i + batch_size],
                                    attention_mask=batch["attention_mask"][i : i + batch_size]).logits.float()
                if self.regression:
                    probs.append(logits)
                else:
                    probs.append(torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, -1))
            window_probs = torch.cat(probs).numpy()
            owner = batch["window_to_record"].numpy()
            rec_probs = aggregate_windows(window_probs, owner, self.aggregation, n_records=len(chunk))
            for j, (rec, p) in enumerate(zip(chunk, processed)):
                pr = rec_probs[j]
                if self.regression:
                    predicted = []
                elif self.multi_label:
                    predicted = [n for n, v, t in zip(self.labels, pr, self.thresholds) if v >= t]
                else:
                    predicted = [self.labels[int(np.argmax(pr))]]
                windows = [dict(zip(self.labels, map(float, w))) for w in window_probs[owner == j]] if per_window else []
                out.append(Prediction(record_id=str(rec.record_id), probabilities=dict(zip(self.labels, map(float, pr))),
                                      predicted=predicted, n_windows=p.report.n_windows, report=p.report.summary(),
                                      window_probabilities=windows,
                                      window_starts_s=list(p.report.window_starts_s) if per_window else []))
            bar.update(len(chunk))
        bar.close()
        return out


# Short reason codes for the processor's errors (its messages say the rest), for per-record reports.
_PROCESSING_REASONS = (
    ("lacks lead", "missing_leads"),
    ("none of its leads", "missing_leads"),
    ("NaN (limit", "nan_run"),
    ("infinite values", "infinite_values"),
    ("two leads named", "duplicate_leads"),
    ("sampling_rate", "bad_sampling_rate"),
)


def processing_reason(message: str) -> str:
    """The short reason code of a processor error message (``processing`` when none applies)."""
    return next((code for needle, code in _PROCESSING_REASONS if needle in message), "processing")


def find_wfdb_records(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """WFDB record paths (without extension) from files or folders (every ``*.hea`` inside, sorted)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(h.with_suffix("") for h in p.rglob("*.hea")))
        elif p.suffix == ".hea":
            found.append(p.with_suffix(""))
        elif p.with_name(p.name + ".hea").exists():
            found.append(p)
        else:
            raise FileNotFoundError(f"{p} is neither a folder nor a WFDB record (no {p.name}.hea)")
    return found


def find_inputs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Every readable input under ``paths``: WFDB records (path without extension), ``.edf`` and ``.npy``
    files; folders are searched recursively (sorted)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(h.with_suffix("") for h in p.rglob("*.hea")))
            found.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() in (".edf", ".npy")))
        elif p.suffix.lower() in (".edf", ".npy"):
            if not p.exists():
                raise FileNotFoundError(f"{p} does not exist")
            found.append(p)
        else:
            found.extend(find_wfdb_records([p]))
    return found


def read_input(path: Path, sampling_rate: float | None = None, lead_names: Sequence[str] | None = None) -> ECGRecord:
    """Read one input: WFDB (via wfdb), EDF (its voltage channels, or ``lead_names``) or a ``(leads, time)`` ``.npy`` array in mV,
    which needs ``sampling_rate`` and ``lead_names`` (a bare array does not say what it is)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if sampling_rate is None or not lead_names:
            raise ValueError(f"{path}: a .npy array needs --sampling-rate and --leads (its rate and lead order)")
        arr = np.load(path, allow_pickle=False)
        if arr.ndim != 2 or arr.shape[0] != len(lead_names):
            raise ValueError(f"{path}: expected a ({len(lead_names)}, time) array for leads {list(lead_names)}, got {arr.shape}")
        return ECGRecord(arr.astype(np.float64), float(sampling_rate), list(lead_names), record_id=path.stem)
    if suffix == ".edf":
        return read_edf(path, channels=list(lead_names) if lead_names else None)
    return read_wfdb(path)


def read_records(paths: Sequence[Path], sampling_rate: float | None = None,
                 lead_names: Sequence[str] | None = None) -> tuple[list[ECGRecord], list[RecordError]]:
    """Read inputs; unreadable ones are returned as errors, not raised."""
    ok, bad = [], []
    for p in paths:
        try:
            ok.append(read_input(Path(p), sampling_rate, lead_names))
        except RecordError as e:
            bad.append(e)
        except (ValueError, OSError) as e:  # one unreadable file never stops the others
            bad.append(RecordError(Path(p).name, "bad_input", f"{type(e).__name__}: {e}" if isinstance(e, OSError) else str(e)))
    return ok, bad


# ------------------------------------------------------------------------------------------------ per epoch
SEQUENCE_MODEL_TYPE = "ecg_sequence_classifier"
DEFAULT_ECG_CHANNELS: tuple[str, ...] = ("ECG", "EKG")
"""The ECG labels of SHHS (``ECG``), MESA (``EKG``) and slpdb (``ECG``): used when the model records none."""


def is_sequence_model_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a saved :class:`ECGSequenceClassifier` (its ``config.json`` says so)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == SEQUENCE_MODEL_TYPE
    except (OSError, ValueError):
        return False


def find_sequence_model_folder(path: str | os.PathLike) -> Path | None:
    """``path`` or ``path/model`` (a run folder) when it holds a sequence classifier, else ``None``."""
    for folder in (Path(path), Path(path) / "model"):
        if is_sequence_model_folder(folder):
            return folder
    return None


@dataclass
class Night:
    """The ECG of one PSG recording, read for per-epoch prediction."""

    record_id: str
    ecg: np.ndarray  # (n_samples,) in mV
    sampling_rate: float
    channel: str  # the label of the channel read
    channels: list[str]  # every channel of the file
    start: dt.datetime | dt.time | None = None  # when the recording started, if the file says


def _edf_start(date: str, time: str) -> dt.datetime | None:
    """EDF ``dd.mm.yy`` + ``hh.mm.ss`` (years 85-99 are 19xx, others 20xx, as the EDF spec's clipping date says)."""
    try:
        d, m, y = (int(x) for x in date.split("."))
        hh, mm, ss = (int(x) for x in time.split("."))
        return dt.datetime(1900 + y if y >= 85 else 2000 + y, m, d, hh, mm, ss)
    except ValueError:
        return None


def _no_ecg(path: Path, channels: Sequence[str], labels: Sequence[str]) -> RecordError:
    return RecordError(path.stem, "missing_ecg",
                       f"{path.name} has no ECG channel named {list(channels)}; its channels are {[l.strip() for l in labels]}: "
                       "name the ECG one with --ecg-channel LABEL (never an EEG/EOG/EMG channel)")


def read_night(path: str | os.PathLike, ecg_channels: Sequence[str] = DEFAULT_ECG_CHANNELS) -> Night:
    """The ECG channel of a PSG file: the first of ``ecg_channels`` (case-insensitive) that the file has.

    EDF files (SHHS, MESA) are read with :mod:`ecg_adapt.data.edf` (wfdb's EDF reader would average the
    mixed-rate channels of a PSG down to a common rate), WFDB records (slpdb) with wfdb; only that channel.

    Raises:
        RecordError: ``missing_ecg`` (listing the file's channels), ``bad_signal`` (the ECG's unit is not a
            voltage), or the reader's errors (missing, truncated or corrupt files).
    """
    path = Path(path)
    if path.suffix.lower() == ".edf":
        header = read_edf_header(path, path.stem)
        idx = header.find(ecg_channels)
        if idx is None:
            raise _no_ecg(path, ecg_channels, header.labels)
        ecg = read_edf_channel(path, idx, header, path.stem)  # bad_signal when its unit is not a voltage
        return Night(path.stem, ecg, header.sampling_rate(idx), header.labels[idx].strip(),
                     [l.strip() for l in header.labels], _edf_start(header.start_date, header.start_time))
    record = path.with_suffix("") if path.suffix == ".hea" else path
    wheader = read_wfdb_header(record)  # missing_file / corrupt_header
    idx = find_channel(wheader.sig_name or [], ecg_channels)
    if idx is None:
        raise _no_ecg(record, ecg_channels, wheader.sig_name or [])
    ecg = read_wfdb_channel(record, idx)  # only that channel, in mV
    start: dt.datetime | dt.time | None = None
    if wheader.base_time is not None:
        start = dt.datetime.combine(wheader.base_date, wheader.base_time) if wheader.base_date else wheader.base_time
    return Night(record.name, ecg, float(wheader.fs), wheader.sig_name[idx], list(wheader.sig_name), start)


@dataclass
class EpochPrediction:
    """One scoring epoch of a night: its index, start (s from the recording's start, and clock time when the
    file has a start time), predicted stage and per-stage probabilities (empty with ``error`` when the epoch
    could not be processed)."""

    epoch: int
    start_s: float
    clock_time: str | None
    predicted: str | None
    probabilities: dict[str, float]
    error: str = ""


@dataclass
class NightPrediction:
    """Every whole epoch of one night, in time order."""

    record_id: str
    ecg_channel: str
    lead: str
    sampling_rate: float
    epoch_seconds: float
    start: str | None
    labels: list[str]
    epochs: list[EpochPrediction]

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["epochs"] = [dict(e.__dict__) for e in self.epochs]
        return d


class _EpochWindows:
    """A night's processed windows in memory, with the interface :class:`ContextWindowDataset` reads from a
    cache (``row_record_ids``, ``row_windows``, ``take``), so prediction takes neighbours exactly as training."""

    def __init__(self, ids: list[str], windows: list[int], values: np.ndarray, mask: np.ndarray) -> None:
        self.path = Path("<memory>")
        self.row_record_ids = np.asarray(ids, dtype=object)
        self.row_windows = np.asarray(windows, dtype=np.int64)
        self._columns = {"input_values": values, "attention_mask": mask}

    def __len__(self) -> int:
        return len(self.row_record_ids)

    def take(self, column: str, rows: np.ndarray) -> np.ndarray:
        return self._columns[column][np.asarray(rows)]


@dataclass
class SequencePredictor:
    """A loaded sequence classifier that stages whole nights, one row per epoch (see the module docstring).

    Example:
        >>> predictor = Predictor.from_pretrained("runs/shhs/model")                    # doctest: +SKIP
        >>> night = predictor.predict_night(read_night("shhs1-200001.edf", predictor.ecg_channels))  # doctest: +SKIP
        >>> night.epochs[0].predicted, night.epochs[0].probabilities                    # doctest: +SKIP
    """

    model: torch.nn.Module
    processor: ECGProcessor
    labels: list[str]
    multi_label: bool
    context: int
    epoch_seconds: float = 30.0
    ecg_channels: list[str] = field(default_factory=lambda: list(DEFAULT_ECG_CHANNELS))
    ecg_lead: str | None = None
    thresholds: np.ndarray | None = None

    @classmethod
    def from_model(cls, model: torch.nn.Module, processor: ECGProcessor) -> "SequencePredictor":
        """Wrap a loaded :class:`ECGSequenceClassifier` (possibly adapted) and its processor; the channel, lead
        and epoch length come from its config (``ecg_channels``, ``ecg_lead``, ``epoch_seconds``)."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        config = base.config
        processor.check_compatible(base.signal_contract)
        channels = getattr(config, "ecg_channels", None)
        labels = [config.id2label[i] for i in range(config.num_labels)]
        return cls(model=model.eval(), processor=processor, labels=labels,
                   multi_label=config.problem_type != "single_label_classification", context=int(config.context),
                   epoch_seconds=float(getattr(config, "epoch_seconds", 30.0) or 30.0),
                   ecg_channels=list(channels) if channels else list(DEFAULT_ECG_CHANNELS),
                   ecg_lead=getattr(config, "ecg_lead", None), thresholds=np.full(len(labels), 0.5))

    def resolve_lead(self, lead: str | None = None) -> str:
        """The backbone lead the ECG channel stands for: ``lead``, else the saved ``ecg_lead``, else the contract's
        only lead (a 1-lead backbone); a clear error otherwise."""
        leads = list(self.processor.contract.leads)
        chosen = lead or self.ecg_lead or (leads[0] if len(leads) == 1 else None)
        if chosen is None:
            raise ValueError(f"the model does not record which lead its ECG channel stands for (ecg_lead); pass "
                             f"--lead, one of the model's leads {leads}")
        if chosen.lower() not in {x.lower() for x in leads}:
            raise ValueError(f"lead {chosen!r} is not one of the model's leads {leads}")
        return chosen

    @torch.no_grad()
    def predict_night(self, night: Night, lead: str | None = None, batch_size: int = 32) -> NightPrediction:
        """Predict every whole epoch of ``night`` (a trailing partial epoch is not scored).

        Raises:
            ValueError: the epoch is not a whole number of samples at the ECG's rate, the recording is shorter
                than one epoch, or no lead can be named (see :meth:`resolve_lead`).
        """
        lead = self.resolve_lead(lead)
        n = self.epoch_seconds * night.sampling_rate
        if abs(n - round(n)) > 1e-6:
            raise ValueError(f"{night.record_id}: a {self.epoch_seconds:g} s epoch is {n} samples at "
                             f"{night.sampling_rate:g} Hz, not a whole number")
        e = round(n)
        n_epochs = len(night.ecg) // e
        if n_epochs == 0:
            raise ValueError(f"{night.record_id}: {len(night.ecg) / night.sampling_rate:.1f} s of ECG, shorter than "
                             f"one {self.epoch_seconds:g} s epoch")
        shape = self.processor.contract.input_shape
        ids, windows, values, masks = [], [], [], []
        errors: dict[int, str] = {}
        for k in range(n_epochs):
            uid = f"{night.record_id}/{k}"
            try:  # each epoch alone, as the caches process a unit (data.cache.process_unit)
                out = self.processor.process(night.ecg[None, k * e:(k + 1) * e], night.sampling_rate, [lead],
                                             record_id=uid)
            except ValueError as err:
                errors[k] = f"{processing_reason(str(err))}: {err}"
                continue
            for w in range(out.input_values.shape[0]):
                ids.append(uid)
                windows.append(w)
                values.append(out.input_values[w].reshape(shape))
                masks.append(out.attention_mask[w].reshape(shape))
        scored = [f"{night.record_id}/{k}" for k in range(n_epochs) if k not in errors]
        probs = np.zeros((len(scored), len(self.labels)))
        if scored:
            mem = _EpochWindows(ids, windows, np.stack(values).astype(np.float32), np.stack(masks).astype(np.int8))
            ds = ContextWindowDataset(mem, scored, np.zeros((len(scored), 1)), shape, context=self.context)
            window_probs, owner = [], []
            for i in range(0, len(ds), batch_size):
                batch = ds.__getitems__(list(range(i, min(i + batch_size, len(ds)))))
                logits = self.model(input_values=batch["input_values"], attention_mask=batch["attention_mask"]).logits.float()
                window_probs.append(torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, -1))
                owner.append(batch["record_index"])
            probs = aggregate_windows(torch.cat(window_probs).numpy(), torch.cat(owner).numpy(), "mean",
                                      n_records=len(scored))
        by_epoch = {int(u.rpartition("/")[2]): p for u, p in zip(scored, probs)}
        epochs = []
        for k in range(n_epochs):
            start_s = k * self.epoch_seconds
            clock = _clock(night.start, start_s)
            if k in errors:
                epochs.append(EpochPrediction(k, start_s, clock, None, {}, errors[k]))
                continue
            p = by_epoch[k]
            if self.multi_label:
                predicted = ";".join(n for n, v, t in zip(self.labels, p, self.thresholds) if v >= t)
            else:
                predicted = self.labels[int(np.argmax(p))]
            epochs.append(EpochPrediction(k, start_s, clock, predicted, dict(zip(self.labels, map(float, p)))))
        start = night.start.isoformat() if night.start is not None else None
        return NightPrediction(night.record_id, night.channel, lead, night.sampling_rate, self.epoch_seconds, start,
                               list(self.labels), epochs)


def _clock(start: dt.datetime | dt.time | None, seconds: float) -> str | None:
    """The clock time ``seconds`` after ``start`` (ISO date and time when the date is known)."""
    if start is None:
        return None
    if isinstance(start, dt.datetime):
        return (start + dt.timedelta(seconds=seconds)).isoformat(timespec="seconds")
    t = dt.datetime.combine(dt.date(2000, 1, 1), start) + dt.timedelta(seconds=seconds)
    return t.time().isoformat(timespec="seconds")


def write_hypnogram(night: NightPrediction, path: str | os.PathLike) -> Path:
    """A hypnogram PNG of the predicted stages (hours from the start; the labels top to bottom in the model's
    order, e.g. W above N1 above ... REM), written atomically. Needs matplotlib (extra ``plots``)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    levels = {name: i for i, name in enumerate(night.labels)}
    hours = np.array([e.start_s for e in night.epochs] + [night.epochs[-1].start_s + night.epoch_seconds]) / 3600
    y = np.array([levels.get(e.predicted, np.nan) if e.predicted else np.nan for e in night.epochs], dtype=float)
    fig, ax = plt.subplots(figsize=(10, 3))
    ax.step(hours, np.append(y, y[-1:]), where="post", color="black", linewidth=1)
    ax.set_yticks(range(len(night.labels)), night.labels)
    ax.set_ylim(len(night.labels) - 0.5, -0.5)
    ax.set_xlabel("hours from the start" + (f" ({night.start})" if night.start else ""))
    ax.set_title(f"{night.record_id}: predicted stages per {night.epoch_seconds:g} s epoch ({night.ecg_channel} as {night.lead})")
    fig.tight_layout()
    try:
        return atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)
