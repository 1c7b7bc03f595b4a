"""ecg_adapt: load pretrained ECG foundation models as Hugging Face models and adapt them.

Data flows one way: record → processor (the backbone's signal contract) → backbone → head → task metrics.

Quickstart::

    from ecg_adapt import load_backbone, load_processor, ECGClassifier, adapt, save_adapted, PTBXL

    backbone = load_backbone("path/or/hub-id")                  # HuBERT-ECG, no trust_remote_code
    processor = load_processor("path/or/hub-id")
    task = PTBXL("/data/ptb-xl", sampling_rate=100).task("superdiagnostic")
    model = ECGClassifier.from_backbone(backbone, task.labels)
    model = adapt(model, "lora", r=8)                       # or any of ecg_adapt.adaptation.METHODS

The names below are imported on first use (PEP 562 module ``__getattr__``, as transformers' ``_LazyModule``):
``import ecg_adapt`` itself imports neither torch nor transformers, so the command line answers ``--help`` at
once. ``from ecg_adapt import X`` works as with eager imports; type checkers read the ``TYPE_CHECKING`` block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._version import __version__
from .utils import lazy_exports

# Submodule -> the public names it defines, each imported on first access (lazy_exports).
_EXPORTS: dict[str, list[str]] = {
    "adaptation": ["AdaptationConfig", "adapt", "count_parameters", "load_adapted", "save_adapted"],
    "data": [
        "PTBXL", "SOURCES", "ContextWindowDataset", "ECGRecord", "RecordError", "build_cache", "open_source",
        "read_wfdb",
    ],
    "inference": ["Predictor"],
    "models": ["ECGClassifier", "ECGClassifierConfig", "ECGSequenceClassifier", "load_backbone", "load_processor"],
    "processing": ["Augmenter", "ECGProcessor", "SignalContract"],
    "tasks": ["ClassificationTask", "aggregate_windows"],
    "training": ["Recipe", "train"],
}

if TYPE_CHECKING:
    from .adaptation import AdaptationConfig, adapt, count_parameters, load_adapted, save_adapted
    from .data import PTBXL, SOURCES, ContextWindowDataset, ECGRecord, RecordError, build_cache, open_source, read_wfdb
    from .inference import Predictor
    from .models import ECGClassifier, ECGClassifierConfig, ECGSequenceClassifier, load_backbone, load_processor
    from .processing import Augmenter, ECGProcessor, SignalContract
    from .tasks import ClassificationTask, aggregate_windows
    from .training import Recipe, train

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
__all__ += ["__version__"]
