"""ecg_adapt: load pretrained ECG foundation models as Hugging Face models and adapt them.

Data flows one way: record → processor (the backbone's signal contract) → backbone → head → task metrics.

Quickstart::

    from ecg_adapt import load_backbone, load_processor, ECGClassifier, adapt, save_adapted, PTBXL

    backbone = load_backbone("path/or/hub-id")                  # HuBERT-ECG, no trust_remote_code
    processor = load_processor("path/or/hub-id")
    task = PTBXL("/data/ptb-xl", sampling_rate=100).task("superdiagnostic")
    model = ECGClassifier.from_backbone(backbone, task.labels)
    model = adapt(model, "lora", r=8)                       # or any of ecg_adapt.adaptation.METHODS
"""

from .adaptation import AdaptationConfig, adapt, count_parameters, load_adapted, save_adapted
from .data import PTBXL, SOURCES, ContextWindowDataset, ECGRecord, RecordError, build_cache, open_source, read_wfdb
from .inference import Predictor
from .models import ECGClassifier, ECGClassifierConfig, ECGSequenceClassifier, load_backbone, load_processor
from .processing import Augmenter, ECGProcessor, SignalContract, aggregate_windows
from .tasks import ClassificationTask
from .training import Recipe, train

__version__ = "0.1.0"

__all__ = [
    "PTBXL",
    "SOURCES",
    "Augmenter",
    "ContextWindowDataset",
    "ECGSequenceClassifier",
    "open_source",
    "AdaptationConfig",
    "ClassificationTask",
    "ECGClassifier",
    "ECGClassifierConfig",
    "ECGProcessor",
    "ECGRecord",
    "Predictor",
    "Recipe",
    "RecordError",
    "SignalContract",
    "adapt",
    "aggregate_windows",
    "build_cache",
    "count_parameters",
    "load_adapted",
    "load_backbone",
    "load_processor",
    "read_wfdb",
    "save_adapted",
    "train",
    "__version__",
]
