"""Signal contracts, lead mapping, quality thresholds and the ECG processor (record → model input).

The names below are imported from their submodules on first use (as the package face does): the contract and
quality modules are plain Python, so the torch-free family records and the recipe schema can read them without
loading torch or scipy (which ``augment``, ``processor`` and ``steps`` need).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..utils import lazy_exports

# Public name -> the submodule that defines it (imported on first access).
_LAZY_NAMES: dict[str, str] = {
    "QualityThresholds": "quality",
    "AUGMENTATIONS": "augment",
    "AmplitudeScale": "augment",
    "Augmentation": "augment",
    "Augmenter": "augment",
    "BaselineWander": "augment",
    "GaussianNoise": "augment",
    "LeadDropout": "augment",
    "PowerlineNoise": "augment",
    "RandomCrop": "augment",
    "augmentation_from_dict": "augment",
    "batch_generator": "augment",
    "STANDARD_12_LEADS": "contract",
    "SignalContract": "contract",
    "canonical_lead_name": "leads",
    "map_leads": "leads",
    "ECGProcessor": "processor",
    "ProcessedRecord": "processor",
    "ProcessingReport": "processor",
    "BandpassFIR": "steps",
    "Butterworth": "steps",
    "Decimate": "steps",
    "FillNaN": "steps",
    "Flatten": "steps",
    "Normalize": "steps",
    "Resample": "steps",
    "SignalState": "steps",
    "Step": "steps",
    "Window": "steps",
    "register_step": "steps",
    "step_from_dict": "steps",
}

__all__ = list(_LAZY_NAMES)

if TYPE_CHECKING:
    from .quality import QualityThresholds
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
    from .processor import ECGProcessor, ProcessedRecord, ProcessingReport
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

__getattr__, __dir__ = lazy_exports(__name__, _LAZY_NAMES)
