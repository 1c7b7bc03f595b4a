"""Signal contracts, lead mapping, quality thresholds and the ECG processor (record → model input).

The names below are imported from their submodules on first use (as the package face does): the contract and
quality modules are plain Python, so the torch-free family records and the recipe schema can read them without
loading torch or scipy (which ``augment``, ``processor`` and ``steps`` need).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..utils import lazy_exports

# Submodule -> the public names it defines (each imported on first access).
_EXPORTS: dict[str, list[str]] = {
    "quality": ["QualityThresholds"],
    "augment": [
        "AUGMENTATIONS", "AmplitudeScale", "Augmentation", "Augmenter", "BaselineWander", "GaussianNoise",
        "LeadDropout", "PowerlineNoise", "RandomCrop", "augmentation_from_dict", "batch_generator"
    ],
    "contract": ["STANDARD_12_LEADS", "SignalContract"],
    "leads": ["canonical_lead_name", "map_leads"],
    "processor": ["ECGProcessor", "ProcessedRecord", "ProcessingReport"],
    "steps": [
        "BandpassFIR", "Butterworth", "Decimate", "FillNaN", "Flatten", "Normalize", "Resample",
        "SignalState", "Step", "Window", "register_step", "step_from_dict"
    ],
}


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

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
