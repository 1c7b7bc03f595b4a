"""Signal contracts, lead mapping and the ECG processor (record → model input)."""

from .contract import STANDARD_12_LEADS, SignalContract
from .leads import canonical_lead_name, map_leads
from .processor import ECGProcessor, ProcessedRecord, ProcessingReport, aggregate_windows
from .steps import (
    BandpassFIR,
    Butterworth,
    Decimate,
    FillNaN,
    Flatten,
    Normalize,
    Resample,
    SignalState,
    Step,
    Window,
    register_step,
    step_from_dict,
)

__all__ = [
    "STANDARD_12_LEADS",
    "SignalContract",
    "canonical_lead_name",
    "map_leads",
    "ECGProcessor",
    "ProcessedRecord",
    "ProcessingReport",
    "aggregate_windows",
    "BandpassFIR",
    "Butterworth",
    "Decimate",
    "FillNaN",
    "Flatten",
    "Normalize",
    "Resample",
    "SignalState",
    "Step",
    "Window",
    "register_step",
    "step_from_dict",
]
