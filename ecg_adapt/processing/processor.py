"""The ECG processor: turns any record into exactly the input a backbone expects.

It is an HF feature extractor (``FeatureExtractionMixin``), so ``save_pretrained`` writes
``preprocessor_config.json`` next to the weights and ``from_pretrained`` reads it back.

Order of work for one record:
1. validate (2-D, finite, a known sampling rate, leads-first);
2. map the record's leads onto the contract's leads (case-insensitive; missing leads are an error unless the
   caller chose ``missing_leads="zero"`` or ``"mask"``; either way they are listed in the report);
3. interpolate short NaN runs (longer ones are an error), report flat leads;
4. run the saved steps (filters, resampling, normalisation, windowing, flattening, decimation);
5. check the result has the contract's shape.

Window predictions are brought back to one prediction per record after the model, by
:func:`ecg_adapt.tasks.aggregate_windows`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from transformers import BatchFeature
from transformers.feature_extraction_utils import FeatureExtractionMixin

from .contract import SignalContract
from .leads import MissingLeads, map_leads
from .steps import SignalState, Step, step_from_dict

_MISSING_CHOICES = ("error", "zero", "mask")


@dataclass
class ProcessingReport:
    """What the processor did to one record: everything a user should know, nothing silent."""

    record_id: str | None
    input_leads: list[str]
    input_sampling_rate: float
    input_seconds: float
    missing_leads: list[str] = field(default_factory=list)
    missing_leads_policy: str = "error"
    lead_approximations: list[str] = field(default_factory=list)
    ignored_leads: list[str] = field(default_factory=list)
    reordered: bool = False
    nan_interpolated: dict[str, int] = field(default_factory=dict)
    flat_leads: list[str] = field(default_factory=list)
    n_windows: int = 0
    window_starts_s: list[float] = field(default_factory=list)
    padded: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        parts = [f"{self.record_id or 'record'}: {len(self.input_leads)} leads @ {self.input_sampling_rate:g} Hz, "
                 f"{self.input_seconds:.1f} s -> {self.n_windows} window(s)"]
        if self.missing_leads:
            how = "zero-filled" if self.missing_leads_policy == "zero" else "masked"
            parts.append(f"missing leads {', '.join(self.missing_leads)} {how}")
        if self.lead_approximations:
            parts.append("approximations: " + "; ".join(self.lead_approximations))
        if self.ignored_leads:
            parts.append(f"ignored leads {', '.join(self.ignored_leads)}")
        if self.nan_interpolated:
            parts.append(f"NaN samples interpolated {self.nan_interpolated}")
        if self.flat_leads:
            parts.append(f"flat leads {', '.join(self.flat_leads)}")
        if self.padded:
            parts.append("padded (masked)")
        return "; ".join(parts)


@dataclass
class ProcessedRecord:
    """Model-ready windows of one record."""

    input_values: np.ndarray  # (n_windows, *contract.input_shape) float32
    attention_mask: np.ndarray  # same shape, int8 (1 = real sample)
    report: ProcessingReport


class ECGProcessor(FeatureExtractionMixin):
    """Preprocess ECG records into a backbone's input windows.

    Args:
        signal_contract: the backbone's :class:`SignalContract` (or its dict form).
        steps: the preprocessing steps, as step objects or their saved dicts.
        missing_leads: what to do when a record lacks some of the contract's leads: ``"error"`` (default),
            ``"zero"`` (feed zeros, reported) or ``"mask"`` (zeros with ``attention_mask=0``, reported).
        max_nan_fraction: a lead with more NaN samples than this fraction is an error; fewer are linearly
            interpolated (and reported). A lead that is entirely NaN counts as missing.

    Example:
        >>> from ecg_adapt import ECGProcessor
        >>> proc = ECGProcessor.from_pretrained("path/to/converted/hubert-ecg")   # doctest: +SKIP
        >>> batch = proc(signal, sampling_rate=500, lead_names=names)                # doctest: +SKIP
        >>> batch["input_values"].shape                                               # doctest: +SKIP
        torch.Size([2, 6000])
    """

    model_input_names = ["input_values", "attention_mask"]

    def __init__(
        self,
        signal_contract: dict[str, Any] | SignalContract,
        steps: Sequence[dict[str, Any] | Step],
        missing_leads: MissingLeads = "error",
        max_nan_fraction: float = 0.2,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("feature_extractor_type", None)
        super().__init__(**kwargs)
        if missing_leads not in _MISSING_CHOICES:
            raise ValueError(f"missing_leads must be one of {_MISSING_CHOICES}, got {missing_leads!r}")
        # Stored as plain JSON-able values so that FeatureExtractionMixin.to_dict() can save them as they are.
        self.signal_contract = SignalContract.from_dict(signal_contract).to_dict()
        self.steps = [step_from_dict(s).to_dict() for s in steps]
        self.missing_leads = missing_leads
        self.max_nan_fraction = float(max_nan_fraction)

    # ------------------------------------------------------------------ accessors
    @property
    def contract(self) -> SignalContract:
        return SignalContract.from_dict(self.signal_contract)

    def step_objects(self) -> list[Step]:
        return [step_from_dict(s) for s in self.steps]

    def check_compatible(self, contract: SignalContract | dict[str, Any]) -> None:
        """Raise if this processor was made for another contract than the model's."""
        other = SignalContract.from_dict(contract)
        mine = self.contract
        diffs = [
            f"{name}: processor {getattr(mine, name)!r} != model {getattr(other, name)!r}"
            for name in ("leads", "sampling_rate", "window_samples", "layout")
            if getattr(mine, name) != getattr(other, name)
        ]
        if diffs:
            raise ValueError("Processor and model disagree on the signal contract: " + "; ".join(diffs))

    # ------------------------------------------------------------------ one record
    def process(
        self,
        signal: np.ndarray,
        sampling_rate: float,
        lead_names: Sequence[str],
        record_id: str | None = None,
        missing_leads: MissingLeads | None = None,
    ) -> ProcessedRecord:
        """Process one record given as a ``(leads, time)`` array in mV.

        Raises:
            ValueError: with a message naming the record for: wrong shape, unknown sampling rate, infinite
                values, too many NaNs, missing leads under ``missing_leads="error"``, or a step list that does
                not produce the contract's input shape.
        """
        policy = missing_leads or self.missing_leads
        if policy not in _MISSING_CHOICES:
            raise ValueError(f"missing_leads must be one of {_MISSING_CHOICES}, got {policy!r}")
        where = f"record {record_id!r}" if record_id else "record"
        contract = self.contract
        x = np.asarray(signal, dtype=np.float64)
        names = [str(n) for n in lead_names]
        if x.ndim == 1 and len(names) == 1:
            x = x[None, :]
        if x.ndim != 2:
            raise ValueError(f"{where}: expected a (leads, time) array, got shape {x.shape}")
        if x.shape[0] != len(names):
            hint = " (it looks like (time, leads): transpose it)" if x.shape[1] == len(names) else ""
            raise ValueError(f"{where}: {x.shape[0]} rows but {len(names)} lead names{hint}")
        if sampling_rate is None or not np.isfinite(sampling_rate) or sampling_rate <= 0:
            raise ValueError(f"{where}: a positive sampling_rate in Hz is required, got {sampling_rate!r}")
        if x.shape[1] < 2:
            raise ValueError(f"{where}: the record has {x.shape[1]} samples")
        if np.isinf(x).any():
            raise ValueError(f"{where}: the signal contains infinite values")

        report = ProcessingReport(
            record_id=record_id,
            input_leads=names,
            input_sampling_rate=float(sampling_rate),
            input_seconds=x.shape[1] / float(sampling_rate),
            missing_leads_policy=policy,
        )

        # Leads that are entirely NaN carry no signal: treat them as missing, like an absent lead.
        all_nan = [i for i in range(x.shape[0]) if np.isnan(x[i]).all()]
        if all_nan:
            report.notes.append(f"leads entirely NaN treated as missing: {[names[i] for i in all_nan]}")
        usable = [i for i in range(x.shape[0]) if i not in all_nan]
        mapping = map_leads([names[i] for i in usable], contract.leads)
        report.missing_leads = mapping.missing
        report.lead_approximations = mapping.approximations
        report.ignored_leads = mapping.ignored
        report.reordered = mapping.reordered
        if mapping.missing and policy == "error":
            raise ValueError(
                f"{where} lacks lead(s) {mapping.missing} that the model expects (record leads: {names}). "
                "Choose how to handle them: missing_leads='zero' (feed zeros) or missing_leads='mask' "
                "(zeros hidden by the attention mask)."
            )
        if len(mapping.missing) == contract.n_leads:
            raise ValueError(f"{where}: none of its leads {names} match the model's leads {list(contract.leads)}")

        n_t = x.shape[1]
        y = np.zeros((contract.n_leads, n_t), dtype=np.float64)
        present = np.zeros(contract.n_leads, dtype=bool)
        for out_i, src in enumerate(mapping.source_index):
            if src is None:
                continue
            lead = x[usable[src]]
            nan = np.isnan(lead)
            if nan.any():
                frac = nan.mean()
                if frac > self.max_nan_fraction:
                    raise ValueError(
                        f"{where}: lead {names[usable[src]]} is {frac:.0%} NaN (limit {self.max_nan_fraction:.0%})"
                    )
                idx = np.arange(n_t)
                lead = lead.copy()
                lead[nan] = np.interp(idx[nan], idx[~nan], lead[~nan])
                report.nan_interpolated[contract.leads[out_i]] = int(nan.sum())
            if np.ptp(lead) == 0:
                report.flat_leads.append(contract.leads[out_i])
            y[out_i] = lead
            present[out_i] = True
        mask = np.ones((1, contract.n_leads, n_t), dtype=bool)
        if policy == "mask":
            mask[:, ~present, :] = False

        state = SignalState(x=y[None], mask=mask, fs=float(sampling_rate), lead_present=present)
        for step in self.step_objects():
            state = step(state)
        if not state.windowed:
            raise ValueError("The processor's steps contain no 'window' step; add one so inputs have a fixed length")

        expected = contract.input_shape
        if tuple(state.x.shape[1:]) != tuple(expected):
            raise ValueError(
                f"{where}: the processor produced windows of shape {tuple(state.x.shape[1:])} but the model "
                f"expects {tuple(expected)} ({contract.describe()})"
            )
        if state.fs != contract.sampling_rate:
            raise ValueError(f"{where}: processor output is at {state.fs} Hz, the model expects {contract.sampling_rate} Hz")
        report.n_windows = state.x.shape[0]
        report.window_starts_s = [round(s, 6) for s in state.window_starts]
        report.padded = any("padded" in n for n in state.notes)
        report.notes.extend(state.notes)
        return ProcessedRecord(
            input_values=state.x.astype(np.float32),
            attention_mask=state.mask.astype(np.int8),
            report=report,
        )

    # ------------------------------------------------------------------ batches
    def __call__(
        self,
        records: Any,
        sampling_rate: float | None = None,
        lead_names: Sequence[str] | None = None,
        return_tensors: str | None = "pt",
        missing_leads: MissingLeads | None = None,
    ) -> BatchFeature:
        """Process one record or a list of records into a batch of windows.

        ``records`` is a ``(leads, time)`` array, a list of them (then ``sampling_rate`` and ``lead_names``
        apply to all), or objects with ``signal``, ``sampling_rate``, ``lead_names`` (and ``record_id``)
        attributes such as :class:`ecg_adapt.data.ECGRecord`.

        Returns a ``BatchFeature`` with ``input_values``, ``attention_mask`` and ``window_to_record`` (the index
        of the record each window came from); the per-record :class:`ProcessingReport` objects are in
        ``batch.reports``.
        """
        processed = self.process_many(records, sampling_rate, lead_names, missing_leads)
        batch = self.collate(processed, return_tensors=return_tensors)
        batch.reports = [p.report for p in processed]
        return batch

    def process_many(
        self,
        records: Any,
        sampling_rate: float | None = None,
        lead_names: Sequence[str] | None = None,
        missing_leads: MissingLeads | None = None,
    ) -> list[ProcessedRecord]:
        """Process several records; see :meth:`__call__` for the accepted inputs."""
        if isinstance(records, np.ndarray) or torch.is_tensor(records) or hasattr(records, "signal"):
            records = [records]
        out = []
        for i, rec in enumerate(records):
            if hasattr(rec, "signal"):
                out.append(
                    self.process(
                        rec.signal,
                        rec.sampling_rate,
                        rec.lead_names,
                        record_id=getattr(rec, "record_id", None),
                        missing_leads=missing_leads,
                    )
                )
            else:
                if sampling_rate is None or lead_names is None:
                    raise ValueError("Arrays need sampling_rate= and lead_names= (records carry their own)")
                arr = rec.detach().cpu().numpy() if torch.is_tensor(rec) else np.asarray(rec)
                out.append(self.process(arr, sampling_rate, lead_names, record_id=str(i), missing_leads=missing_leads))
        return out

    @staticmethod
    def collate(processed: Iterable[ProcessedRecord], return_tensors: str | None = "pt") -> BatchFeature:
        """Stack the windows of processed records into one batch (with ``window_to_record``)."""
        processed = list(processed)
        values = np.concatenate([p.input_values for p in processed])
        mask = np.concatenate([p.attention_mask for p in processed]).astype(np.int64)
        owner = np.concatenate([np.full(len(p.input_values), i, dtype=np.int64) for i, p in enumerate(processed)])
        return BatchFeature(
            {"input_values": values, "attention_mask": mask, "window_to_record": owner},
            tensor_type=return_tensors,
        )
