"""Signal contracts, lead mapping and the ECG processor (record → model input)."""

from .augment import (
    AUGMENTATIONS,
    AmplitudeScale,
    Augmentation,
    Augmenter,
    BaselineWander,
    GaussianNoise,
    LeadDropout,
    PowerlineNoise,
    RandomCrop,
    augmentation_from_dict,
    batch_generator,
)
from .contract import STANDARD_12_LEADS, SignalContract
from .leads import canonical_lead_name, map_leads
from .processor import ECGProcessor, ProcessedRecord, ProcessingReport, aggregate_windows
from .quality import QualityThresholds
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
    "QualityThresholds",
    "AUGMENTATIONS",
    "AmplitudeScale",
    "Augmentation",
    "Augmenter",
    "BaselineWander",
    "GaussianNoise",
    "LeadDropout",
    "PowerlineNoise",
    "RandomCrop",
    "augmentation_from_dict",
    "batch_generator",
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
