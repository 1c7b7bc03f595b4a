"""Prediction with a saved model: records in, per-record label probabilities out."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .adaptation.core import load_adapted
from .data.edf import read_edf
from .data.record import ECGRecord, RecordError, read_wfdb
from .models.classifier import ECGClassifier
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
    def from_pretrained(cls, path: str | os.PathLike, missing_leads: str | None = None, aggregation: str = "mean") -> "Predictor":
        path = Path(path)
        model = load_adapted(path)
        processor = ECGProcessor.from_pretrained(str(path))
        if missing_leads is not None:
            processor.missing_leads = missing_leads
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        assert isinstance(base, ECGClassifier)
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
